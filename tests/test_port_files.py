"""Servers bind port 0 and report their ports in a --port-file; readiness is gRPC health, not a TCP
connect; a replay told to drain (SIGUSR1) takes a rate-limited actor's queued batches at shutdown."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import wait_until
from mamql.portfile import read_port_file, write_port_file
from mamql.supervisor import grpc_serving, scrape, total

ROOT = Path(__file__).resolve().parent.parent
# inserts block after a few hundred transitions while nobody samples
TABLE = "replay.tables=[{name: online, capacity: 5000, min_size_to_sample: 64, samples_per_insert: 4.0, error_buffer: 400.0}]"


def spawn(tmp_path: Path, name: str, *args: str) -> subprocess.Popen:
    with (tmp_path / f"{name}.log").open("w") as log:
        return subprocess.Popen([sys.executable, "-m", "mamql.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_port_file_round_trip_and_bad_contents(tmp_path):
    path = tmp_path / "p.json"
    assert read_port_file(path) is None
    write_port_file(path, 4321, None)
    assert read_port_file(path) == {"grpc": 4321, "metrics": None}
    assert not list(tmp_path.glob("*.tmp"))
    for bad in ('[1]', '{"grpc": "x"}', '{"grpc": 70000}', '{"metrics": true}'):
        path.write_text(bad)
        with pytest.raises(ValueError, match="port file"):
            read_port_file(path)


def test_readiness_is_grpc_health_not_any_listener():
    with socket.socket() as plain:  # something that accepts TCP connections but is no gRPC server
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        assert not grpc_serving(timeout=1.0)(f"127.0.0.1:{plain.getsockname()[1]}")


@pytest.mark.slow
def test_replay_and_actor_report_ports_and_the_actor_drains_at_shutdown(tmp_path):
    replay = spawn(tmp_path, "replay", "replay", "--set", "replay.port=0", "--set", "metrics.port=0", "--set", TABLE,
                   "--set", f"replay.checkpoint_dir={tmp_path / 'ck'}", "--port-file", str(tmp_path / "replay.json"))
    actor = None
    try:
        ports = wait_until(lambda: read_port_file(tmp_path / "replay.json"), 60, "the replay's port file", [replay])
        assert ports["grpc"] and ports["metrics"] and ports["grpc"] != ports["metrics"]
        address = f"127.0.0.1:{ports['grpc']}"
        assert grpc_serving()(address)
        assert "mamql_replay_table_capacity" in {n for n, _ in scrape(f"http://127.0.0.1:{ports['metrics']}/metrics")}

        actor = spawn(tmp_path, "actor", "actor", "--replay", address, "--set", "actor.mode=random",
                      "--set", "actor.num_envs=2", "--set", "actor.send_batch_size=32", "--set", "metrics.port=0",
                      "--port-file", str(tmp_path / "actor.json"))
        aports = wait_until(lambda: read_port_file(tmp_path / "actor.json"), 120, "the actor's port file",
                            [replay, actor])
        assert aports["grpc"] is None and aports["metrics"] not in (None, ports["metrics"])
        actor_metrics = f"http://127.0.0.1:{aports['metrics']}/metrics"
        # the rate limiter holds the actor back: batches wait in its send queue
        wait_until(lambda: total(scrape(actor_metrics), "mamql_replay_writer_queue_depth") >= 8,
                   120, "the actor to be blocked by the rate limiter", [replay, actor])
        replay.send_signal(signal.SIGUSR1)  # drain: what `mamql local` does before it stops the actors
        actor.send_signal(signal.SIGTERM)
        assert actor.wait(timeout=60) == 0
        replay.send_signal(signal.SIGTERM)
        assert replay.wait(timeout=60) == 0
    finally:
        for p in (actor, replay):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    log = (tmp_path / "actor.log").read_text()
    produced, acked, flushed = re.search(r"stopped: (\d+) transitions, (\d+) acked, .* all acked: (\w+)", log).groups()
    assert flushed == "True" and "dropping" not in log and int(produced) == int(acked) > 0, log[-2000:]
    from mamql.replay import checkpoint

    (online,) = [t for t in checkpoint.load(tmp_path / "ck") if t["name"] == "online"]
    assert online["inserted"] == int(acked)
