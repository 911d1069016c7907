"""Test helpers for tests/replay (a uniquely named module: conftest names clash across folders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from helpers import gems_batch  # noqa: F401  (re-exported for the replay tests)
from mamql.config import Config, ReplayConfig, TableConfig, with_updates

REPO = Path(__file__).resolve().parents[2]

TABLES = (
    TableConfig(name="online", capacity=1000),
    TableConfig(name="expert", capacity=100, read_only=True),
    TableConfig(name="queue", capacity=64, sampler="fifo"),
    TableConfig(name="recent", capacity=64, sampler="lifo"),
    TableConfig(name="small", capacity=8),
)


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
    cmd = [sys.executable, "-m", "mamql.replay.cli", "--set", "replay.port=0", "--set", "metrics.port=0",
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
