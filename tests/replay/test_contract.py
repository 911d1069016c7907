"""One contract, two backends: LocalReplay and ReplayClient against a real ReplayServer."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mamql.replay.errors import (DeadlineExceeded, FailedPrecondition, InvalidArgument, ResourceExhausted,
                           TableNotFound)

from replay_helpers import gems_batch, small_batch


def test_insert_then_sample_returns_stored_rows_with_keys(backend):
    replay, _ = backend
    batch = gems_batch(20)
    assert replay.insert("online", batch, timeout=1) == 20
    sample = replay.sample("online", 16, timeout=1)
    assert sample.keys.dtype == np.uint64 and sample.keys.shape == (16,)
    assert set(sample.batch) == set(batch)
    for i, key in enumerate(sample.keys):
        assert sample.batch["step"][i] == batch["step"][key]  # key = insertion index
        np.testing.assert_array_equal(sample.batch["obs/agent_1"][i], batch["obs/agent_1"][key])
    assert (sample.batch["policy_version"] == 3).all()


def test_info_reports_size_schema_bytes_and_counters(backend):
    replay, _ = backend
    replay.insert("online", gems_batch(10), timeout=1)
    replay.sample("online", 4, timeout=1)
    info = replay.info()["online"]
    assert (info.size, info.capacity, info.inserted, info.sampled) == (10, 1000, 10, 4)
    assert info.schema["obs/agent_0"] == ("uint8", (5, 15, 15))
    assert info.bytes == 1000 * sum(np.dtype(d).itemsize * int(np.prod(s)) for d, s in info.schema.values())
    assert replay.info()["queue"].schema == {}


def test_fifo_sampler_hands_out_items_in_order_once(backend):
    replay, _ = backend
    replay.insert("queue", small_batch(10), timeout=1)
    assert list(replay.sample("queue", 4, timeout=1).keys) == [0, 1, 2, 3]
    assert list(replay.sample("queue", 4, timeout=1).keys) == [4, 5, 6, 7]
    with pytest.raises(DeadlineExceeded):
        replay.sample("queue", 4, timeout=0.2)  # only 2 unread


def test_lifo_sampler_returns_most_recent_first(backend):
    replay, _ = backend
    replay.insert("recent", small_batch(10), timeout=1)
    sample = replay.sample("recent", 3, timeout=1)
    assert list(sample.keys) == [9, 8, 7]
    assert list(sample.batch["action/a"]) == [9, 8, 7]


def test_fifo_eviction_when_full(backend):
    replay, _ = backend
    replay.insert("small", small_batch(6), timeout=1)
    replay.insert("small", small_batch(6, start=6), timeout=1)
    info = replay.info()["small"]
    assert (info.size, info.inserted) == (8, 12)
    keys = replay.sample("small", 200, timeout=1).keys
    assert keys.min() >= 4 and keys.max() <= 11
    sample = replay.sample("small", 50, timeout=1)
    np.testing.assert_array_equal(sample.batch["action/a"], sample.keys.astype(np.int64))


def test_schema_mismatch_is_invalid_and_stores_nothing(backend):
    replay, _ = backend
    replay.insert("online", small_batch(4), timeout=1)
    bad = small_batch(4)
    bad["obs/a"] = bad["obs/a"].astype(np.float64)
    with pytest.raises(InvalidArgument) as err:
        replay.insert("online", bad, timeout=1)
    assert err.value.code == "INVALID_ARGUMENT" and "float64" in str(err.value)
    assert replay.info()["online"].size == 4


def test_nan_rejected(backend):
    replay, _ = backend
    bad = small_batch(4)
    bad["obs/a"][2, 1] = np.nan
    with pytest.raises(InvalidArgument, match="non-finite"):
        replay.insert("online", bad, timeout=1)
    assert replay.info()["online"].size == 0


def test_unknown_table_not_found(backend):
    replay, _ = backend
    with pytest.raises(TableNotFound) as err:
        replay.insert("nope", small_batch(1), timeout=1)
    assert err.value.code == "NOT_FOUND"
    with pytest.raises(TableNotFound):
        replay.sample("nope", 1, timeout=1)


def test_read_only_table_refuses_inserts_but_loads(backend):
    replay, load = backend
    with pytest.raises(FailedPrecondition):
        replay.insert("expert", small_batch(4), timeout=1)
    assert load("expert", small_batch(4)) == 4
    assert replay.sample("expert", 2, timeout=1).batch["obs/a"].shape == (2, 3)


def test_batch_larger_than_capacity_exhausts(backend):
    replay, _ = backend
    with pytest.raises(ResourceExhausted):
        replay.insert("small", small_batch(9), timeout=1)
    assert replay.info()["small"].size == 0


def test_blocked_sample_times_out_quickly(backend):
    replay, _ = backend
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as err:
        replay.sample("online", 4, timeout=0.3)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2.0
    assert isinstance(err.value, TimeoutError)


def test_invalid_batch_size(backend):
    replay, _ = backend
    replay.insert("online", small_batch(2), timeout=1)
    with pytest.raises(InvalidArgument):
        replay.sample("online", 0, timeout=1)
