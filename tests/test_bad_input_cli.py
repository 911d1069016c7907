"""Bad input to the commands a user types: one clear line, exit code 2, nothing started.

Each case runs the real `mamql` command in a subprocess with cwd=tmp_path (so run.root is
tmp_path/runs) and checks: stderr is exactly one line `mamql <cmd>: error: ...` naming the problem,
no traceback and none of numpy's / torch's "load it unsafely" hints, no run directory, and no
process left behind (every process the command could start inherits a marker in its environment).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from mamql.learner.demos import collect_demos, save_demos

UNKNOWN_ENV = "unknown env 'nosuch'"


class NotATensor:
    """Pickled into a checkpoint below: weights_only loading must refuse it, never run it."""


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demos") / "gems.npz"
    batch, meta = collect_demos("gems", 200, num_envs=4)
    return save_demos(path, batch, meta)


@pytest.fixture
def busy_port():
    """A port held by another gRPC server, as by a replay already running there. gRPC binds with
    SO_REUSEPORT, so before the port check a second server bound it too and started silently."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def _marked(marker: str) -> list[int]:
    """pids of live processes whose environment holds `marker` (children inherit it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # exited meanwhile, or not ours
            continue
    return pids


def mamql(tmp_path: Path, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run `mamql argv...` in tmp_path; fail if it leaves a process or a run directory behind."""
    marker = f"MAMQL_BAD_INPUT_TEST={uuid.uuid4().hex}"
    env = {**os.environ, "MAMQL_BAD_INPUT_TEST": marker.split("=", 1)[1]}
    try:
        proc = subprocess.run([sys.executable, "-m", "mamql.cli", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`mamql {' '.join(argv)}` was still running after {timeout}s (it started instead of "
                    f"refusing): {exc.stderr!r}")
    finally:
        deadline = time.monotonic() + 10.0  # a child being reaped may linger for a moment
        while _marked(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        leftover = _marked(marker)
        for pid in leftover:
            os.kill(pid, 9)
    assert not leftover, f"processes left behind: {leftover}"
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), f"run directory created: {list(runs.iterdir())}"
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith(f"mamql {command}: error: "), output
    for fragment in fragments:
        assert fragment in lines[0], output
    for hint in ("allow_pickle", "weights_only", "GRPC_VERBOSITY"):  # library advice, not ours to give
        assert hint not in output, output
    return lines[0]


# --------------------------------------------------------------------------- config-level cases


@pytest.mark.parametrize("argv", [
    ["local", "--env", "nosuch"],
    ["train", "--env", "nosuch"],
    ["collect", "--env", "nosuch", "--out", "dataset", "--transitions", "100"],
    ["demos", "collect", "--env", "nosuch", "--out", "demos.npz"],
], ids=lambda a: " ".join(a[:2]))
def test_unknown_env_flag(tmp_path, argv):
    command = " ".join(argv[:2]) if argv[0] == "demos" else argv[0]
    assert_one_line_error(mamql(tmp_path, *argv), command, UNKNOWN_ENV, "known: gems")
    assert not (tmp_path / "dataset").exists() and not (tmp_path / "demos.npz").exists()


@pytest.mark.parametrize("command", ["local", "train", "replay", "learner", "collect"])
def test_unknown_env_in_config(tmp_path, command, demos):
    extra = {"learner": ["--replay", "127.0.0.1:1", "--demos", str(demos)],
             "collect": ["--out", "dataset", "--transitions", "100"]}.get(command, [])
    proc = mamql(tmp_path, command, "--set", "env.name=nosuch", *extra)
    assert_one_line_error(proc, command, "env.name", UNKNOWN_ENV)


@pytest.mark.parametrize("command", ["local", "train", "learner"])
def test_negative_steps_flag(tmp_path, command, demos):
    extra = ["--replay", "127.0.0.1:1", "--demos", str(demos)] if command == "learner" else []
    assert_one_line_error(mamql(tmp_path, command, "--steps", "-1", *extra), command, "--steps must be >= 0")


@pytest.mark.parametrize("command", ["local", "train"])
def test_negative_steps_in_config(tmp_path, command):
    proc = mamql(tmp_path, command, "--set", "learner.steps=-5")
    assert_one_line_error(proc, command, "learner.steps must be >= 0, got -5")


@pytest.mark.parametrize("override, message", [("learner.gamma=1.5", "learner.gamma must be in (0, 1], got 1.5"),
                                               ("learner.alpha=0", "learner.alpha must be > 0, got 0.0")])
def test_discount_and_temperature_out_of_range(tmp_path, override, message):
    proc = mamql(tmp_path, "train", "--set", override)
    assert_one_line_error(proc, "train", message)


@pytest.mark.parametrize("command", ["local", "train", "replay", "learner", "collect"])
def test_missing_config_file(tmp_path, command, demos):
    extra = {"learner": ["--replay", "127.0.0.1:1", "--demos", str(demos)],
             "collect": ["--out", "dataset", "--transitions", "100"]}.get(command, [])
    proc = mamql(tmp_path, command, "--config", "nope.yaml", *extra)
    assert_one_line_error(proc, command, "nope.yaml", "No such file")


# --------------------------------------------------------------------------- file arguments


@pytest.mark.parametrize("command", ["local", "train", "learner"])
def test_missing_demos(tmp_path, command):
    extra = ["--replay", "127.0.0.1:1"] if command == "learner" else []
    proc = mamql(tmp_path, command, "--demos", "nope.npz", *extra)
    assert_one_line_error(proc, command, "demos file nope.npz does not exist")


def _garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _object_array(path: Path) -> Path:
    np.savez(path, **{"obs/a": np.array([{"x": 1}], dtype=object)})  # loading it would unpickle
    return path


def _fields_missing(path: Path) -> Path:
    np.savez(path, a=np.zeros(3))
    return path


@pytest.mark.parametrize("command,make,reason", [
    ("local", _garbage, "neither an .npz archive"),
    ("train", _garbage, "neither an .npz archive"),
    ("learner", _garbage, "neither an .npz archive"),
    ("train", _object_array, "holds Python objects"),
    ("train", _fields_missing, "missing field(s) obs/<agent>"),
], ids=["local-garbage", "train-garbage", "learner-garbage", "train-object-array", "train-wrong-fields"])
def test_corrupt_demos(tmp_path, command, make, reason):
    path = make(tmp_path / "bad.npz")
    extra = ["--replay", "127.0.0.1:1"] if command == "learner" else []
    proc = mamql(tmp_path, command, "--demos", str(path), *extra)
    assert_one_line_error(proc, command, f"{path} is not a valid demos file: ", reason)


def _pickled_object(path: Path) -> Path:
    import torch

    torch.save({"updater": NotATensor(), "extra": {}}, path)
    return path


def _not_a_checkpoint_zip(path: Path) -> Path:
    np.savez(path.with_suffix(".npz"), a=np.zeros(3))
    path.with_suffix(".npz").rename(path)
    return path


def _no_config(path: Path) -> Path:
    import torch

    torch.save({"updater": {}, "extra": {}}, path)
    return path


@pytest.mark.parametrize("make,reason", [
    (_garbage, "not a torch.save archive"),
    (_pickled_object, "never unpickled"),
    (_not_a_checkpoint_zip, "not a valid checkpoint: "),
    (_no_config, "missing 'config_json'"),
], ids=["garbage", "pickled-object", "other-zip", "no-config"])
def test_corrupt_checkpoint(tmp_path, make, reason):
    path = make(tmp_path / "bad.pt")
    proc = mamql(tmp_path, "evaluate", "--checkpoint", str(path), "--episodes", "1")
    assert_one_line_error(proc, "evaluate", f"{path} is not a valid checkpoint: ", reason)


def test_missing_checkpoint(tmp_path):
    proc = mamql(tmp_path, "evaluate", "--checkpoint", "nope.pt")
    assert_one_line_error(proc, "evaluate", "checkpoint nope.pt does not exist")


# --------------------------------------------------------------------------- busy ports


@pytest.mark.parametrize("key", ["replay.port", "metrics.port"])
def test_replay_port_in_use(tmp_path, busy_port, key):
    proc = mamql(tmp_path, "replay", "--set", f"{key}={busy_port}", timeout=60)
    assert_one_line_error(proc, "replay", f"port 127.0.0.1:{busy_port} is already in use", key)


def test_learner_port_in_use(tmp_path, busy_port, demos):
    proc = mamql(tmp_path, "learner", "--replay", "127.0.0.1:1", "--demos", str(demos),
                 "--set", f"weights.port={busy_port}", timeout=120)
    assert_one_line_error(proc, "learner", f"port 127.0.0.1:{busy_port} is already in use", "weights.port")
