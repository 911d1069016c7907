"""`mamql local` end to end: real replay, learner and actor processes on 127.0.0.1."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from helpers import wait_until
from mamql.supervisor import scrape, total

pytestmark = pytest.mark.slow

FAST = [
    "--set", "learner.hidden=[32]", "--set", "learner.batch_size=32", "--set", "weights.publish_every=2",
    "--set", "learner.log_every=5", "--set", "learner.checkpoint_every=20", "--set", "actor.num_envs=2",
    "--set", "actor.send_batch_size=32",
    "--set", "replay.tables=[{name: online, capacity: 5000, min_size_to_sample: 64, samples_per_insert: 2.0, "
             "error_buffer: 4000.0}]",
]


def test_local_runs_end_to_end_survives_actor_kill_and_stops_cleanly(tmp_path):
    # a target far beyond what the test waits for: the status line has progress and an ETA; SIGTERM ends it
    cmd = [sys.executable, "-m", "mamql.cli", "local", "--env", "gems", "--actors", "2", "--steps", "100000",
           "--expert-transitions", "500", "--run-name", "e2e", "--status-every", "1",
           "--set", f"run.root={tmp_path}", *FAST]
    out_path = tmp_path / "local.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    run_dir = tmp_path / "e2e"
    try:
        table_path = run_dir / "processes.json"
        wait_until(table_path.exists, 180, "the processes to start", proc)
        procs = json.loads(table_path.read_text())
        assert set(procs) >= {"collect", "replay", "learner", "actor-0", "actor-1"}
        # ports come from processes.json as it is now: a restarted actor binds a new metrics port
        url = lambda name: f"http://127.0.0.1:{json.loads(table_path.read_text())[name]['metrics_port']}/metrics"

        def healthy():
            actors = [scrape(url(f"actor-{i}")) for i in range(2)]
            learner = scrape(url("learner"))
            return (
                all(total(a, "mamql_replay_writer_acked_transitions_total") > 0 for a in actors)
                and all(total(a, "mamql_actor_weight_version") >= 2 for a in actors)
                and total(learner, "mamql_learner_updates_total") >= 6
                and total(learner, "mamql_learner_policy_lag_count") > 0
            )

        wait_until(healthy, 240, "both actors streaming with >= 2 weight versions and learner updates", proc)
        for name in ("replay", "learner", "actor-0", "actor-1"):
            assert scrape(url(name)), f"{name} /metrics does not answer"
        # Actors first: every transition they have seen acked was inserted before the ack, so a later
        # replay scrape must count at least as many (the other order races against new inserts).
        acked = sum(total(scrape(url(f"actor-{i}")), "mamql_replay_writer_acked_transitions_total") for i in range(2))
        replay = scrape(url("replay"))
        assert total(replay, "mamql_replay_inserted_transitions_total", table="online") >= acked
        learner = scrape(url("learner"))
        lag = total(learner, "mamql_learner_policy_lag_sum") / total(learner, "mamql_learner_policy_lag_count")
        assert 0 <= lag < 50, f"mean policy lag {lag} versions"

        # kill -9 one actor: the others keep going, the supervisor restarts it and it rejoins
        updates_before = total(learner, "mamql_learner_updates_total")
        os.kill(procs["actor-0"]["pid"], signal.SIGKILL)
        restarted = wait_until(
            lambda: (t := json.loads(table_path.read_text()))["actor-0"]["restarts"] == 1
            and t["actor-0"]["metrics_port"] and t, 120, "actor-0 to be restarted and report its ports", proc)
        assert restarted["actor-0"]["pid"] != procs["actor-0"]["pid"]
        wait_until(
            lambda: total(scrape(url("actor-0")), "mamql_replay_writer_acked_transitions_total") > 0
            and total(scrape(url("actor-0")), "mamql_actor_weight_version") >= 1,
            120, "the restarted actor to stream and receive weights", proc)
        assert total(scrape(url("actor-1")), "mamql_replay_writer_acked_transitions_total") > 0
        wait_until(lambda: total(scrape(url("learner")), "mamql_learner_updates_total") > updates_before, 60,
                   "the learner to keep updating", proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=180)
    output = out_path.read_text()
    assert code == 0, output[-3000:]
    codes = dict(re.findall(r"(actor-\d|learner|replay)=(-?\d+)", output.split("exit codes:")[-1]))
    assert codes == {"actor-0": "0", "actor-1": "0", "learner": "0", "replay": "0"}, output[-2000:]
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "checkpoints" / "learner" / "latest.pt").exists()
    assert (run_dir / "checkpoints" / "replay" / "header.json").exists()
    metrics_lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert metrics_lines and "agent_0/loss" in json.loads(metrics_lines[-1])
    status = [json.loads(line) for line in (run_dir / "status.jsonl").read_text().splitlines()]
    assert max(s["env_fps"] for s in status) > 0 and max(s["updates"] for s in status) > 0
    assert status[-1]["updates_target"] == 100000 and status[-1]["episodes"] > 0

    # what a newcomer reads: a legend once, progress with an ETA, then the next commands for this run
    lines = output.splitlines()
    legend = [i for i, line in enumerate(lines) if line.startswith("status every 1 s; rates per second over")]
    first_status = next(i for i, line in enumerate(lines) if re.search(r" \| updates \d+/100000", line))
    assert len(legend) == 1 and legend[0] < first_status, output[:3000]
    assert re.search(r"^\S+ \| updates \d+/100000 \([\d.]+/s, ETA \d+[hms]", output, re.M), output[-3000:]
    assert re.search(r"\| return agent_0=-?[\d.]+ agent_1=-?[\d.]+ \| env [\d,]+/s \| replay in ", output)
    assert f"  mamql evaluate --run {run_dir} " in output and f"  mamql plot {run_dir} " in output
    assert re.search(r"^done in \d+\S*: \d+ updates, [\d,]+ env steps", output, re.M)

    # the printed evaluate command finds the run's checkpoint and its collected demos by itself
    evaluate = subprocess.run([sys.executable, "-m", "mamql.cli", "evaluate", "--run", str(run_dir), "--episodes", "1",
                               "--recovery-rows", "64"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    report = json.loads(evaluate.stdout)
    assert report["checkpoint"] == str(run_dir / "checkpoints" / "learner" / "latest.pt")
    assert report["demos"] == str((run_dir / "demos.npz").resolve()) and "reward_recovery" in report
