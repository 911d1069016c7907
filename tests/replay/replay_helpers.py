"""Test helpers for tests/replay (a uniquely named module: conftest names clash across folders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from mamql.config import Config, ReplayConfig, TableConfig, with_updates

REPO = Path(__file__).resolve().parents[2]

TABLES = (
    TableConfig(name="online", capacity=1000),
    TableConfig(name="expert", capacity=100, read_only=True),
    TableConfig(name="queue", capacity=64, sampler="fifo"),
    TableConfig(name="recent", capacity=64, sampler="lifo"),
    TableConfig(name="small", capacity=8),
)


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


def small_batch(n: int, start: int = 0) -> dict[str, np.ndarray]:
    return {
        "obs/a": np.arange(start * 3, (start + n) * 3, dtype=np.float32).reshape(n, 3),
        "action/a": np.arange(start, start + n, dtype=np.int64),
        "policy_version": np.full(n, 5, np.int64),
    }


def make_config(tables=TABLES, **replay) -> Config:
    """Port 0, no metrics server, no exit checkpoint unless asked."""
    cfg = Config()
    cfg = with_updates(cfg, replay={"port": 0, "checkpoint_on_exit": False, "wait_timeout_s": 5.0, **replay},
                       metrics={"enabled": False, "port": 0})
    return Config(**{**cfg.__dict__, "replay": ReplayConfig(**{**cfg.replay.__dict__, "tables": tuple(tables)})})


def spawn_server(tmp_path: Path, *args: str, env_extra: dict | None = None):
    """`python -m mamql.cli replay` in a subprocess; returns (process, port)."""
    port_file = tmp_path / f"port-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "replay.cli", "--set", "replay.port=0", "--set", "metrics.port=0",
           "--port-file", str(port_file), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not port_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"replay exited {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("replay subprocess did not report its port")
        time.sleep(0.05)
    return proc, json.loads(port_file.read_text())["grpc"]
