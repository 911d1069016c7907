"""Demos files, evaluation, the single-process trainer (resume) and `mamql train/evaluate/demos`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mamql.envs import env_spec
from mamql.envs.experts import make_expert
from mamql.learner.demos import collect_demos, load_demos, save_demos
from mamql.learner.evaluate import evaluate, gems_true_reward_from_planes, policy_from, reward_recovery, run_episodes
from mamql.learner.trainer import Trainer, latest_checkpoint
from mamql.learner.updater import make_updater, read_checkpoint
from mamql.config import Config, LearnerConfig, with_updates

ROOT = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def demos():
    return collect_demos("gems", 600, seed=1, num_envs=8)


def test_demos_are_whole_episodes_cut_to_size_and_round_trip_without_pickle(tmp_path, demos):
    batch, summary = demos
    assert len(batch["done"]) == 600 and summary["transitions"] == 600
    assert 20 < summary["mean_return"]["agent_0"] < 32  # the scripted expert, ~25.8
    # episode by episode, steps 0..n-1 in order: every episode starts at step 0
    starts = np.flatnonzero(np.diff(batch["episode_id"]) != 0) + 1
    assert batch["step"][0] == 0 and (batch["step"][starts] == 0).all()
    ends = np.r_[starts - 1]
    assert (batch["done"][ends] | batch["truncated"][ends]).all()  # all but the last episode complete
    path = save_demos(tmp_path / "d.npz", batch, summary)
    with np.load(path, allow_pickle=False) as raw:  # readable without pickle
        assert "obs/agent_0" in raw.files
    loaded, meta = load_demos(path)
    assert meta == json.loads(json.dumps(summary))
    assert set(loaded) == set(batch)
    for k, v in batch.items():
        assert loaded[k].dtype == v.dtype and np.array_equal(loaded[k], v)


def test_gems_reward_from_planes_matches_the_env(demos):
    batch, _ = demos
    for a in ("agent_0", "agent_1"):
        r = gems_true_reward_from_planes(batch[f"obs/{a}"], batch[f"next_obs/{a}"])
        assert np.array_equal(r, batch[f"reward/{a}"])


def test_evaluate_and_reward_recovery_are_sane(demos):
    batch, _ = demos
    u = make_updater(env_spec("gems"), LearnerConfig(hidden=(16,), device="cpu"), "cpu")
    for mode in ("greedy", "sample"):
        ret = evaluate(u, episodes=4, mode=mode)
        assert set(ret) == {"agent_0", "agent_1"} and all(0 <= v < 50 for v in ret.values())
    expert = run_episodes(make_expert("gems"), "gems", 4)["mean_return"]
    assert min(expert.values()) > 15
    rec = reward_recovery(u, batch, max_rows=400, epic_rows=100, epic_pool=8)
    for a in ("agent_0", "agent_1"):
        assert set(rec[a]["raw"]) >= {"pearson", "mse", "mse_raw", "scale", "shift"}
        assert -1 <= rec[a]["raw"]["pearson"] <= 1 and -1 <= rec[a]["epic_pearson"] <= 1


def test_behaviour_cloning_learns_the_experts_actions(demos):
    """A learning test that can fail: after 200 BC updates the greedy policy agrees with the expert on
    HELD-OUT expert states far above chance (0.2) and the majority action (~0.25)."""
    train_b, _ = collect_demos("gems", 2000, seed=7, num_envs=8)
    held_out, _ = demos
    u = make_updater(env_spec("gems"), LearnerConfig(algo="bc", hidden=(128,), device="cpu"), "cpu", seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        idx = rng.integers(0, len(train_b["done"]), 128)
        u.update({k: v[idx] for k, v in train_b.items()}, {})
    acts = policy_from(u, "greedy").act({a: held_out[f"obs/{a}"] for a in u.agents})
    for a in u.agents:
        assert (acts[a] == held_out[f"action/{a}"]).mean() > 0.4


def tiny_config(tmp_path, **learner):
    base = {"hidden": [16], "batch_size": 32, "seed_transitions": 64, "online_capacity": 512, "log_every": 2,
            "eval_every": 0, "eval_episodes": 2, "checkpoint_every": 3, "device": "cpu", "torch_threads": 1}
    base.update(learner)
    return with_updates(Config(), learner=base, actor={"num_envs": 4}, run={"root": str(tmp_path), "name": "t"})


def test_trainer_resume_restores_step_weights_and_optimizer(tmp_path, demos):
    batch, _ = demos
    config = tiny_config(tmp_path)
    t = Trainer(config, batch, progress=False)
    out = t.train(steps=3)
    weights, opt = t.updater.policy_weights(), t.updater.state_dict()["optimizers"]
    t.close()
    assert out["step"] == 3 and latest_checkpoint(tmp_path / "t").name == "learner_00000003.pt"
    r = Trainer(config, batch, resume=True, progress=False)
    assert r.updater.step == 3
    for k, v in weights.items():
        assert torch.equal(v, r.updater.policy_weights()[k])
    st = r.updater.state_dict()["optimizers"]["agent_0"]["state"]
    assert all(torch.equal(st[i]["exp_avg"], opt["agent_0"]["state"][i]["exp_avg"]) for i in st)
    r.train(steps=5)
    r.close()
    lines = [json.loads(l) for l in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert any(l.get("event") == "resume" and l["step"] == 3 for l in lines)
    assert read_checkpoint(latest_checkpoint(tmp_path / "t"))["updater"]["step"] == 5


def mamql_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mamql.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def test_mamql_train_and_evaluate_end_to_end(tmp_path):
    sets = ["--set", "learner.hidden=[16]", "--set", "learner.batch_size=32", "--set", "learner.seed_transitions=64",
            "--set", "learner.log_every=2", "--set", "learner.eval_every=4", "--set", "learner.eval_episodes=2",
            "--set", "learner.checkpoint_every=2", "--set", "learner.torch_threads=1", "--set", "actor.num_envs=4",
            "--set", f"run.root={tmp_path}"]
    demo_path = tmp_path / "demos.npz"
    p = mamql_cli("demos", "collect", "--env", "gems", "--transitions", "300", "--out", str(demo_path), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["transitions"] == 300
    p = mamql_cli("train", "--env", "gems", "--demos", str(demo_path), "--algo", "mamql", "--steps", "4",
                  "--run-name", "e2e", "--no-progress", *sets, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["step"] == 4 and set(out["eval"]) == {"greedy", "sample"}
    run = tmp_path / "e2e"
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in records if "agent_0/loss" in r]
    assert [r["step"] for r in logs] == [2, 4] and all("agent_1/q_gap" in r and r["updates_per_s"] > 0 for r in logs)
    assert any(r.get("event") == "eval" for r in records)
    ckpt = run / "checkpoints" / "learner_00000004.pt"
    assert ckpt.exists() and (run / "config.yaml").exists()
    p = mamql_cli("evaluate", "--checkpoint", str(ckpt), "--episodes", "2", "--demos", str(demo_path),
                  "--recovery-rows", "200", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    ev = json.loads(p.stdout)
    assert ev["step"] == 4 and set(ev["greedy"]["mean_return"]) == {"agent_0", "agent_1"}
    assert "pearson" in ev["reward_recovery"]["agent_0"]["raw"]
