"""Rate limiter semantics (min_size_to_sample, samples_per_insert + error_buffer) and deadlines."""

from __future__ import annotations

import threading
import time

import pytest

from mamql.config import TableConfig
from mamql.metrics import new_registry, sample_value
from mamql.replay.errors import DeadlineExceeded, Unavailable
from mamql.replay.metrics import ReplayMetrics
from mamql.replay.rate_limiter import RateLimiter
from mamql.replay.table import Table
from replay_helpers import small_batch


def table(**kw) -> Table:
    return Table(TableConfig(name="t", capacity=1000, **kw), max_wait=5.0)


def test_min_size_blocks_sampling_until_reached():
    t = table(min_size_to_sample=10)
    t.insert(small_batch(9))
    with pytest.raises(DeadlineExceeded, match="min_size_to_sample=10"):
        t.sample(1, timeout=0.1)
    t.insert(small_batch(1))
    assert len(t.sample(1, timeout=0.1).keys) == 1


def test_blocked_sample_is_woken_by_an_insert():
    t = table(min_size_to_sample=5)
    threading.Timer(0.2, lambda: t.insert(small_batch(5))).start()
    start = time.monotonic()
    assert len(t.sample(3, timeout=3).keys) == 3
    assert 0.15 < time.monotonic() - start < 2.0


def test_samples_per_insert_blocks_inserts_running_ahead():
    t = table(min_size_to_sample=4, samples_per_insert=1.0, error_buffer=4.0)
    # max_diff = 1*4 + 4 = 8: inserting past 8 unsampled transitions blocks
    t.insert(small_batch(8), timeout=0.1)
    with pytest.raises(DeadlineExceeded):
        t.insert(small_batch(1), timeout=0.1)
    t.sample(2, timeout=0.1)  # diff 6 -> one more transition fits
    t.insert(small_batch(2), timeout=0.1)
    assert t.info().inserted == 10


def test_samples_per_insert_blocks_samples_running_ahead():
    t = table(min_size_to_sample=4, samples_per_insert=2.0, error_buffer=2.0)
    t.insert(small_batch(4))  # diff 8, min_diff 6
    t.sample(2, timeout=0.1)  # diff 6: at the lower edge now
    with pytest.raises(DeadlineExceeded):
        t.sample(1, timeout=0.1)
    t.insert(small_batch(1))  # diff 8
    t.sample(1, timeout=0.1)


def test_ratio_holds_over_a_concurrent_run():
    t = table(min_size_to_sample=10, samples_per_insert=4.0, error_buffer=40.0)
    inserted = 0

    def writer():
        nonlocal inserted
        for i in range(50):
            t.insert(small_batch(10, i * 10), timeout=3)
            inserted += 10

    w = threading.Thread(target=writer)
    w.start()
    sampled = 0
    while sampled < 4 * 500 - 40:
        sampled += len(t.sample(32, timeout=3).keys)
        diff = t.limiter.diff()
        assert -32 - 40 <= diff - 40 <= 40 + 40  # within the band plus one batch
    w.join(timeout=5)
    assert inserted == 500


def test_error_buffer_must_allow_progress():
    with pytest.raises(ValueError, match="error_buffer"):
        RateLimiter(10, samples_per_insert=2.0, error_buffer=1.0)


def test_timeout_is_capped_by_max_wait_and_counts_blocked_time():
    registry = new_registry(process_metrics=False)
    t = Table(TableConfig(name="t", capacity=10), max_wait=0.2, metrics=ReplayMetrics(registry))
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        t.sample(1, timeout=60)
    assert time.monotonic() - start < 1.0
    blocked = sample_value(registry, "mamql_replay_rate_limiter_blocked_seconds_total", {"table": "t", "op": "sample"})
    assert 0.15 < blocked < 1.0


def test_close_wakes_waiters_with_unavailable():
    t = table(min_size_to_sample=5)
    threading.Timer(0.1, t.close).start()
    with pytest.raises(Unavailable):
        t.sample(1, timeout=5)


def test_zero_timeout_never_waits():
    t = table()
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        t.sample(1, timeout=0)
    assert time.monotonic() - start < 0.1
