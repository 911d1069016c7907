"""`mamql local --algo soft-q`: the distributed system trains from the env's rewards, no demos."""

import json
import re
import subprocess
import sys

import pytest

from test_local_e2e import FAST

pytestmark = pytest.mark.slow


def test_local_soft_q_needs_no_demos_and_finishes(tmp_path):
    cmd = [sys.executable, "-m", "mamql.cli", "local", "--algo", "soft-q", "--env", "gems", "--actors", "1",
           "--steps", "20", "--run-name", "sq", "--status-every", "1", "--set", f"run.root={tmp_path}", *FAST]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    codes = dict(re.findall(r"(actor-\d|learner|replay)=(-?\d+)", output.split("exit codes:")[-1]))
    assert codes == {"actor-0": "0", "learner": "0", "replay": "0"}, output[-2000:]
    run_dir = tmp_path / "sq"
    assert "collect" not in json.loads((run_dir / "processes.json").read_text())  # no demo collection
    assert not (run_dir / "demos.npz").exists()
    assert json.loads((run_dir / "local.json").read_text())["demos"] is None
    assert (run_dir / "checkpoints" / "learner" / "latest.pt").exists()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records and "agent_0/target" in records[-1] and "agent_1/reward" in records[-1]  # soft_q_loss's terms
    # the actor streamed from the start (its first episodes end before the learner's 20 updates)
    status = [json.loads(line) for line in (run_dir / "status.jsonl").read_text().splitlines()]
    assert any(set(s["returns"]) == {"agent_0", "agent_1"} for s in status)


def test_learner_without_demos_is_refused_unless_soft_q(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mamql.cli", "learner", "--replay", "127.0.0.1:1",
                           "--set", f"run.root={tmp_path}"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mamql learner: error: learner.algo=mamql learns from demonstrations: give --demos"]
