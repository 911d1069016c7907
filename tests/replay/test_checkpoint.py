"""Checkpoints: round trip, kill -9 of a real server then --restore, corrupt checkpoints refused."""

from __future__ import annotations

import json
from pathlib import Path
import signal
import subprocess
import sys

import numpy as np
import pytest

from mamql.replay import checkpoint
from mamql.replay.checkpoint import CheckpointError
from mamql.replay.client import ReplayClient
from mamql.replay.errors import ReplayError
from mamql.replay.local import LocalReplay
from replay_helpers import REPO, gems_batch, make_config, small_batch, spawn_server

CONFIG_YAML = """
replay:
  tables:
    - {name: online, capacity: 500}
    - {name: queue, capacity: 500, sampler: fifo}
  checkpoint_on_exit: true
"""


def filled() -> LocalReplay:
    replay = LocalReplay(make_config().replay, seed=1)
    replay.insert("online", small_batch(30))
    replay.insert("small", small_batch(6))
    replay.insert("small", small_batch(6, 6))  # wrapped ring
    replay.load("expert", small_batch(5))
    replay.sample("online", 7)
    return replay


def test_round_trip_restores_contents_counters_and_sampler_state(tmp_path):
    replay = filled()
    assert checkpoint.save(replay.snapshot(), tmp_path / "ck") == 30 + 8 + 5
    other = LocalReplay(make_config().replay, seed=99)
    other.restore(checkpoint.load(tmp_path / "ck"))
    assert other.info() == replay.info()
    for name in ("online", "small", "expert"):
        a, b = replay.sample(name, 16), other.sample(name, 16)  # same RNG state -> same keys
        np.testing.assert_array_equal(a.keys, b.keys)
        for field in a.batch:
            np.testing.assert_array_equal(a.batch[field], b.batch[field])


def test_overwrite_is_atomic_and_leaves_no_temp_dirs(tmp_path):
    replay = filled()
    checkpoint.save(replay.snapshot(), tmp_path / "ck")
    replay.insert("online", small_batch(3))
    checkpoint.save(replay.snapshot(), tmp_path / "ck")
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]
    assert {s["name"]: s["inserted"] for s in checkpoint.load(tmp_path / "ck")}["online"] == 33


@pytest.mark.parametrize("damage,match", [
    ("flip", "sha256"),
    ("truncate", "truncated"),
    ("delete", "missing"),
    ("header", "not valid JSON"),
    ("no_header", "not a replay checkpoint"),
    ("dtype", "unsupported dtype"),
])
def test_corrupt_checkpoint_refused(tmp_path, damage, match):
    path = tmp_path / "ck"
    checkpoint.save(filled().snapshot(), path)
    header = json.loads((path / "header.json").read_text())
    first = next(t for t in header["tables"] if t["files"])
    spec = next(iter(first["files"].values()))
    data_file = path / spec["file"]
    if damage == "flip":
        data = bytearray(data_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        data_file.write_bytes(bytes(data))
    elif damage == "truncate":
        data_file.write_bytes(data_file.read_bytes()[:-5])
    elif damage == "delete":
        data_file.unlink()
    elif damage == "header":
        (path / "header.json").write_text('{"format": "mamql-replay-checkpoint", "vers')
    elif damage == "no_header":
        (path / "header.json").unlink()
    elif damage == "dtype":
        first["schema"][next(iter(first["files"]))][0] = "object"
        (path / "header.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(path)


def test_server_refuses_to_start_from_a_corrupt_checkpoint(tmp_path):
    path = tmp_path / "ck"
    checkpoint.save(filled().snapshot(), path)
    (path / "header.json").write_text("garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "mamql.replay.cli", "--set", "replay.port=0", "--restore", str(path)],
        cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "not valid JSON" in proc.stderr


def test_kill9_then_restore_gives_same_contents(tmp_path, subprocess_servers):
    (tmp_path / "config.yaml").write_text(CONFIG_YAML)
    ck = tmp_path / "ck"
    proc, port = spawn_server(tmp_path, "--config", "config.yaml")
    subprocess_servers.append(proc)
    batches = [gems_batch(40, start=i * 40) for i in range(3)]
    with ReplayClient(f"127.0.0.1:{port}") as client:
        for b in batches:
            client.insert("online", b, timeout=5)
            client.insert("queue", b, timeout=5)
        client.sample("online", 10, timeout=5)
        assert client.checkpoint(str(ck)) == (str(ck), 240)
        before = client.info()
        client.insert("online", gems_batch(5), timeout=5)  # after the checkpoint: lost by kill -9
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    proc2, port2 = spawn_server(tmp_path, "--config", "config.yaml", "--restore", str(ck))
    subprocess_servers.append(proc2)
    with ReplayClient(f"127.0.0.1:{port2}") as client:
        assert client.info() == before
        got = client.sample("queue", 120, timeout=5)  # fifo: everything, in insertion order
        np.testing.assert_array_equal(got.keys, np.arange(120, dtype=np.uint64))
        for field in batches[0]:
            np.testing.assert_array_equal(got.batch[field], np.concatenate([b[field] for b in batches]))


def test_checkpoint_rpc_refuses_paths_outside_its_roots(tmp_path, subprocess_servers):
    import grpc

    (tmp_path / "config.yaml").write_text(CONFIG_YAML)
    proc, port = spawn_server(tmp_path, "--config", "config.yaml")
    subprocess_servers.append(proc)
    with ReplayClient(f"127.0.0.1:{port}") as client:
        client.insert("online", gems_batch(4), timeout=5)
        for outside in ("/etc/mamql-ck", str(tmp_path.parent / "elsewhere"), str(tmp_path / ".." / "up")):
            with pytest.raises(ReplayError) as err:
                client.checkpoint(outside)
            assert err.value.grpc_code == grpc.StatusCode.PERMISSION_DENIED
            assert not Path(outside).exists()
        assert client.checkpoint(str(tmp_path / "inside"))[1] == 4
