"""Faults with real processes: kill -9 and SIGTERM of actors, replay and learner; bounded calls
against a frozen (SIGSTOPped) peer. All processes are `mamql ...` subprocesses on 127.0.0.1 with a
token; every one is stopped by PID in `finally`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from reliability_helpers import (FAST, free_port, kill_all, metric, spawn, spawn_reporting,  # noqa: E402
                                 stop, tail, wait_until)

from mamql.protos.rpc import Security  # noqa: E402
from mamql.replay import checkpoint  # noqa: E402
from mamql.replay.client import ReplayClient  # noqa: E402
from mamql.replay.errors import ReplayError  # noqa: E402
from mamql.replay.writer import WriterFull  # noqa: E402
from replay_helpers import gems_batch  # noqa: E402

TOKEN = "fault-token-0123456789"
# the rate limiter keeps the table small however fast the actors run (capacity is never reached)
TABLE = ["--set", "replay.tables=[{name: online, capacity: 60000, min_size_to_sample: 64, samples_per_insert: 1.0, "
                  "error_buffer: 3000.0}]", "--set", "replay.wait_timeout_s=2.0"]
SEND = 32  # actor.send_batch_size in FAST (num_envs 2 divides it: every batch is exactly 32 rows)
NO_POLICY = {"policy_epoch": np.zeros(SEND, np.int64)}  # the actors' table schema has this column


def rows_by_actor(client: ReplayClient, path: Path) -> tuple[dict[int, int], dict[int, np.ndarray], int]:
    """Checkpoint the live replay to `path`; rows per actor id, steps per actor id, table 'inserted'."""
    client.checkpoint(str(path), timeout=60)
    (online,) = [t for t in checkpoint.load(path) if t["name"] == "online"]
    ids = online["arrays"]["actor_id"]
    counts = {int(a): int((ids == a).sum()) for a in np.unique(ids)}
    steps = {int(a): online["arrays"]["step"][ids == a] for a in np.unique(ids)}
    assert len(ids) == online["inserted"], "the table evicted rows; exact counts need capacity > inserted"
    return counts, steps, int(online["inserted"])


class Cluster:
    def __init__(self, tmp: Path, demos: str):
        self.tmp, self.demos = tmp, demos
        self.token_file = tmp / "token"
        self.token_file.write_text(TOKEN + "\n")
        # bound (port 0) at the first start and reported; a restarted server takes its old gRPC port
        # back, so that clients reconnect to the same address
        self.replay_port = self.weights_port = 0
        self.metrics: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.common = [*FAST, *TABLE, "--set", f"auth.token_file={self.token_file}", "--set", f"run.root={tmp}"]

    def start(self, name: str, extra: list[str] = ()) -> subprocess.Popen:
        """Start one process and wait until it has reported its ports (servers: bound and serving)."""
        m = ["--set", "metrics.port=0"]
        if name == "replay":
            args = ["replay", *self.common, *m, "--set", f"replay.port={self.replay_port}",
                    "--set", f"replay.checkpoint_dir={self.tmp / 'replay-exit'}", "--grace", "1"]
        elif name == "learner":
            args = ["learner", *self.common, *m, "--replay", f"127.0.0.1:{self.replay_port}", "--demos", self.demos,
                    "--steps", "0", "--run-dir", str(self.tmp / "run"), "--set", f"weights.port={self.weights_port}"]
        else:
            args = ["actor", *self.common, *m, "--replay", f"127.0.0.1:{self.replay_port}",
                    "--weights", f"127.0.0.1:{self.weights_port}", "--actor-id", name.split("-")[1]]
        ports = spawn_reporting(self.procs, name, [*args, *extra], self.tmp / f"{name}.log")
        self.metrics[name] = ports["metrics"]
        if name == "replay":
            self.replay_port = ports["grpc"]
        elif name == "learner":
            self.weights_port = ports["grpc"]
        return self.procs[name]

    def m(self, name: str, metric_name: str, **labels) -> float:
        return metric(self.metrics[name], metric_name, **labels)

    def client(self) -> ReplayClient:
        return ReplayClient(f"127.0.0.1:{self.replay_port}", Security(token=TOKEN))

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{tail(self.tmp / f'{n}.log', 1500)}" for n in self.procs)


@pytest.mark.slow
def test_kill9_and_sigterm_of_every_process(tmp_path, demos_path):
    c = Cluster(tmp_path, demos_path)
    versions_seen: list[float] = []  # actor-0's weight version over the whole run: must never decrease

    def actor0_version():
        v = c.m("actor-0", "mamql_actor_weight_version")
        if v:
            versions_seen.append(v)
        return v

    try:
        c.start("replay")
        wait_until(lambda: c.m("replay", "mamql_replay_table_capacity") > 0, 60, "replay up", [c.procs["replay"]])
        for name in ("learner", "actor-0", "actor-1"):
            c.start(name)
        alive = lambda: [p for n, p in c.procs.items() if n != "actor-1"]  # noqa: E731  (actor-1 is killed)
        wait_until(lambda: c.m("learner", "mamql_learner_updates_total") >= 10
                   and c.m("actor-1", "mamql_replay_writer_acked_transitions_total") >= 4 * SEND
                   and actor0_version() >= 2, 150, "learner updating, actors streaming", alive())

        # --- kill -9 an actor mid-stream: replay holds only whole batches of it
        stop(c.procs["actor-1"], signal.SIGKILL)
        time.sleep(0.5)
        with c.client() as client:
            counts, _, _ = rows_by_actor(client, tmp_path / "ck-actor-kill")
        assert counts.get(1, 0) >= 4 * SEND and counts[1] % SEND == 0, counts

        # --- exact accounting across a replay kill -9: an in-test writer (actor id 99) acks N rows,
        # the replay checkpoints, more rows are written, the replay is killed and restored from the
        # checkpoint: exactly the N acked-before-checkpoint rows are there (no loss, no duplicate).
        with c.client() as client:
            writer = client.writer("online", max_queue_batches=8)
            for i in range(10):
                writer.put({**gems_batch(SEND, start=SEND * i, actor=99), **NO_POLICY}, timeout=10)
            assert writer.flush(timeout=30)
            acked_before = writer.acked_transitions
            assert acked_before == 10 * SEND
            ck = tmp_path / "ck-before-kill"
            counts, steps, _ = rows_by_actor(client, ck)
            assert counts[99] == acked_before and sorted(steps[99]) == list(range(acked_before))
            for i in range(10, 14):
                writer.put({**gems_batch(SEND, start=SEND * i, actor=99), **NO_POLICY}, timeout=10)
            updates_before = c.m("learner", "mamql_learner_updates_total")
            acked0_before = c.m("actor-0", "mamql_replay_writer_acked_transitions_total")
            stop(c.procs["replay"], signal.SIGKILL)
            time.sleep(2.0)  # actors and learner see the replay gone and back off
            # Batches acked by the dead replay after the checkpoint are lost with it (documented);
            # those it never acked must come back. Read after the kill: no ack can arrive any more.
            acked_at_kill = writer.acked_seq  # this writer's batch i has sequence i + 1
            assert c.procs["learner"].poll() is None and c.procs["actor-0"].poll() is None
            c.start("replay", ["--restore", str(ck)])
            # everyone reconnects: writes and updates continue
            wait_until(lambda: c.m("actor-0", "mamql_replay_writer_acked_transitions_total") > acked0_before + 4 * SEND
                       and c.m("learner", "mamql_learner_updates_total") > updates_before + 5,
                       120, "actor and learner to resume after the replay restart", alive())
            assert c.m("actor-0", "mamql_replay_writer_reconnects_total") >= 1
            assert writer.flush(timeout=30)  # the writer resends what the dead replay never acked
            assert writer.reconnects >= 1
            counts, steps, _ = rows_by_actor(client, tmp_path / "ck-after-restart")
            before = steps[99][steps[99] < acked_before]
            assert sorted(before) == list(range(acked_before)), "rows acked before the checkpoint lost or doubled"
            resent = range(max(acked_before, SEND * acked_at_kill), 14 * SEND)
            assert set(resent) <= set(steps[99].tolist())  # unacked at the kill: resent after the restart
            writer.close(timeout=5)

        # --- kill -9 the learner, restart with --resume: versions only go up for the actor
        actor0_version()
        v_before = max(versions_seen)
        stop(c.procs["learner"], signal.SIGKILL)
        time.sleep(1.0)
        c.start("learner", ["--resume"])
        wait_until(lambda: actor0_version() > v_before and c.m("learner", "mamql_learner_updates_total") > 0,
                   120, "the resumed learner to publish newer versions to the actor", alive())
        assert versions_seen == sorted(versions_seen), versions_seen
        assert "resumed from" in tail(tmp_path / "learner.log", 20000)

        # --- SIGTERM: every process exits 0 and writes its final checkpoint
        ckpt = tmp_path / "run" / "checkpoints" / "learner" / "latest.pt"
        mtime = ckpt.stat().st_mtime
        for name in ("actor-0", "learner", "replay"):
            assert stop(c.procs[name], signal.SIGTERM, timeout=60) == 0, c.logs()
        assert ckpt.stat().st_mtime > mtime
        assert (tmp_path / "replay-exit" / "header.json").exists()
        assert "all acked: True" in tail(tmp_path / "actor-0.log", 4000)
    except AssertionError:
        print(c.logs())
        raise
    finally:
        kill_all(c.procs.values())


def test_no_call_blocks_forever_against_a_frozen_replay(tmp_path):
    """SIGSTOP the replay: every client call and queue returns (or raises) within its bound."""
    from mamql.actors.weight_subscriber import WeightSubscriber

    port = free_port()
    proc = spawn(["replay", "--set", f"replay.port={port}", "--set", "metrics.enabled=false",
                  "--set", "replay.tables=[{name: online, capacity: 1000}]",
                  "--set", "replay.checkpoint_on_exit=false"], tmp_path / "replay.log")
    try:
        wait_until(lambda: _answers(port), 60, "replay up", [proc])
        client = ReplayClient(f"127.0.0.1:{port}")
        client.insert("online", gems_batch(8), timeout=2)
        writer = client.writer("online", max_queue_batches=2)
        stream = client.sample_stream("online", 4, prefetch=1)
        stream.next(timeout=10)
        subscriber = WeightSubscriber(f"127.0.0.1:{port}", "t").start()  # a subscriber to a frozen peer
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)

        def bounded(limit, fn, *expect):
            start = time.monotonic()
            with pytest.raises(expect or (ReplayError,)):
                fn()
            elapsed = time.monotonic() - start
            assert elapsed < limit, (fn, elapsed)
            return elapsed

        bounded(3.0, lambda: client.info(timeout=1.0))
        bounded(8.0, lambda: client.insert("online", gems_batch(4), timeout=1.0))  # 1 s wait + 5 s slack
        bounded(8.0, lambda: client.sample("online", 4, timeout=1.0))
        with pytest.raises(ReplayError):
            for _ in range(100_000):  # drain what was prefetched or buffered, then the frozen server gives nothing
                stream.next(timeout=1.0)
        bounded(2.5, lambda: [writer.put(gems_batch(4), timeout=1.0) for _ in range(5)], WriterFull)
        start = time.monotonic()
        assert writer.close(timeout=1.0) is False  # gives up on the unacked batches, does not hang
        stream.close()
        subscriber.close(timeout=3.0)
        assert not subscriber._thread.is_alive()
        client.close()
        assert time.monotonic() - start < 12
    finally:
        kill_all([proc])


def _answers(port: int) -> bool:
    try:
        with ReplayClient(f"127.0.0.1:{port}") as client:
            client.info(timeout=1)
        return True
    except ReplayError:
        return False
