"""Demonstrations without rewards: training ignores rewards, evaluation copes, the discount is checked."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mamql.config import Config, LearnerConfig, with_updates
from mamql.envs import env_spec
from mamql.learner.demos import check_demos, collect_demos, load_demos, save_demos
from mamql.learner.evaluate import reward_recovery
from mamql.learner.trainer import Trainer
from mamql.learner.updater import make_updater

ROOT = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)


def without_rewards(batch):
    return {k: v for k, v in batch.items() if not k.startswith("reward/")}


@pytest.fixture(scope="module")
def demos():
    return collect_demos("gems", 300, seed=1, num_envs=4)[0]


def tiny_config(tmp_path, name):
    learner = {"hidden": [16], "batch_size": 32, "seed_transitions": 64, "online_capacity": 512, "log_every": 2,
               "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 0, "device": "cpu", "torch_threads": 1}
    return with_updates(Config(), learner=learner, actor={"num_envs": 4}, run={"root": str(tmp_path), "name": name,
                                                                               "seed": 3})


def test_training_ignores_rewards_same_weights_with_and_without(tmp_path, demos):
    weights = []
    for name, batch in (("with", demos), ("without", without_rewards(demos))):
        t = Trainer(tiny_config(tmp_path, name), batch, progress=False)
        t.train(steps=3)
        weights.append(t.updater.policy_weights())
        t.close()
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_check_demos_accepts_reward_less_files(tmp_path, demos):
    path = save_demos(tmp_path / "d.npz", without_rewards(demos), {"env": "gems"})
    check_demos(path)  # raised "missing field(s) reward/agent_0, ..." before
    batch, _ = load_demos(path)
    assert "reward/agent_0" not in batch


def test_learner_warns_once_when_the_demos_gamma_differs(tmp_path, demos, caplog):
    with caplog.at_level(logging.WARNING, logger="mamql.learner"):
        Trainer(tiny_config(tmp_path, "g1"), demos, progress=False, demos_meta={"gamma": 0.9}).close()
    lines = [r.getMessage() for r in caplog.records if "gamma" in r.getMessage()]
    assert len(lines) == 1 and "gamma=0.9" in lines[0] and "gamma=0.99" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mamql.learner"):
        Trainer(tiny_config(tmp_path, "g2"), demos, progress=False, demos_meta={"gamma": 0.99}).close()
    assert not [r for r in caplog.records if "gamma" in r.getMessage()]


def test_reward_recovery_without_rewards_uses_the_env_or_says_it_skips(demos):
    u = make_updater(env_spec("gems"), LearnerConfig(hidden=(16,), device="cpu"), "cpu")
    with_r = reward_recovery(u, demos, max_rows=200, epic_rows=50, epic_pool=8)
    without = reward_recovery(u, without_rewards(demos), max_rows=200, epic_rows=50, epic_pool=8)
    # Gems' reward is a function of (s, s'): computed from the planes, identical to the stored one
    assert without["agent_0"]["raw"] == with_r["agent_0"]["raw"]
    spread, _ = collect_demos("mpe/simple_spread", 50, seed=0, num_envs=2, expert="random")
    u = make_updater(env_spec("mpe/simple_spread"), LearnerConfig(hidden=(16,), device="cpu"), "cpu")
    rec = reward_recovery(u, without_rewards(spread), max_rows=50)
    agent = next(iter(rec))
    assert rec[agent]["raw"] is None and "skipped" in rec[agent]["skipped"]
    assert reward_recovery(u, spread, max_rows=50)[agent]["raw"] is not None


def test_distributed_learner_loads_reward_less_demos(tmp_path, demos):
    from mamql.config import load_config
    from mamql.learner.service import LearnerService

    path = save_demos(tmp_path / "d.npz", without_rewards(demos), {"env": "gems"})
    cfg = with_updates(load_config(None, ["learner.hidden=[16]"]), weights={"port": 0}, metrics={"enabled": False},
                       learner={"device": "cpu"})
    service = LearnerService(cfg, "127.0.0.1:1", str(path), run_dir=str(tmp_path))
    try:
        assert "done" in service.expert.sample(4) and not any(k.startswith("reward/") for k in service.expert.data)
    finally:
        service.close()


def mamql_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mamql.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def test_mamql_train_on_imported_reward_less_demos_warns_about_gamma(tmp_path, demos):
    raw = tmp_path / "mine.npz"
    np.savez(raw, **{k: v for k, v in without_rewards(demos).items() if k.split("/")[0] in
                     ("obs", "action", "next_obs", "done", "truncated")})
    p = mamql_cli("dataset", "import", str(raw), "--env", "gems", "--gamma", "0.9", "--out", str(tmp_path / "demos"),
                  cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    sets = ["--set", "learner.hidden=[16]", "--set", "learner.batch_size=32", "--set", "learner.seed_transitions=64",
            "--set", "learner.eval_every=0", "--set", "learner.eval_episodes=1", "--set", "learner.torch_threads=1",
            "--set", "actor.num_envs=4", "--set", f"run.root={tmp_path}"]
    p = mamql_cli("train", "--env", "gems", "--demos", str(tmp_path / "demos"), "--steps", "2", "--gamma", "0.95",
                  "--run-name", "r", "--no-progress", *sets, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["step"] == 2
    warnings = [line for line in p.stderr.splitlines() if "gamma=0.9 " in line]
    assert len(warnings) == 1 and "gamma=0.95" in warnings[0], p.stderr
    assert "gamma: 0.95" in (tmp_path / "r" / "config.yaml").read_text()
