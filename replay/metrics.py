"""The replay's Prometheus metrics (names from DESIGN.md), on a registry passed in."""

from __future__ import annotations

import threading

from mamql.metrics import LATENCY_BUCKETS, Counter, Gauge, Histogram
from mamql.phases import REPLAY_DOC, REPLAY_PHASES

_waits = threading.local()


def thread_blocked_seconds() -> float:
    """Rate-limiter wait of the calling thread so far (all tables): the difference across one table
    call is that call's wait, which the server books as `<op>_blocked` and the rest as work."""
    return getattr(_waits, "seconds", 0.0)


class _ThreadTallyCounter(Counter):
    """A Counter whose increments are also added to the calling thread's tally
    (thread_blocked_seconds). The table counts its rate-limiter waits into it; the tally lets the
    server split a call's time into wait and work without the table knowing about phases."""

    def inc(self, amount: float = 1, exemplar=None) -> None:
        super().inc(amount, exemplar)
        _waits.seconds = getattr(_waits, "seconds", 0.0) + amount


class ReplayMetrics:
    def __init__(self, registry):
        def counter(name, doc, labels, kind=Counter):
            return kind(name, doc, labels, registry=registry)

        self.inserted_transitions = counter("mamql_replay_inserted_transitions", "Transitions stored", ["table"])
        self.inserted_batches = counter("mamql_replay_inserted_batches", "Batches stored", ["table"])
        self.sampled_transitions = counter("mamql_replay_sampled_transitions", "Transitions sampled", ["table"])
        self.sampled_batches = counter("mamql_replay_sampled_batches", "Batches sampled", ["table"])
        self.blocked_seconds = counter(
            "mamql_replay_rate_limiter_blocked_seconds", "Time calls waited on the rate limiter", ["table", "op"],
            kind=_ThreadTallyCounter,
        )
        self.rejected = counter("mamql_replay_rejected_requests", "Requests refused, by reason", ["reason"])
        self.phase_seconds = counter("mamql_replay_phase_seconds", REPLAY_DOC, ["phase"])
        self.phases = {p: self.phase_seconds.labels(p) for p in REPLAY_PHASES}  # all four exported from the start
        self.table_size = Gauge("mamql_replay_table_size", "Transitions held", ["table"], registry=registry)
        self.table_capacity = Gauge("mamql_replay_table_capacity", "Table capacity", ["table"], registry=registry)
        self.table_bytes = Gauge("mamql_replay_table_bytes", "Preallocated bytes", ["table"], registry=registry)
        self.insert_latency = Histogram(
            "mamql_replay_insert_latency_seconds", "Insert time incl. waits", ["table"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.sample_latency = Histogram(
            "mamql_replay_sample_latency_seconds", "Sample time incl. waits", ["table"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.connected_clients = Gauge(
            "mamql_replay_connected_clients", "Open Insert/Sample streams", registry=registry
        )

    def watch_table(self, table) -> None:
        """Gauges read the table when scraped, so they can never go stale."""
        self.table_size.labels(table.name).set_function(lambda: table.size)
        self.table_capacity.labels(table.name).set_function(lambda: table.capacity)
        self.table_bytes.labels(table.name).set_function(lambda: table.nbytes)
