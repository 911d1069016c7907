"""Port files: a server binds port 0 and reports the ports it got in a small JSON file.

Nothing hands a port out before binding: a port picked up front (bind 0, close, pass the number on)
can be taken by another process, or by a sibling that also binds 0, before its server binds it.
The file, {"grpc": N, "metrics": M} (null for a server the process does not run), is written
atomically after binding, so a reader sees either no file or a whole one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_port_file(path: str | Path, grpc: int | None = None, metrics: int | None = None) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps({"grpc": grpc, "metrics": metrics}))
    os.replace(tmp, path)


def read_port_file(path: str | Path) -> dict[str, int | None] | None:
    """{"grpc": N | None, "metrics": M | None}, or None while the file does not exist."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"port file {path}: expected a JSON object, got {data!r}")
    return {key: _port(data.get(key), path) for key in ("grpc", "metrics")}


def _port(value, path) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"port file {path}: {value!r} is not a port")
    return value
