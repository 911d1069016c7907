"""`mamql local` process hygiene with real subprocesses: children die with it (kill -9), SIGHUP is an
orderly stop, actors drain into replay at shutdown (counters reconcile), `--resume` continues a run,
and an actor out of restarts fails the run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from helpers import wait_until
from mamql.supervisor import scrape, total

pytestmark = pytest.mark.slow

# Tiny nets, and an online table whose rate limiter holds the actors back (~2,000 transitions
# ahead of the learner): at shutdown their send queues are full and must drain, not be dropped.
FAST = [
    "--set", "learner.hidden=[32]", "--set", "learner.batch_size=32", "--set", "weights.publish_every=2",
    "--set", "learner.log_every=5", "--set", "learner.checkpoint_every=20", "--set", "learner.torch_threads=1",
    "--set", "actor.num_envs=2", "--set", "actor.send_batch_size=32",
    "--set", "replay.tables=[{name: online, capacity: 20000, min_size_to_sample: 64, samples_per_insert: 4.0, "
             "error_buffer: 4000.0}]",
]
COMPONENT_METRIC = {"replay": "mamql_replay_inserted_transitions_total", "learner": "mamql_learner_updates_total",
                    "actor": "mamql_actor_env_steps_total"}


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> str:
    from mamql.learner.demos import collect_demos, save_demos

    path = tmp_path_factory.mktemp("demos") / "demos.npz"
    save_demos(path, *collect_demos("gems", 500, seed=0, num_envs=4))
    return str(path)


def start_local(tmp_path: Path, *args: str, out: str = "local.out") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mamql.cli", "local", "--env", "gems", "--status-every", "1",
           "--set", f"run.root={tmp_path}", *FAST, *args]
    with (tmp_path / out).open("w") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})


def process_table(run_dir: Path) -> dict | None:
    """processes.json once replay, learner and every actor have reported their ports."""
    try:
        table = json.loads((run_dir / "processes.json").read_text())
    except (OSError, ValueError):
        return None
    ready = all(p["metrics_port"] for n, p in table.items() if n != "collect")
    return table if ready else None


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_local(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 180) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def kill_leftovers(run_dir: Path) -> None:
    try:
        table = json.loads((run_dir / "processes.json").read_text())
    except (OSError, ValueError):
        return
    for p in table.values():
        if alive(p["pid"]):
            os.kill(p["pid"], signal.SIGKILL)


def log_time(path: Path, pattern: str) -> datetime:
    """Timestamp of the first log line matching `pattern` (mamql.log's `%Y-%m-%d %H:%M:%S,ms` prefix)."""
    for line in path.read_text(errors="replace").splitlines():
        if re.search(pattern, line):
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    raise AssertionError(f"no line matching {pattern!r} in {path}")


def actor_totals(run_dir: Path, actors: int) -> tuple[int, int]:
    """(transitions produced, transitions acked) over the actors' final log lines; all must be acked."""
    produced = acked = 0
    for i in range(actors):
        text = (run_dir / "logs" / f"actor-{i}.log").read_text()
        assert "dropping" not in text, text[-2000:]
        m = re.findall(r"stopped: (\d+) transitions, (\d+) acked, .* all acked: (\w+)", text)
        assert m and m[-1][2] == "True", text[-2000:]
        produced, acked = produced + int(m[-1][0]), acked + int(m[-1][1])
    return produced, acked


def replay_inserted(run_dir: Path) -> int:
    from mamql.replay import checkpoint

    (online,) = [t for t in checkpoint.load(run_dir / "checkpoints" / "replay") if t["name"] == "online"]
    return int(online["inserted"])


def exit_codes(output: str) -> dict[str, str]:
    return dict(re.findall(r"(actor-\d|learner|replay)=(-?\d+)", output.split("exit codes:")[-1]))


def test_kill9_of_local_takes_every_child_along(tmp_path, demos):
    proc = start_local(tmp_path, "--actors", "2", "--steps", "0", "--demos", demos, "--run-name", "k9")
    run_dir = tmp_path / "k9"
    try:
        table = wait_until(lambda: process_table(run_dir), 180, "all processes up", proc)
        # every server bound port 0 and reported it: distinct ports, each /metrics is the right process's
        ports = [p[k] for p in table.values() for k in ("metrics_port", "grpc_port") if p[k]]
        assert len(ports) == len(set(ports)) == 2 + 2 + 2, table
        for name, p in table.items():
            metric = COMPONENT_METRIC[name.split("-")[0]]
            assert wait_until(lambda: metric in {n for n, _ in scrape(f"http://127.0.0.1:{p['metrics_port']}/metrics")},
                              30, f"{name}'s /metrics"), name
        pids = {name: p["pid"] for name, p in table.items()}
        assert all(alive(pid) for pid in pids.values())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_until(lambda: not any(alive(pid) for pid in pids.values()), 10,
                   f"every child to die with mamql local: {pids}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(run_dir)


def test_sighup_stops_children_in_order_and_actors_drain(tmp_path, demos):
    proc = start_local(tmp_path, "--actors", "2", "--steps", "0", "--demos", demos, "--run-name", "hup")
    run_dir = tmp_path / "hup"
    try:
        table = wait_until(lambda: process_table(run_dir), 180, "all processes up", proc)
        url = lambda name: f"http://127.0.0.1:{table[name]['metrics_port']}/metrics"  # noqa: E731
        wait_until(lambda: all(total(scrape(url(f"actor-{i}")), "mamql_replay_writer_acked_transitions_total") > 0
                               for i in range(2))
                   and total(scrape(url("learner")), "mamql_learner_updates_total") >= 4, 240,
                   "actors streaming and the learner updating", proc)
        code = stop_local(proc, signal.SIGHUP)
    finally:
        if proc.poll() is None:
            stop_local(proc, signal.SIGKILL)
        kill_leftovers(run_dir)
    output = (tmp_path / "local.out").read_text()
    assert code == 0, output[-3000:]
    assert exit_codes(output) == {"actor-0": "0", "actor-1": "0", "learner": "0", "replay": "0"}, output[-2000:]
    assert not any(alive(p["pid"]) for p in table.values())
    logs = run_dir / "logs"
    actors_done = max(log_time(logs / f"actor-{i}.log", r"stopped: \d+ transitions") for i in range(2))
    learner_done = log_time(logs / "learner.log", "stopped after")
    replay_told = log_time(logs / "replay.log", "signal received: shutting down")
    assert actors_done <= learner_done <= replay_told, (actors_done, learner_done, replay_told)
    produced, acked = actor_totals(run_dir, 2)
    assert produced == acked == replay_inserted(run_dir) > 0


def test_finished_run_reconciles_and_resume_continues_it(tmp_path, demos):
    # the learner stops by itself after 10 updates; nothing samples any more while the actors stop,
    # so their full send queues go in only through the replay's drain
    first = start_local(tmp_path, "--actors", "2", "--steps", "10", "--demos", demos, "--run-name", "res")
    run_dir = tmp_path / "res"
    try:
        code = first.wait(timeout=300)
    finally:
        stop_local(first, signal.SIGKILL)
        kill_leftovers(run_dir)
    output = (tmp_path / "local.out").read_text()
    assert code == 0, output[-3000:]
    produced, acked = actor_totals(run_dir, 2)
    inserted = replay_inserted(run_dir)
    assert produced == acked == inserted > 0
    assert re.search(r"stopped after 10 updates at step 10", (run_dir / "logs" / "learner.log").read_text())
    assert re.search(r"^done in \d+\S*: 10 updates, ", output, re.M), output[-3000:]
    assert f"  mamql local --resume {run_dir} --steps 20 " in output

    # an existing run directory is refused without --resume, and left as it was
    before = sorted(p.name for p in run_dir.rglob("*"))
    refused = subprocess.run([sys.executable, "-m", "mamql.cli", "local", "--run-name", "res", "--demos", demos,
                              "--set", f"run.root={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "already exists" in refused.stderr and "--resume" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert sorted(p.name for p in run_dir.rglob("*")) == before

    # --resume: same config.yaml, demos and actor count; learner and replay continue from checkpoints
    config_before = (run_dir / "config.yaml").read_text()
    records = len((run_dir / "status.jsonl").read_text().splitlines())
    second = subprocess.Popen([sys.executable, "-m", "mamql.cli", "local", "--resume", "res", "--steps", "25",
                               "--status-every", "1", "--set", f"run.root={tmp_path}"],
                              stdout=(tmp_path / "resume.out").open("w"), stderr=subprocess.STDOUT, cwd=tmp_path,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        code = second.wait(timeout=300)
    finally:
        stop_local(second, signal.SIGKILL)
        kill_leftovers(run_dir)
    output = (tmp_path / "resume.out").read_text()
    assert code == 0, output[-3000:]
    assert "collecting" not in output and f"--demos {Path(demos).resolve()}" in output
    assert exit_codes(output) == {"actor-0": "0", "actor-1": "0", "learner": "0", "replay": "0"}, output[-2000:]
    learner_log = (run_dir / "logs" / "learner.log").read_text()
    assert "resumed from" in learner_log and "at step 10" in learner_log
    assert re.search(r"stopped after 15 updates at step 25", learner_log), learner_log[-2000:]
    # progress counts the updates still to do from the checkpoint's step, not from 0
    resumed = [json.loads(line) for line in (run_dir / "status.jsonl").read_text().splitlines()[records:]]
    assert resumed and all(r["updates_target"] == 15 for r in resumed)
    assert re.search(r"^done in \d+\S*: 15 updates, ", output, re.M), output[-3000:]
    assert "restored" in (run_dir / "logs" / "replay.log").read_text()
    expected = yaml.safe_load(config_before)
    expected["learner"]["steps"] = 25  # the one change given on the command line
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == expected
    produced2, acked2 = actor_totals(run_dir, 2)  # the actors' logs now end with the resumed run's lines
    assert produced2 == acked2 > 0 and replay_inserted(run_dir) == inserted + acked2


def test_actor_out_of_restarts_fails_the_run(tmp_path, demos):
    proc = start_local(tmp_path, "--actors", "1", "--steps", "0", "--demos", demos, "--run-name", "fail",
                       "--max-actor-restarts", "0")
    run_dir = tmp_path / "fail"
    try:
        table = wait_until(lambda: process_table(run_dir), 180, "all processes up", proc)
        os.kill(table["actor-0"]["pid"], signal.SIGKILL)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            stop_local(proc, signal.SIGKILL)
        kill_leftovers(run_dir)
    output = (tmp_path / "local.out").read_text()
    assert code == 1, output[-3000:]
    assert "actor-0 exited with -9 after 0 restarts" in output, output[-3000:]
    assert exit_codes(output)["learner"] == "0" and exit_codes(output)["replay"] == "0"
