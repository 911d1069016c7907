"""Preallocated ring storage: one numpy array per field, indexed by item key modulo capacity.

Not thread-safe on its own; the table holds the lock. Item keys are insertion indices (uint64), so
the oldest held key is `next_key - size` and FIFO eviction is just overwriting the ring.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from mamql.batch import Schema


class RingStorage:
    def __init__(self, capacity: int, schema: Schema):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.schema: Schema = {k: (str(d), tuple(int(x) for x in s)) for k, (d, s) in schema.items()}
        # np.zeros maps pages lazily and every first write would page-fault (~10x slower inserts);
        # touching the memory once here makes the preallocation real.
        self.arrays = {k: np.empty((self.capacity, *s), dtype=d) for k, (d, s) in self.schema.items()}
        for arr in self.arrays.values():
            arr.fill(0)
        self.next_key = 0  # key of the next insert == transitions ever written
        self.size = 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    @property
    def oldest_key(self) -> int:
        return self.next_key - self.size

    def write(self, batch: Mapping[str, np.ndarray], n: int) -> None:
        """Append n rows (n <= capacity), overwriting the oldest when full."""
        start = self.next_key % self.capacity
        first = min(n, self.capacity - start)
        for name, dst in self.arrays.items():
            src = batch[name]
            dst[start:start + first] = src[:first]
            if first < n:
                dst[: n - first] = src[first:n]
        self.next_key += n
        self.size = min(self.size + n, self.capacity)

    def gather(self, keys: np.ndarray, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Copies of the rows at `keys` (which must be held), written into `out` when given (one
        [len(keys), *shape] array per field: the server passes views into its response message)."""
        pos = (keys % self.capacity).astype(np.int64)
        if out is None:
            return {name: arr[pos] for name, arr in self.arrays.items()}
        for name, arr in self.arrays.items():
            np.take(arr, pos, axis=0, out=out[name], mode="clip")  # positions are in range; "raise" would buffer
        return out

    def ordered(self) -> dict[str, np.ndarray]:
        """Copies of every held row, oldest first (for checkpoints)."""
        return self.gather(np.arange(self.oldest_key, self.next_key, dtype=np.uint64))

    def restore(self, rows: Mapping[str, np.ndarray], next_key: int) -> None:
        """Refill from `ordered()` output whose last row had key `next_key - 1`."""
        n = len(next(iter(rows.values()))) if rows else 0
        keep = min(n, self.capacity)
        self.next_key = next_key - keep
        self.size = 0
        if keep:
            self.write({k: v[n - keep:] for k, v in rows.items()}, keep)
        self.next_key = next_key
