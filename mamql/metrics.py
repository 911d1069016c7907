"""Prometheus metrics: one registry per process, passed in (never global), served on /metrics.

Names follow `mamql_<component>_<what>_<unit>`: counters end in `_total`, latency histograms in
`_seconds`. Tests create their own registry and read values from it directly.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import Counter, Gauge, Histogram, Summary  # noqa: F401  (re-exported for services)
from prometheus_client import ProcessCollector, PlatformCollector

log = logging.getLogger("mamql.metrics")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def new_registry(process_metrics: bool = True) -> CollectorRegistry:
    """A fresh registry; with process CPU/memory metrics (process_*) for the Grafana panels."""
    registry = CollectorRegistry(auto_describe=True)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


class MetricsServer:
    """Serves a registry's /metrics over HTTP on host:port (0 = a free port, see `.port`)."""

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0):
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port: int = self._server.server_port
        log.info("serving metrics on http://%s:%d/metrics", host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def sample_value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one sample (0.0 when absent): for tests and status lines."""
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)


