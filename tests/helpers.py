"""Helpers shared by the tests (pytest's pythonpath holds tests/): one copy of each, imported
everywhere (replay_helpers and reliability_helpers re-export them for their importers)."""

from __future__ import annotations

import socket
import subprocess
import time

import numpy as np


def free_port() -> int:
    """A port picked up front, for a test's single server that must start after its client (another
    process may take a port picked this way first: servers with clients bind 0 and report it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, procs=(), interval: float = 0.25):
    """Poll `predicate` until truthy (returned); fail after `timeout` s, or as soon as a watched
    process (one Popen or several) has exited."""
    procs = [procs] if isinstance(procs, subprocess.Popen) else [p for p in procs if p is not None]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"process {p.args} exited {p.returncode} while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def gems_batch(n: int, start: int = 0, actor: int = 0, agents=("agent_0", "agent_1")) -> dict[str, np.ndarray]:
    """n Gems-shaped transitions; `step` = start..start+n-1 identifies each row."""
    rng = np.random.default_rng(start + 7919 * actor)
    batch = {}
    for a in agents:
        batch[f"obs/{a}"] = rng.integers(0, 2, (n, 5, 15, 15), dtype=np.uint8)
        batch[f"action/{a}"] = rng.integers(0, 5, n).astype(np.int64)
        batch[f"reward/{a}"] = rng.random(n, dtype=np.float32)
        batch[f"next_obs/{a}"] = rng.integers(0, 2, (n, 5, 15, 15), dtype=np.uint8)
    batch["done"] = np.zeros(n, bool)
    batch["truncated"] = np.zeros(n, bool)
    batch["actor_id"] = np.full(n, actor, np.int32)
    batch["episode_id"] = np.zeros(n, np.int64)
    batch["step"] = np.arange(start, start + n, dtype=np.int32)
    batch["policy_version"] = np.full(n, 3, np.int64)
    return batch
