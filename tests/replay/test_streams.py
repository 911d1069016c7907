"""ReplayWriter (bounded queue, acks, reconnect, at-least-once) and SampleStream (prefetch, reconnect)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mamql.config import Config, ReplayConfig
from mamql.metrics import new_registry, sample_value
from mamql.replay.client import Backoff, ReplayClient
from mamql.replay.errors import DeadlineExceeded, TableNotFound
from mamql.replay.writer import WriterFull
from replay_helpers import make_config, small_batch


def on_port(config: Config, port: int) -> Config:
    return Config(**{**config.__dict__, "replay": ReplayConfig(**{**config.replay.__dict__, "port": port})})


def test_writer_acks_sequence_numbers_and_metrics(start_server):
    server = start_server()
    registry = new_registry(process_metrics=False)
    with ReplayClient(server.address) as client:
        writer = client.writer("online", max_queue_batches=4, registry=registry)
        seqs = [writer.put(small_batch(5, i * 5), timeout=5) for i in range(10)]
        assert seqs == list(range(1, 11))
        assert writer.close(timeout=10)
    assert (writer.acked_seq, writer.acked_transitions, writer.depth) == (10, 50, 0)
    assert server.replay.tables["online"].size == 50
    assert sample_value(registry, "mamql_replay_writer_acked_transitions_total", {"table": "online"}) == 50
    assert sample_value(registry, "mamql_replay_writer_queue_depth", {"table": "online"}) == 0


def test_writer_queue_is_bounded_and_resends_after_server_restart(start_server):
    first = start_server()
    port = first.port
    client = ReplayClient(first.address)
    writer = client.writer("online", max_queue_batches=3, backoff=Backoff(0.02, 0.2))
    writer.put(small_batch(2), timeout=5)
    assert writer.flush(timeout=5)
    first.stop(grace=0.2, final_checkpoint=False)
    for i in range(3):  # server away: these stay queued / unacked
        writer.put(small_batch(2, 2 + 2 * i), timeout=1)
    start = time.monotonic()
    with pytest.raises(WriterFull):
        writer.put(small_batch(2), timeout=0.2)  # bounded: never unbounded memory
    assert 0.15 < time.monotonic() - start < 1.0
    assert writer.depth == 3
    second = start_server(on_port(make_config(), port))
    assert writer.flush(timeout=10)
    assert writer.reconnects >= 1 and writer.acked_seq == 4
    steps = np.sort(second.replay.tables["online"].snapshot()["arrays"]["action/a"])
    # at-least-once: every batch sent while the server was away arrives (duplicates allowed, none here)
    assert set(steps.tolist()) == set(range(2, 8))
    writer.close()
    client.close()


def test_writer_drops_a_refused_batch_and_keeps_going(start_server):
    server = start_server()
    with ReplayClient(server.address) as client:
        writer = client.writer("online", max_queue_batches=8)
        writer.put(small_batch(2), timeout=1)
        bad = small_batch(2)
        bad["obs/a"][0, 0] = np.nan
        bad_seq = writer.put(bad, timeout=1)
        writer.put(small_batch(2, 2), timeout=1)
        assert writer.close(timeout=10)
    assert writer.failed_batches == 1 and writer.errors[0][0] == bad_seq
    assert writer.errors[0][1].code == "INVALID_ARGUMENT"
    assert server.replay.tables["online"].size == 4


def test_sample_stream_prefetches_and_raises_permanent_errors(start_server):
    server = start_server()
    server.replay.insert("online", small_batch(20))
    with ReplayClient(server.address) as client:
        with client.sample_stream("online", 8, prefetch=2) as stream:
            got = [stream.next(timeout=5) for _ in range(5)]
            assert all(len(s.keys) == 8 and s.keys.max() < 20 for s in got)
            time.sleep(0.2)
            assert stream._queue.qsize() <= 2  # bounded prefetch
        with client.sample_stream("nope", 8) as stream:
            with pytest.raises(TableNotFound):
                stream.next(timeout=5)


def test_sample_stream_waits_then_reconnects_across_restart(start_server):
    first = start_server()
    port = first.port
    with ReplayClient(first.address) as client:
        stream = client.sample_stream("online", 4, backoff=Backoff(0.02, 0.2))
        with pytest.raises(DeadlineExceeded):
            stream.next(timeout=0.3)  # table empty: nothing yet, and next() has a deadline
        first.stop(grace=0.2, final_checkpoint=False)
        second = start_server(on_port(make_config(), port))
        second.replay.insert("online", small_batch(10, 100))
        sample = stream.next(timeout=10)
        assert sample.batch["action/a"].min() >= 100 and stream.reconnects >= 1
        stream.close()
