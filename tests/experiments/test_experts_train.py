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
    args = ["--env", "gems", "--steps", "6", "--seed", "3", "--out", str(tmp_path), "--run-name", "r", "--eval-episodes", "1"]
    for item in TINY:
        args += ["--set", item]
    first = _experts_train(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    # no --env, no --set: the run's saved config (tiny critic, seed 3) is used, up to the new --steps
    again = _experts_train("--resume", "--run-name", "r", "--out", str(tmp_path), "--steps", "12", "--eval-episodes", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads(again.stdout.strip().splitlines()[-1])
    assert (record["steps"], record["seed"]) == (12, 3) and record["config"].endswith("r/config.yaml")
    assert Path(record["checkpoint"]).name == "learner_00000012.pt"
    assert load_config(tmp_path / "r" / "config.yaml").learner.hidden == (16,)
    missing = _experts_train("--resume", "--run-name", "nothing", "--out", str(tmp_path), "--env", "gems")
    assert missing.returncode == 2 and "--resume: no run directory" in missing.stderr
