"""Many writers (threads and a subprocess) and two samplers at once: every count reconciles."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np

from mamql.config import TableConfig
from mamql.metrics import sample_value
from mamql.replay.client import ReplayClient
from replay_helpers import REPO, gems_batch, make_config

BATCHES, ROWS = 20, 16
SUBPROCESS_WRITER = f"""
import sys
sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}, {str(REPO / 'tests' / 'replay')!r}]
from mamql.replay.client import ReplayClient
from replay_helpers import gems_batch
client = ReplayClient(sys.argv[1])
with client.writer("online", max_queue_batches=4) as writer:
    for i in range({BATCHES}):
        writer.put(gems_batch({ROWS}, start=i * {ROWS}, actor=9), timeout=10)
    assert writer.flush(timeout=20)
print(writer.acked_transitions, writer.acked_seq)
"""


def test_concurrent_writers_and_samplers_reconcile(start_server):
    server = start_server(make_config((TableConfig(name="online", capacity=10_000),)))
    child = subprocess.Popen([sys.executable, "-c", SUBPROCESS_WRITER, server.address], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    writers_done = threading.Event()
    sampled = [0, 0]
    errors = []

    def write(actor):
        try:
            with ReplayClient(server.address) as client:
                if actor % 2:
                    for i in range(BATCHES):
                        client.insert("online", gems_batch(ROWS, start=i * ROWS, actor=actor), timeout=5)
                else:  # exercise the streaming writer from threads too
                    with client.writer("online", max_queue_batches=3) as w:
                        for i in range(BATCHES):
                            w.put(gems_batch(ROWS, start=i * ROWS, actor=actor), timeout=5)
                        assert w.flush(timeout=10) and w.acked_transitions == BATCHES * ROWS
        except Exception as exc:  # surfaced below
            errors.append(exc)

    def sample(slot):
        try:
            with ReplayClient(server.address) as client:
                while not writers_done.is_set():
                    s = client.sample("online", 32, timeout=5)
                    assert len(s.keys) == 32 and s.keys.max() < 10_000
                    sampled[slot] += 32
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(a,)) for a in range(4)]
    samplers = [threading.Thread(target=sample, args=(i,)) for i in range(2)]
    for t in threads + samplers:
        t.start()
    for t in threads:
        t.join(timeout=60)
    out, _ = child.communicate(timeout=60)
    writers_done.set()
    for t in samplers:
        t.join(timeout=10)
    assert not errors, errors
    assert child.returncode == 0 and out.split() == [str(BATCHES * ROWS), str(BATCHES)]

    total = 5 * BATCHES * ROWS
    info = server.replay.info()["online"]
    assert info.inserted == info.size == total
    assert info.sampled == sum(sampled) > 0
    rows = server.replay.tables["online"].snapshot()["arrays"]
    pairs = set(zip(rows["actor_id"].tolist(), rows["step"].tolist()))
    assert len(pairs) == total  # no duplicates, nothing lost
    assert pairs == {(a, s) for a in (0, 1, 2, 3, 9) for s in range(BATCHES * ROWS)}
    # rows stay intact under concurrency: each row's obs is the one its writer made
    idx = np.flatnonzero(rows["actor_id"] == 9)[:5]
    for i in idx:
        step = rows["step"][i]
        chunk = gems_batch(ROWS, start=(step // ROWS) * ROWS, actor=9)
        np.testing.assert_array_equal(rows["obs/agent_0"][i], chunk["obs/agent_0"][step % ROWS])
    reg = server.registry
    assert sample_value(reg, "mamql_replay_inserted_transitions_total", {"table": "online"}) == total
    assert sample_value(reg, "mamql_replay_sampled_transitions_total", {"table": "online"}) == sum(sampled)
    assert sample_value(reg, "mamql_replay_connected_clients") == 0
