"""Replay checkpoints: one raw little-endian bytes file per field + a JSON header, no pickle.

Layout: DIR/header.json and DIR/t<i>_f<j>.bin. The header holds, per table, the schema, counters,
next key, sampler state and each file's byte length and sha256. `save` snapshots under the table
locks (a copy), writes outside them into a temporary sibling directory, fsyncs, then renames it into
place. `load` verifies every length and checksum before building arrays and raises CheckpointError
on anything corrupt or truncated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mamql.replay.table import ALLOWED_DTYPES

FORMAT = "mamql-replay-checkpoint"
VERSION = 1
HEADER = "header.json"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, corrupt, truncated or of another format."""


def save(snapshots: list[dict], path: str | Path) -> int:
    """Write table snapshots (Table.snapshot()) to `path` atomically; returns transitions saved."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    total = 0
    try:
        tables = []
        for i, snap in enumerate(snapshots):
            files = {}
            for j, (name, arr) in enumerate(snap["arrays"].items()):
                data = np.ascontiguousarray(arr, dtype=np.dtype(arr.dtype).newbyteorder("<")).tobytes()
                fname = f"t{i}_f{j}.bin"
                _write(tmp / fname, data)
                files[name] = {"file": fname, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            rows = len(next(iter(snap["arrays"].values()))) if snap["arrays"] else 0
            total += rows
            header = {k: v for k, v in snap.items() if k != "arrays"}
            tables.append({**header, "rows": rows, "files": files})
        _write(tmp / HEADER, json.dumps({"format": FORMAT, "version": VERSION, "tables": tables}).encode())
        _fsync_dir(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return total


def load(path: str | Path) -> list[dict]:
    """Snapshots as `Table.restore` expects them; every file verified first."""
    path = Path(path)
    try:
        header = json.loads((path / HEADER).read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {HEADER}; not a replay checkpoint") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}/{HEADER}: not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{path}: unknown checkpoint format/version")
    snapshots = []
    try:
        for table in header["tables"]:
            rows = int(table["rows"])
            arrays = {}
            for name, spec in table["files"].items():
                dtype, shape = table["schema"][name]
                if dtype not in ALLOWED_DTYPES:
                    raise CheckpointError(f"{path}: field {name!r} has unsupported dtype {dtype!r}")
                arrays[name] = _read(path / spec["file"], spec, dtype, (rows, *shape))
            snapshots.append({**{k: v for k, v in table.items() if k not in ("files", "rows")}, "arrays": arrays})
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: malformed header ({exc!r})") from None
    return snapshots


def _read(file: Path, spec: dict, dtype: str, shape: tuple) -> np.ndarray:
    if Path(spec["file"]).name != spec["file"]:
        raise CheckpointError(f"{file}: file names must not contain directories")
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing") from None
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(data) != spec["bytes"] or len(data) != expected:
        raise CheckpointError(f"{file}: {len(data)} bytes, expected {expected} (truncated?)")
    if hashlib.sha256(data).hexdigest() != spec["sha256"]:
        raise CheckpointError(f"{file}: sha256 mismatch (corrupt)")
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()


def _write(file: Path, data: bytes) -> None:
    with open(file, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
