"""A small process supervisor for `mamql local`: start real subprocesses, watch, stop them in order.

Deliberately plain: each child is a `mamql <command>` process with its own log file; servers bind
port 0 and report what they bound in a port file (mamql/portfile.py), readiness is that file plus a
grpc.health.v1 SERVING answer, and shutdown sends SIGTERM (then SIGKILL after a grace period) in the
reverse order of the data flow. On a cluster, Kubernetes or Slurm does this job instead (deploy/);
nothing here schedules work across machines.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

from mamql.portfile import read_port_file

log = logging.getLogger("mamql.local")


def scrape(url: str, timeout: float = 1.0) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted label items): value}; empty when unreachable."""
    try:
        text = urllib.request.urlopen(url, timeout=timeout).read().decode()
    except OSError:
        return {}
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: dict, name: str, **labels) -> float:
    """Sum of a metric over every label set that includes `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@dataclass
class Child:
    name: str
    args: list[str]
    log_path: Path
    port_file: Path | None = None  # passed as --port-file; the child reports its bound ports there
    metrics_port: int = 0  # 0 until reported
    grpc_port: int = 0
    popen: subprocess.Popen | None = None
    restarts: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def read_ports(self) -> bool:
        """Take the ports from the child's port file once it exists; True when they are known."""
        if self.port_file is None:
            return True
        ports = read_port_file(self.port_file)
        if ports is None:
            return False
        self.grpc_port, self.metrics_port = ports["grpc"] or 0, ports["metrics"] or 0
        return True


def grpc_serving(security=None, timeout: float = 2.0) -> Callable[[str], bool]:
    """A readiness check for `Supervisor.wait_ready`: the server at an address answers grpc.health.v1
    SERVING (over TLS when `security` has a CA). A TCP connect is not enough: it succeeds against
    whatever listens on the port, and before the service is registered."""
    from mamql.protos.rpc import health_check

    return lambda address: health_check(address, timeout=timeout, security=security)


PARENT_ENV = "MAMQL_DIE_WITH_PARENT"  # pid of the supervisor; the child arms PR_SET_PDEATHSIG itself


def die_with_parent_from_env() -> None:
    """Called first thing in a `mamql` child: if a supervisor asked for it, have the kernel SIGKILL us
    when it dies (PR_SET_PDEATHSIG), and exit at once if it already died before we got here.

    Armed after exec, in the child, and not in a `preexec_fn`: code between fork and exec in a parent
    with threads (gRPC's, from the health checks) can deadlock the child before exec, and Popen with
    it, which hung `mamql local` under load."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the supervisor died before prctl: nobody is left to signal us
        os._exit(1)


class Supervisor:
    """`die_with_parent=True` has the kernel SIGKILL the children when this process dies (Linux), even
    by kill -9, so that no child outlives its supervisor under PID 1. The kernel sends it when the
    *thread* that started the child exits: call `start`/`restart` from a thread that outlives the
    children (the main thread, or the one that also stops them)."""

    def __init__(self, log_dir: Path, die_with_parent: bool = False):
        self.log_dir = log_dir
        self.die_with_parent = die_with_parent
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: dict[str, Child] = {}

    def start(self, name: str, args: list[str], port_file: bool = False) -> Child:
        """Start `mamql ARGS`; with `port_file` the child gets `--port-file` and reports its ports
        there (see `wait_ready`)."""
        child = self.children.get(name) or Child(name, args, self.log_dir / f"{name}.log")
        if port_file and child.port_file is None:
            child.port_file = self.log_dir / f"{name}.ports.json"
        self.children[name] = child
        extra = []
        if child.port_file is not None:
            child.port_file.unlink(missing_ok=True)  # a restarted child reports afresh
            child.grpc_port = child.metrics_port = 0
            extra = ["--port-file", str(child.port_file)]
        env = {**os.environ, PARENT_ENV: str(os.getpid())} if self.die_with_parent else None
        log_file = open(child.log_path, "ab")
        child.popen = subprocess.Popen(
            [sys.executable, "-m", "mamql.cli", *child.args, *extra],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches only us; we stop children in order
            env=env,  # with PARENT_ENV the child arms PR_SET_PDEATHSIG (die_with_parent_from_env)
        )
        log_file.close()
        log.info("started %s (pid %d): mamql %s", name, child.popen.pid, " ".join(args))
        return child

    def restart(self, name: str) -> Child:
        child = self.children[name]
        child.restarts += 1
        return self.start(name, child.args)

    def wait_ready(self, child: Child, healthy: Callable[[str], bool] | None = None, timeout: float = 120.0) -> None:
        """Wait until the child has written its port file and, given `healthy` (e.g. `grpc_serving()`),
        until healthy("127.0.0.1:<its grpc port>"); raise with the log's tail if it died or hung."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.popen.returncode}:\n{self.tail(child)}")
            if child.read_ports():
                if healthy is None:
                    return
                if not child.grpc_port:
                    raise RuntimeError(f"{child.name} reported no gRPC port in {child.port_file}")
                if healthy(f"127.0.0.1:{child.grpc_port}"):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{child.name} was not ready within {timeout:.0f}s:\n{self.tail(child)}")

    def tail(self, child: Child, lines: int = 20) -> str:
        try:
            return "\n".join(child.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def dead(self) -> list[Child]:
        return [c for c in self.children.values() if c.popen is not None and c.popen.poll() is not None]

    def signal(self, names: list[str], sig: int) -> None:
        """Send `sig` to the named children that are alive (no wait)."""
        for name in names:
            child = self.children.get(name)
            if child is not None and child.alive():
                child.popen.send_signal(sig)

    def stop(self, names: list[str], grace: float = 20.0) -> dict[str, int]:
        """SIGTERM the named children together, wait up to `grace` s, SIGKILL stragglers."""
        targets = [self.children[n] for n in names if n in self.children and self.children[n].popen]
        self.signal([c.name for c in targets], signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes = {}
        for child in targets:
            try:
                codes[child.name] = child.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0fs: killing it", child.name, grace)
                os.killpg(child.popen.pid, signal.SIGKILL)
                codes[child.name] = child.popen.wait()
            log.info("stopped %s (exit %d)", child.name, codes[child.name])
        return codes
