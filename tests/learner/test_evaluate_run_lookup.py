"""`mamql evaluate --run DIR` and `--checkpoint PATH`: finding a run's checkpoint and its demos.

Layouts: `mamql local` keeps runs/NAME/checkpoints/learner/latest.pt and records its demos in
local.json (a --demos file given, or runs/NAME/demos.npz); `mamql train` keeps
runs/NAME/checkpoints/learner_<step>.pt and runs/NAME/demos.npz. The real-run check is in
tests/test_local_e2e.py."""

import json
import subprocess
import sys

import pytest

from mamql.config import InputError
from mamql.learner.checkpoint import step_checkpoint, step_checkpoints
from mamql.learner.evaluate import run_checkpoint, run_demos, run_dir_of


def local_run(root, demos_elsewhere=None):
    run = root / "runs" / "local-1"
    (run / "checkpoints" / "learner").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    (run / "checkpoints" / "learner" / "latest.pt").write_bytes(b"x")
    demos = demos_elsewhere or run / "demos.npz"
    demos.write_bytes(b"x")
    (run / "local.json").write_text(json.dumps({"actors": 1, "demos": str(demos.resolve())}))
    return run


def test_local_run_checkpoint_and_recorded_demos(tmp_path):
    given = tmp_path / "my-demos.npz"
    run = local_run(tmp_path, demos_elsewhere=given)
    checkpoint = run_checkpoint(run)
    assert checkpoint == run / "checkpoints" / "learner" / "latest.pt"
    assert run_dir_of(checkpoint) == run.resolve()
    assert run_demos(run) == given.resolve()  # the --demos file the run was given, not a copy


def test_local_run_that_collected_its_demos(tmp_path):
    run = local_run(tmp_path)
    assert run_demos(run) == (run / "demos.npz").resolve()


def test_train_run_newest_checkpoint_and_its_demos(tmp_path):
    run = tmp_path / "runs" / "t"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    for step in (500, 1500, 1000):
        step_checkpoint(run / "checkpoints", step).write_bytes(b"x")
    (run / "demos.npz").write_bytes(b"x")
    checkpoint = run_checkpoint(run)
    assert checkpoint.name == "learner_00001500.pt"
    assert run_dir_of(checkpoint) == run.resolve() and run_demos(run) == run / "demos.npz"


def test_step_checkpoints_sort_by_step_and_skip_other_names(tmp_path):
    for step in (100_000_000, 7, 99_999_999):
        step_checkpoint(tmp_path, step).write_bytes(b"x")
    (tmp_path / "learner_best.pt").write_bytes(b"x")
    assert [p.name for p in step_checkpoints(tmp_path)] == [
        "learner_00000007.pt", "learner_99999999.pt", "learner_100000000.pt"]
    assert step_checkpoints(tmp_path / "absent") == []


def test_missing_pieces_are_input_errors_or_none(tmp_path):
    with pytest.raises(InputError, match="no such run directory"):
        run_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no learner checkpoint in"):
        run_checkpoint(tmp_path / "empty")
    assert run_demos(tmp_path / "empty") is None
    (tmp_path / "empty" / "local.json").write_text(json.dumps({"demos": str(tmp_path / "gone.npz")}))
    assert run_demos(tmp_path / "empty") is None  # a recorded file that was deleted since


def test_cli_refuses_a_run_without_checkpoint_in_one_line(tmp_path):
    (tmp_path / "r").mkdir()
    proc = subprocess.run([sys.executable, "-m", "mamql.cli", "evaluate", "--run", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mamql evaluate: error: --run {tmp_path / 'r'}: no learner checkpoint in {tmp_path / 'r' / 'checkpoints'} "
        "(the learner writes one every learner.checkpoint_every updates and when it stops)"]
    both = subprocess.run([sys.executable, "-m", "mamql.cli", "evaluate", "--run", "r", "--checkpoint", "c.pt"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_train_run_records_the_demos_it_was_given(tmp_path):
    run = tmp_path / "runs" / "t"
    (run / "checkpoints").mkdir(parents=True)
    dataset = tmp_path / "data" / "set"  # a dataset directory, as `mamql collect` writes
    dataset.mkdir(parents=True)
    (run / "train.json").write_text(json.dumps({"demos": str(dataset)}))
    assert run_demos(run) == dataset


TINY = ["--set", "learner.network=mlp", "--set", "learner.hidden=[8]", "--set", "learner.seed_transitions=64",
        "--set", "learner.batch_size=16", "--set", "learner.eval_every=0", "--set", "actor.num_envs=2"]


def _cli(cwd, *argv):
    return subprocess.run([sys.executable, "-m", "mamql.cli", *argv], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_evaluate_run_of_a_train_run_given_demos_and_says_when_it_has_none(tmp_path):
    """`mamql train --demos FILE` (a relative path) records the file; `mamql evaluate --run` then scores
    reward recovery on it; `--resume` continues with the run's own config on the same demos. With the file gone, evaluate says
    why there is no reward recovery instead of leaving it out silently."""
    from mamql.learner.demos import collect_demos, save_demos

    batch, meta = collect_demos("gems", 120, seed=0, num_envs=2)
    save_demos(tmp_path / "demos.npz", batch, meta)
    train = ["train", "--env", "gems", "--demos", "demos.npz", "--algo", "bc", "--run-name", "r", "--no-progress", *TINY]
    first = _cli(tmp_path, *train, "--steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    other = _cli(tmp_path, "train", "--run-name", "r", "--resume", "--steps", "4", "--algo", "mamql", "--no-progress")
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1].startswith(
        "mamql train: error: checkpoint is for algo 'bc'")  # one line, no traceback
    resumed = _cli(tmp_path, "train", "--run-name", "r", "--resume", "--steps", "4", "--no-progress")  # the run's own config
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "collecting" not in resumed.stderr and json.loads(resumed.stdout.splitlines()[-1])["demos"] == str(tmp_path / "demos.npz")
    ev = _cli(tmp_path / "runs", "evaluate", "--run", "r", "--episodes", "1", "--recovery-states", "4")
    assert ev.returncode == 0, ev.stderr[-2000:]
    out = json.loads(ev.stdout)
    assert out["step"] == 4 and out["demos"] == str(tmp_path / "demos.npz") and "reward_recovery" in out
    (tmp_path / "demos.npz").unlink()
    ev = _cli(tmp_path / "runs", "evaluate", "--run", "r", "--episodes", "1")
    assert ev.returncode == 0 and "reward_recovery" not in json.loads(ev.stdout)
    assert "no demos found with the run" in json.loads(ev.stdout)["reward_recovery_skipped"]
    assert "pass --demos PATH" in ev.stderr
