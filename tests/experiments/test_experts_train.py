"""`mamql experts train`: the committed config trains a soft-q expert that the rest of mamql can load,
through the real CLI in a subprocess (a tiny critic and a few updates)."""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mamql.config import load_config
from mamql.experiments.experts import CONFIG_DIR, boltzmann_entropy

TINY = ["learner.network=mlp", "learner.hidden=[16]", "learner.seed_transitions=64", "learner.batch_size=32",
        "learner.log_every=5", "learner.eval_every=0", "learner.eval_episodes=2", "actor.num_envs=2"]


def _experts_train(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mamql.cli", "experts", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _tiny_expert(out: Path, run_name: str, seed: int, steps: int = 6) -> subprocess.CompletedProcess:
    """A few updates of the committed Gems config with a tiny critic, one evaluation episode."""
    args = ["--env", "gems", "--steps", str(steps), "--seed", str(seed), "--out", str(out), "--run-name", run_name,
            "--eval-episodes", "1"]
    for item in TINY:
        args += ["--set", item]
    proc = _experts_train(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_committed_configs_are_soft_q():
    configs = sorted(CONFIG_DIR.glob("*.yaml"))
    assert [p.stem for p in configs][:1] == ["gems"]
    for path in configs:
        config = load_config(path)  # every committed config loads and validates against the schema
        assert config.learner.algo == "soft-q" and config.env.name.replace("/", "-") == path.stem


def test_boltzmann_entropy():
    h = boltzmann_entropy(np.array([[0.0, 0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0, 0.0]]), 0.1)
    assert h[0] == pytest.approx(math.log(5)) and 0.0 <= h[1] < 1e-6  # uniform: log 5; one dominant action: ~0


def test_experts_train_writes_a_loadable_expert_and_one_json_line(tmp_path):
    args = ["--env", "gems", "--steps", "10", "--seed", "3", "--out", str(tmp_path), "--run-name", "e",
            "--eval-episodes", "3"]
    for item in TINY:
        args += ["--set", item]
    proc = _experts_train(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # stdout is the JSON line alone; progress goes to stderr
    assert "step 5: rollout return per agent" in proc.stderr
    record = json.loads(lines[0])
    ckpt = Path(record["checkpoint"])
    assert ckpt.is_file() and ckpt.parent.parent == tmp_path / "e"
    assert record["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert (record["steps"], record["seed"], record["env"], record["alpha"]) == (10, 3, "gems", 0.05)
    assert record["config"].endswith("experiments/experts/gems.yaml") and record["wall_s"] > 0
    for mode in ("greedy", "sample"):
        assert record[mode]["episodes"] == 3 and set(record[mode]["mean_return"]) == {"agent_0", "agent_1"}
    assert set(record["random"]["mean_return"]) == {"agent_0", "agent_1"}  # the random-play yardstick
    entropy = record["entropy"]
    assert 0.0 < entropy["mean"] <= entropy["max"] == pytest.approx(math.log(5))
    assert entropy["states"] >= 3 * 2 and "softmax" in entropy["how"]  # at least one step of each episode
    assert json.loads((tmp_path / "e" / "expert.json").read_text()) == record

    from mamql.envs.experts import check_expert

    check_expert("gems", record["expert"])  # usable as `--expert checkpoint:PATH`


def test_bad_input_is_one_error_line_and_no_run_dir(tmp_path):
    proc = _experts_train("--env", "mpe/simple_tag", "--out", str(tmp_path))
    assert proc.returncode == 2 and "no committed expert config for env 'mpe/simple_tag'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _experts_train("--env", "gems", "--out", str(tmp_path), "--set", "learner.algo=mamql")
    assert proc.returncode == 2 and "learner.algo=soft-q" in proc.stderr
    proc = _experts_train("--env", "gems", "--out", str(tmp_path), "--steps", "0")
    assert proc.returncode == 2 and "learner.steps must be >= 1" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_resume_continues_a_run_with_its_own_config(tmp_path):
    _tiny_expert(tmp_path, "r", seed=3)
    # no --env, no --set: the run's saved config (tiny critic, seed 3) is used, up to the new --steps
    again = _experts_train("--resume", "--run-name", "r", "--out", str(tmp_path), "--steps", "12", "--eval-episodes", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads(again.stdout.strip().splitlines()[-1])
    assert (record["steps"], record["seed"]) == (12, 3) and record["config"].endswith("r/config.yaml")
    assert Path(record["checkpoint"]).name == "learner_00000012.pt"
    assert load_config(tmp_path / "r" / "config.yaml").learner.hidden == (16,)
    missing = _experts_train("--resume", "--run-name", "nothing", "--out", str(tmp_path), "--env", "gems")
    assert missing.returncode == 2 and "--resume: no run directory" in missing.stderr


def _experts_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mamql.cli", "experts", "export", *args],
                          capture_output=True, text=True, timeout=300)


def test_export_keeps_what_acts_and_scores_and_drops_the_rest(tmp_path):
    import torch

    from mamql.envs.vector import VectorEnv
    from mamql.learner.evaluate import load_expert_updater
    from mamql.learner.policy import CheckpointExpert

    trained = _tiny_expert(tmp_path, "e", seed=4)
    source = Path(json.loads(trained.stdout.strip().splitlines()[-1])["checkpoint"])
    out = tmp_path / "shipped" / "gems.pt"
    proc = _experts_export(str(source), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip())
    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and record["bytes"] == out.stat().st_size
    assert record["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (record["algo"], record["step"], record["env"], record["expert"]) == ("soft-q", 6, "gems", f"checkpoint:{out}")
    assert out.stat().st_size < 0.5 * source.stat().st_size  # no Adam moments, no target critics
    state = torch.load(out, weights_only=True)["updater"]
    assert "targets" not in state and all(o["state"] == {} for o in state["optimizers"].values())

    # acts exactly as the source, and `mamql evaluate` rebuilds it as the expert yardstick
    obs = VectorEnv("gems", 3, seed=0).reset()
    a, b = CheckpointExpert(str(source)).policy(mode="greedy"), CheckpointExpert(str(out)).policy(mode="greedy")
    for agent, q in a.action_values(obs).items():
        np.testing.assert_array_equal(q, b.action_values(obs)[agent])
    updater, info = load_expert_updater(out, "gems")
    assert info["step"] == 6 and info["sha256"] == record["sha256"] and updater.step == 6

    again = _experts_export(str(out), "--out", str(out))
    assert again.returncode == 2 and "--out must differ" in again.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    junk = _experts_export(str(tmp_path / "junk.pt"), "--out", str(tmp_path / "x.pt"))
    assert junk.returncode == 2 and len(junk.stderr.strip().splitlines()) == 1 and "not a valid checkpoint" in junk.stderr
    assert not (tmp_path / "x.pt").exists()
