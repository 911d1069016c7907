"""What every replay backend offers: the in-process tables and the gRPC client.

Both implement `Replay`, and one contract test suite runs against each, so code written against the
in-process tables (the single-process trainer) runs unchanged against a remote replay service.
A batch is a dict of equal-length numpy arrays keyed by field name (see mamql.batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

import numpy as np


@dataclass(frozen=True)
class Sample:
    batch: dict[str, np.ndarray]  # field -> [batch_size, ...]
    keys: np.ndarray  # uint64 item keys (insertion index), one per row


@dataclass(frozen=True)
class TableInfo:
    name: str
    size: int  # transitions held now
    capacity: int
    bytes: int  # preallocated storage
    inserted: int  # transitions ever inserted
    sampled: int  # transitions ever sampled
    schema: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # field -> (dtype, shape)


class Replay(Protocol):
    def insert(self, table: str, batch: Mapping[str, np.ndarray], timeout: float | None = None) -> int:
        """All-or-nothing insert; returns the number of transitions stored. Blocks at most `timeout`."""
        ...

    def sample(self, table: str, batch_size: int, timeout: float | None = None) -> Sample:
        """Blocks until the table's rate limiter allows it, at most `timeout` seconds."""
        ...

    def info(self) -> dict[str, TableInfo]:
        ...
