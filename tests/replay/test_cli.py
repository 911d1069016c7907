"""`mamql replay` as a real process: SIGTERM shutdown with final checkpoint, /metrics, bind safety."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

from mamql.protos.rpc import health_check
from mamql.replay.client import ReplayClient
from replay_helpers import REPO, gems_batch, spawn_server


def test_sigterm_exits_zero_with_final_checkpoint_and_metrics(tmp_path, subprocess_servers):
    ck = tmp_path / "final"
    proc, port = spawn_server(tmp_path, "--set", f"replay.checkpoint_dir={ck}",
                              "--set", "replay.tables=[{name: online, capacity: 1000}]")
    subprocess_servers.append(proc)
    line = proc.stdout.readline()
    metrics_port = int(re.search(r"metrics on port (\d+)", line).group(1))
    assert f":{port}" in line
    assert health_check(f"127.0.0.1:{port}", "mamql.v1.ReplayService")
    with ReplayClient(f"127.0.0.1:{port}") as client:
        client.insert("online", gems_batch(25), timeout=5)
        client.sample("online", 10, timeout=5)
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'mamql_replay_inserted_transitions_total{table="online"} 25.0' in text
    assert 'mamql_replay_sampled_transitions_total{table="online"} 10.0' in text
    assert 'mamql_replay_table_size{table="online"} 25.0' in text
    assert 'mamql_replay_table_capacity{table="online"} 1000.0' in text
    assert "mamql_replay_insert_latency_seconds_bucket" in text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    header = json.loads((ck / "header.json").read_text())
    assert {t["name"]: t["rows"] for t in header["tables"]} == {"online": 25}


def test_refuses_public_bind_without_token(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mamql.replay.cli", "--set", "replay.host=0.0.0.0", "--set", "replay.port=0",
         "--set", "auth.insecure_no_auth=false"],
        cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "without auth.token" in proc.stderr
