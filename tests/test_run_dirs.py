"""Run directories: one per run (unique default names, made atomically), an existing one refused
without --resume, and `mamql train`'s final JSON naming the checkpoint that run wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mamql.cli import default_run_name, make_run_dir
from mamql.config import Config, InputError, with_updates

ROOT = Path(__file__).resolve().parent.parent


def test_default_names_differ_within_one_second_and_dirs_are_new(tmp_path):
    config = with_updates(Config(), run={"root": str(tmp_path)})
    names = {default_run_name(config, "local") for _ in range(50)}
    assert len(names) == 50  # same second, different names
    made = [make_run_dir(config, "local") for _ in range(20)]
    paths = {path for _, path in made}
    assert len(paths) == 20 and all(p.is_dir() and p.parent == tmp_path for p in paths)
    assert all(cfg.run.name == path.name for cfg, path in made)


def test_an_existing_run_dir_is_refused_unless_resumed(tmp_path):
    config = with_updates(Config(), run={"root": str(tmp_path), "name": "mine"})
    _, path = make_run_dir(config, "train")
    (path / "metrics.jsonl").write_text("old\n")
    with pytest.raises(InputError, match="already exists.*--resume"):
        make_run_dir(config, "train")
    assert (path / "metrics.jsonl").read_text() == "old\n"
    assert make_run_dir(config, "train", resume=True) == (config, path)
    with pytest.raises(InputError, match="no run directory"):
        make_run_dir(with_updates(config, run={"name": "other"}), "train", resume=True)
    with pytest.raises(InputError, match="--run-name"):
        make_run_dir(with_updates(config, run={"name": "default"}), "train", resume=True)


@pytest.mark.slow
def test_train_runs_without_a_name_get_their_own_dirs_and_checkpoints(tmp_path):
    from mamql.learner.demos import collect_demos, save_demos

    demos = tmp_path / "demos.npz"
    save_demos(demos, *collect_demos("gems", 300, seed=0, num_envs=4))
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "mamql.cli", "train", "--env", "gems", "--demos", str(demos), "--no-progress",
           "--set", f"run.root={runs}", "--set", "learner.hidden=[16]", "--set", "learner.batch_size=16",
           "--set", "learner.seed_transitions=32", "--set", "learner.eval_every=0", "--set", "learner.eval_episodes=1",
           "--set", "learner.torch_threads=1", "--set", "actor.num_envs=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def train(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, *extra], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)

    first, second = train("--steps", "4"), train("--steps", "2")
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    results = [json.loads(p.stdout.strip().splitlines()[-1]) for p in (first, second)]
    dirs = sorted(runs.iterdir())
    assert len(dirs) == 2, dirs  # not one shared runs/default
    for result, steps in zip(results, (4, 2)):
        ckpt = Path(result["checkpoint"])
        assert ckpt.name == f"learner_{steps:08d}.pt" and ckpt.exists() and ckpt.parent.parent in dirs
        metrics = [json.loads(line) for line in (ckpt.parent.parent / "metrics.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in metrics) == steps  # nobody else's metrics appended here
    name = Path(results[0]["checkpoint"]).parent.parent.name

    again = train("--steps", "4", "--run-name", name)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip().count("\n") == 0 and "already exists" in again.stderr, again.stderr

    resumed = train("--steps", "6", "--run-name", name, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ckpt = Path(json.loads(resumed.stdout.strip().splitlines()[-1])["checkpoint"])
    assert ckpt == runs / name / "checkpoints" / "learner_00000006.pt" and ckpt.exists()
