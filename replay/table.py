"""One replay table: ring storage + sampler + rate limiter behind one Condition.

Validation (schema, dtype, NaN) happens before taking the lock; the lock covers only the copy into
or out of the ring, so many writers and samplers proceed concurrently. Every wait has a deadline
(capped by the service's `wait_timeout_s`) and ends in DeadlineExceeded, never a hang.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping

import numpy as np

from mamql.batch import BatchError, Schema, batch_size, check_schema, find_non_finite, schema_of
from mamql.codec import ITEMSIZE
from mamql.config import TableConfig
from mamql.replay.errors import (DeadlineExceeded, FailedPrecondition, InvalidArgument, ResourceExhausted,
                           Unavailable)
from mamql.replay.interface import Sample, TableInfo
from mamql.replay.rate_limiter import RateLimiter
from mamql.replay.sampler import make_sampler
from mamql.replay.storage import RingStorage

ALLOWED_DTYPES = frozenset(ITEMSIZE) - {"bfloat16"}


def normalize_schema(schema: Mapping) -> Schema:
    """Config form ({field: [dtype, [dims]]}) -> Schema; refuses dtypes the wire cannot carry."""
    out: Schema = {}
    for name, spec in schema.items():
        dtype, shape = spec
        dtype = np.dtype(dtype).name
        if dtype not in ALLOWED_DTYPES:
            raise ValueError(f"field {name!r}: dtype {dtype} is not supported")
        out[str(name)] = (dtype, tuple(int(d) for d in shape))
    return out


class Table:
    def __init__(self, config: TableConfig, *, reject_nan: bool = True, max_wait: float = 30.0,
                 metrics=None, seed: int | None = None):
        if config.remover != "fifo":
            raise ValueError(f"table {config.name!r}: only the fifo remover exists, got {config.remover!r}")
        self.config = config
        self.name = config.name
        self.capacity = int(config.capacity)
        if self.capacity <= 0:
            raise ValueError(f"table {config.name!r}: capacity must be positive")
        self.read_only = config.read_only
        self.reject_nan = reject_nan
        self.max_wait = float(max_wait)
        self.sampler = make_sampler(config.sampler, seed)
        self.limiter = RateLimiter(config.min_size_to_sample, config.samples_per_insert, config.error_buffer)
        self.metrics = metrics
        self._cond = threading.Condition()
        self._closed = False
        self._draining = False  # drain(): inserts no longer wait for the rate limiter
        schema = getattr(config, "schema", None)
        self.storage: RingStorage | None = RingStorage(self.capacity, normalize_schema(schema)) if schema else None
        if metrics is not None:
            metrics.watch_table(self)

    # ------------------------------------------------------------------ properties read by gauges
    @property
    def size(self) -> int:
        return self.storage.size if self.storage else 0

    @property
    def nbytes(self) -> int:
        return self.storage.nbytes if self.storage else 0

    @property
    def schema(self) -> Schema:
        return dict(self.storage.schema) if self.storage else {}

    # ------------------------------------------------------------------ validation
    def validate(self, batch: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Check a batch against the table without the lock; returns (batch, rows)."""
        if not isinstance(batch, Mapping) or not batch:
            raise InvalidArgument(f"table {self.name!r}: a batch must be a non-empty dict of arrays")
        arrays = {str(k): np.asarray(v) for k, v in batch.items()}
        for name, arr in arrays.items():
            if arr.dtype.name not in ALLOWED_DTYPES:
                raise InvalidArgument(f"field {name!r}: dtype {arr.dtype} is not supported")
            if arr.ndim == 0:
                raise InvalidArgument(f"field {name!r} is a scalar; fields need a leading batch dimension")
        try:
            n = batch_size(arrays)
            storage = self.storage
            if storage is not None:
                check_schema(arrays, storage.schema)
        except BatchError as exc:
            raise InvalidArgument(f"table {self.name!r}: {exc}") from None
        if n == 0:
            raise InvalidArgument(f"table {self.name!r}: empty batch")
        if n > self.capacity:
            raise ResourceExhausted(f"table {self.name!r}: batch of {n} exceeds the capacity {self.capacity}")
        if self.reject_nan:
            bad = find_non_finite(arrays)
            if bad:
                raise InvalidArgument(f"table {self.name!r}: non-finite values in {bad}")
        return arrays, n

    # ------------------------------------------------------------------ operations
    def insert(self, batch: Mapping[str, np.ndarray], timeout: float | None = None) -> int:
        """Network/actor insert: refused on read-only tables, waits on the rate limiter."""
        if self.read_only:
            raise FailedPrecondition(f"table {self.name!r} is read-only (load demonstrations with load())")
        return self._insert(batch, timeout, limited=True)

    def load(self, batch: Mapping[str, np.ndarray]) -> int:
        """Fill a table (e.g. expert demos) bypassing read_only and the rate limiter."""
        return self._insert(batch, None, limited=False)

    def _insert(self, batch, timeout, limited: bool) -> int:
        start = time.monotonic()
        arrays, n = self.validate(batch)
        with self._cond:
            self._wait(lambda: not limited or self._draining or self.limiter.can_insert(), timeout, "insert", start)
            if self.storage is None:
                self.storage = RingStorage(self.capacity, schema_of(arrays))
            else:
                try:  # the schema may have been fixed by a concurrent first insert
                    check_schema(arrays, self.storage.schema)
                except BatchError as exc:
                    raise InvalidArgument(f"table {self.name!r}: {exc}") from None
            self.storage.write(arrays, n)
            self.limiter.inserted += n
            self._cond.notify_all()
        if self.metrics is not None:
            self.metrics.inserted_transitions.labels(self.name).inc(n)
            self.metrics.inserted_batches.labels(self.name).inc()
            self.metrics.insert_latency.labels(self.name).observe(time.monotonic() - start)
        return n

    def sample(self, n: int, timeout: float | None = None,
               into: Callable[[Schema, int], dict[str, np.ndarray]] | None = None) -> Sample:
        """n rows picked by the sampler. `into(schema, n)`, when given, returns the arrays to gather
        into (called under the lock, once the schema is known); the batch is then those arrays."""
        start = time.monotonic()
        n = int(n)
        if n <= 0:
            raise InvalidArgument(f"table {self.name!r}: batch_size must be positive, got {n}")
        if self.sampler.name != "uniform" and n > self.capacity:
            raise InvalidArgument(
                f"table {self.name!r}: {self.sampler.name} sampler cannot return {n} > capacity {self.capacity}"
            )
        with self._cond:
            def ready():
                s = self.storage
                return (s is not None and self.limiter.can_sample(s.size)
                        and self.sampler.ready(s.oldest_key, s.next_key, n))

            self._wait(ready, timeout, "sample", start)
            s = self.storage
            keys = self.sampler.take(s.oldest_key, s.next_key, n)
            batch = s.gather(keys, None if into is None else into(s.schema, n))
            self.limiter.sampled += n
            self._cond.notify_all()
        if self.metrics is not None:
            self.metrics.sampled_transitions.labels(self.name).inc(n)
            self.metrics.sampled_batches.labels(self.name).inc()
            self.metrics.sample_latency.labels(self.name).observe(time.monotonic() - start)
        return Sample(batch=batch, keys=keys)

    def _wait(self, predicate, timeout: float | None, op: str, start: float) -> None:
        """Wait (lock held) until predicate(), the deadline, or close()."""
        if self._closed:
            raise Unavailable(f"table {self.name!r} is shut down")
        if predicate():
            return
        limit = self.max_wait if timeout is None else min(max(float(timeout), 0.0), self.max_wait)
        deadline = start + limit
        began = time.monotonic()
        try:
            while not predicate():
                if self._closed:
                    raise Unavailable(f"table {self.name!r} is shut down")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded(
                        f"table {self.name!r}: {op} blocked by the rate limiter for {limit:g}s "
                        f"(size {self.size}, {self.limiter.describe()}, sampler {self.sampler.name})"
                    )
                self._cond.wait(remaining)
        finally:
            if self.metrics is not None:
                self.metrics.blocked_seconds.labels(self.name, op).inc(time.monotonic() - began)

    def drain(self) -> None:
        """Admit every insert from now on, rate limiter or not: at shutdown the actors' queued
        batches (bounded by their send queues) go in instead of being dropped. Counts stay exact."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter with Unavailable (server shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def info(self) -> TableInfo:
        with self._cond:
            return TableInfo(
                name=self.name, size=self.size, capacity=self.capacity, bytes=self.nbytes,
                inserted=self.limiter.inserted, sampled=self.limiter.sampled, schema=self.schema,
            )

    # ------------------------------------------------------------------ checkpoints
    def snapshot(self) -> dict:
        """Copies of the held rows and counters, taken under the lock (written to disk outside it)."""
        with self._cond:
            s = self.storage
            return {
                "name": self.name,
                "capacity": self.capacity,
                "sampler": self.sampler.name,
                "sampler_state": self.sampler.state(),
                "inserted": self.limiter.inserted,
                "sampled": self.limiter.sampled,
                "next_key": s.next_key if s else 0,
                "schema": {k: [d, list(sh)] for k, (d, sh) in s.schema.items()} if s else {},
                "arrays": s.ordered() if s else {},
            }

    def restore(self, snap: Mapping) -> None:
        """Replace contents with a snapshot (from checkpoint.load); schema must match a fixed one."""
        schema = normalize_schema(snap["schema"])
        with self._cond:
            if self.storage is not None and self.storage.size and self.storage.schema != schema:
                raise ValueError(f"table {self.name!r}: checkpoint schema differs from the table's")
            if schema:
                if self.storage is None or self.storage.schema != schema:
                    self.storage = RingStorage(self.capacity, schema)
                self.storage.restore(snap["arrays"], int(snap["next_key"]))
            self.limiter.inserted = int(snap["inserted"])
            self.limiter.sampled = int(snap["sampled"])
            if snap.get("sampler") == self.sampler.name:
                self.sampler.load_state(snap.get("sampler_state", {}))
            self._cond.notify_all()
