"""A small process supervisor for `mamql local`: start real subprocesses, watch, stop them in order.

Deliberately plain: each child is a `mamql <command>` process with its own log file, ports are
chosen up front and passed on the command line, and shutdown sends SIGTERM (then SIGKILL after a
grace period) in the reverse order of the data flow. On a cluster, Kubernetes or Slurm does this
job instead (deploy/); nothing here schedules work across machines.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("mamql.local")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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
    metrics_port: int = 0
    popen: subprocess.Popen | None = None
    restarts: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Supervisor:
    """`die_with_parent=True` has the kernel SIGKILL the children if this process dies (Linux), for
    long unattended jobs whose children must not outlive their consumer."""

    def __init__(self, log_dir: Path, die_with_parent: bool = False):
        self.log_dir = log_dir
        self.die_with_parent = die_with_parent
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: dict[str, Child] = {}

    def start(self, name: str, args: list[str], metrics_port: int = 0) -> Child:
        child = self.children.get(name) or Child(name, args, self.log_dir / f"{name}.log", metrics_port)
        self.children[name] = child
        log_file = open(child.log_path, "ab")
        child.popen = subprocess.Popen(
            [sys.executable, "-m", "mamql.cli", *child.args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches only us; we stop children in order
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        log_file.close()
        log.info("started %s (pid %d): mamql %s", name, child.popen.pid, " ".join(args))
        return child

    def restart(self, name: str) -> Child:
        child = self.children[name]
        child.restarts += 1
        return self.start(name, child.args, child.metrics_port)

    def wait_ready(self, child: Child, port: int, timeout: float = 120.0) -> None:
        """Wait until the child listens on `port`; raise with the log's tail if it died or hung."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.popen.returncode}:\n{self.tail(child)}")
            if port_open("127.0.0.1", port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{child.name} did not listen on port {port} within {timeout}s:\n{self.tail(child)}")

    def tail(self, child: Child, lines: int = 20) -> str:
        try:
            return "\n".join(child.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def dead(self) -> list[Child]:
        return [c for c in self.children.values() if c.popen is not None and c.popen.poll() is not None]

    def stop(self, names: list[str], grace: float = 20.0) -> dict[str, int]:
        """SIGTERM the named children together, wait up to `grace` s, SIGKILL stragglers."""
        targets = [self.children[n] for n in names if n in self.children and self.children[n].popen]
        for child in targets:
            if child.alive():
                child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes = {}
        for child in targets:
            try:
                codes[child.name] = child.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0fs: killing it", child.name, grace)
                os.killpg(child.popen.pid, signal.SIGKILL)
                codes[child.name] = child.popen.wait()
        return codes
