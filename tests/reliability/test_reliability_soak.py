"""Soak (bounded, ~75 s; up to ~5 min on a loaded box): 4 actors + learner + an extra sampler at full speed with tiny nets.
Every process's RSS stays flat after warm-up, and the counters reconcile exactly."""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from reliability_helpers import (FAST, kill_all, metric, rss_kib, spawn_reporting, stop, tail,  # noqa: E402
                                 wait_until)

from mamql.protos.rpc import Security  # noqa: E402
from mamql.replay.client import ReplayClient  # noqa: E402
from mamql.replay.errors import ReplayError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.soak]

TOKEN = "soak-token-0123456789"
ACTORS = 4
WARMUP_S, MEASURE_S = 25.0, 45.0
# Warm-up ends after WARMUP_S AND this many learner updates: the learner's memory grows until its
# first ~100 updates (allocator caches, optimizer state) however long that takes on a loaded box.
WARMUP_UPDATES = 100
MAX_GROWTH = 0.10


def test_soak_rss_flat_and_counters_reconcile(tmp_path, demos_path):
    (tmp_path / "token").write_text(TOKEN)
    common = [*FAST, "--set", "replay.tables=[{name: online, capacity: 40000, min_size_to_sample: 64, "
              "samples_per_insert: 1.0, error_buffer: 3000.0}]", "--set", f"auth.token_file={tmp_path / 'token'}",
              "--set", f"run.root={tmp_path}", "--set", "replay.checkpoint_on_exit=false"]
    procs = {}
    stop_sampler = threading.Event()
    sampled = {"batches": 0, "error": None}
    try:
        # every process binds port 0 and reports its ports (no port is picked before it is bound)
        reported = {"replay": spawn_reporting(procs, "replay", ["replay", *common, "--set", "replay.port=0",
                                                                "--set", "metrics.port=0"], tmp_path / "replay.log")}
        rport = reported["replay"]["grpc"]
        reported["learner"] = spawn_reporting(
            procs, "learner", ["learner", *common, "--replay", f"127.0.0.1:{rport}", "--demos", demos_path, "--steps",
                               "0", "--run-dir", str(tmp_path / "run"), "--set", "weights.port=0",
                               "--set", "metrics.port=0"], tmp_path / "learner.log")
        wport = reported["learner"]["grpc"]
        for i in range(ACTORS):
            reported[f"actor-{i}"] = spawn_reporting(
                procs, f"actor-{i}", ["actor", *common, "--replay", f"127.0.0.1:{rport}", "--weights",
                                      f"127.0.0.1:{wport}", "--actor-id", str(i), "--set", "metrics.port=0"],
                tmp_path / f"actor-{i}.log")
        ports = {name: p["metrics"] for name, p in reported.items()}
        m = lambda name, what: metric(ports[name], what)  # noqa: E731
        wait_until(lambda: all(m(f"actor-{i}", "mamql_replay_writer_acked_transitions_total") > 0
                               for i in range(ACTORS)) and m("learner", "mamql_learner_updates_total") > 0,
                   150, "all processes streaming", list(procs.values()), interval=1)

        def sampler():  # a second consumer (e.g. an evaluator) reading as fast as it can
            try:
                with ReplayClient(f"127.0.0.1:{rport}", Security(token=TOKEN)) as client:
                    with client.sample_stream("online", 64, prefetch=2) as stream:
                        while not stop_sampler.is_set():
                            try:
                                stream.next(timeout=1.0)
                                sampled["batches"] += 1
                            except ReplayError:
                                pass
            except Exception as exc:  # noqa: BLE001 - asserted below
                sampled["error"] = exc

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        time.sleep(WARMUP_S)
        wait_until(lambda: m("learner", "mamql_learner_updates_total") >= WARMUP_UPDATES, 240,
                   f"{WARMUP_UPDATES} learner updates (warm-up)", list(procs.values()))
        rss0 = {n: rss_kib(p.pid) for n, p in procs.items()}
        updates0 = m("learner", "mamql_learner_updates_total")
        deadline = time.monotonic() + MEASURE_S
        peak = dict(rss0)
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs.values())
            for n, p in procs.items():
                peak[n] = max(peak[n], rss_kib(p.pid))
            time.sleep(2.0)
        rss1 = {n: rss_kib(p.pid) for n, p in procs.items()}
        # a learner busy in an update can miss one 1-second scrape: retry rather than read it as 0
        updates1 = wait_until(lambda: m("learner", "mamql_learner_updates_total"), 30, "the learner's /metrics")
        growth = {n: (rss1[n] - rss0[n]) / rss0[n] for n in procs}
        print("soak RSS MiB after warm-up -> end (peak):",
              {n: f"{rss0[n] / 1024:.0f}->{rss1[n] / 1024:.0f} ({peak[n] / 1024:.0f})" for n in procs},
              f"learner updates/s {(updates1 - updates0) / MEASURE_S:.1f}, sampler batches {sampled['batches']}")
        assert all(g < MAX_GROWTH for g in growth.values()), growth
        assert updates1 > updates0 and sampled["batches"] > 0 and sampled["error"] is None
        reconnects = sum(m(f"actor-{i}", "mamql_replay_writer_reconnects_total") for i in range(ACTORS))

        # counters reconcile: each actor flushes on SIGTERM and logs what it produced; the replay
        # stored exactly that (duplicates would be allowed only after a writer reconnect). The sampler
        # keeps consuming meanwhile: with samples_per_insert the rate limiter lets the final flushes in
        # only while someone samples.
        produced = 0
        for i in range(ACTORS):
            assert stop(procs[f"actor-{i}"], signal.SIGTERM, timeout=60) == 0
            line = re.search(r"stopped: (\d+) transitions.*all acked: (\w+)", tail(tmp_path / f"actor-{i}.log", 5000))
            assert line and line.group(2) == "True", tail(tmp_path / f"actor-{i}.log")
            produced += int(line.group(1))
        stop_sampler.set()
        thread.join(timeout=10)
        inserted = m("replay", "mamql_replay_inserted_transitions_total")
        if reconnects == 0:
            assert inserted == produced, (inserted, produced)
        else:
            assert inserted >= produced, (inserted, produced, reconnects)
        print(f"soak: {produced} transitions produced and acked, {inserted:.0f} inserted, {reconnects:.0f} reconnects")
        for name in ("learner", "replay"):
            assert stop(procs[name], signal.SIGTERM, timeout=60) == 0
    finally:
        stop_sampler.set()
        kill_all(procs.values())
