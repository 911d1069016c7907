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
        (run / "checkpoints" / f"learner_{step:08d}.pt").write_bytes(b"x")
    (run / "demos.npz").write_bytes(b"x")
    checkpoint = run_checkpoint(run)
    assert checkpoint.name == "learner_00001500.pt"
    assert run_dir_of(checkpoint) == run.resolve() and run_demos(run) == run / "demos.npz"


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
