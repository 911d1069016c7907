"""LocalReplay: the in-process `Replay` (single-process trainer, and the server's engine)."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from mamql.config import ReplayConfig, TableConfig
from mamql.replay.errors import ReplayError, TableNotFound
from mamql.replay.interface import Sample, TableInfo
from mamql.replay.metrics import ReplayMetrics
from mamql.replay.table import Table


class LocalReplay:
    """Named tables built from `ReplayConfig.tables`; thread-safe; implements replay.interface.Replay."""

    def __init__(self, config: ReplayConfig | None = None, registry=None, seed: int | None = None):
        self.config = config or ReplayConfig()
        self.metrics = ReplayMetrics(registry) if registry is not None else None
        self.tables: dict[str, Table] = {}
        for i, table_config in enumerate(self.config.tables):
            self._add(table_config, None if seed is None else seed + i)

    def _add(self, table_config: TableConfig, seed: int | None) -> Table:
        if table_config.name in self.tables:
            raise ValueError(f"duplicate table name {table_config.name!r}")
        table = Table(table_config, reject_nan=self.config.reject_nan, max_wait=self.config.wait_timeout_s,
                      metrics=self.metrics, seed=seed)
        self.tables[table_config.name] = table
        return table

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise TableNotFound(f"no table {name!r}; tables: {', '.join(self.tables) or 'none'}") from None

    def insert(self, table: str, batch: Mapping[str, np.ndarray], timeout: float | None = None) -> int:
        return self._counted(lambda: self.table(table).insert(batch, timeout))

    def load(self, table: str, batch: Mapping[str, np.ndarray]) -> int:
        """Fill a (typically read-only) table, e.g. with expert demonstrations; no rate limiting."""
        return self._counted(lambda: self.table(table).load(batch))

    def sample(self, table: str, batch_size: int, timeout: float | None = None, into=None) -> Sample:
        """`into`: see Table.sample (the server gathers straight into its response message)."""
        return self._counted(lambda: self.table(table).sample(batch_size, timeout, into))

    def info(self) -> dict[str, TableInfo]:
        return {name: t.info() for name, t in self.tables.items()}

    def reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()

    def _counted(self, call):
        try:
            return call()
        except ReplayError as exc:
            self.reject(exc.code.lower())
            raise

    def drain(self) -> None:
        """Shutdown: inserts stop waiting for the rate limiters (Table.drain)."""
        for t in self.tables.values():
            t.drain()

    def close(self) -> None:
        for t in self.tables.values():
            t.close()

    def snapshot(self) -> list[dict]:
        return [t.snapshot() for t in self.tables.values()]

    def restore(self, snapshots: Iterable[Mapping]) -> None:
        for snap in snapshots:
            self.table(snap["name"]).restore(snap)
