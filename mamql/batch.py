"""The transition batch: a dict of equal-length numpy arrays keyed by field name.

Per-agent fields are `obs/<agent>`, `action/<agent>`, `reward/<agent>`, `next_obs/<agent>` (agents
may differ in observation shape); shared fields are `done`, `truncated`; metadata fields are
`actor_id`, `episode_id`, `step`, `policy_version`. The same names describe replay tables, the wire
format and demo datasets on disk.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

PER_AGENT_FIELDS = ("obs", "action", "reward", "next_obs")
SHARED_FIELDS = ("done", "truncated")
METADATA_FIELDS = ("actor_id", "episode_id", "step", "policy_version")
METADATA_DTYPES = {"actor_id": np.int32, "episode_id": np.int64, "step": np.int32, "policy_version": np.int64}

Batch = dict[str, np.ndarray]
Schema = dict[str, tuple[str, tuple[int, ...]]]  # field -> (dtype name, per-row shape)


class BatchError(ValueError):
    """A batch that is malformed: ragged lengths, wrong fields, wrong dtype or shape."""


def agent_field(kind: str, agent: str) -> str:
    return f"{kind}/{agent}"


def agents_of(batch_or_schema: Iterable[str]) -> list[str]:
    """Agent names, in first-seen order, from `obs/<agent>` keys."""
    seen: dict[str, None] = {}
    for key in batch_or_schema:
        if key.startswith("obs/"):
            seen[key[4:]] = None
    return list(seen)


def batch_size(batch: Mapping[str, np.ndarray]) -> int:
    """Rows in the batch; raises BatchError when the columns disagree."""
    sizes = {name: (arr.shape[0] if arr.ndim else -1) for name, arr in batch.items()}
    distinct = set(sizes.values())
    if not sizes:
        raise BatchError("empty batch: no fields")
    if len(distinct) != 1 or -1 in distinct:
        raise BatchError(f"fields have different lengths: {sizes}")
    return distinct.pop()


def schema_of(batch: Mapping[str, np.ndarray]) -> Schema:
    return {name: (arr.dtype.name, tuple(arr.shape[1:])) for name, arr in batch.items()}


def check_schema(batch: Mapping[str, np.ndarray], schema: Schema) -> None:
    """Raise BatchError unless `batch` has exactly the schema's fields, dtypes and row shapes."""
    missing = sorted(set(schema) - set(batch))
    extra = sorted(set(batch) - set(schema))
    if missing or extra:
        raise BatchError(f"fields do not match the table schema: missing {missing}, unexpected {extra}")
    for name, (dtype, shape) in schema.items():
        arr = batch[name]
        if arr.dtype.name != dtype:
            raise BatchError(f"field {name!r}: dtype {arr.dtype.name}, table expects {dtype}")
        if tuple(arr.shape[1:]) != tuple(shape):
            raise BatchError(f"field {name!r}: row shape {tuple(arr.shape[1:])}, table expects {tuple(shape)}")
    batch_size(batch)


def find_non_finite(batch: Mapping[str, np.ndarray]) -> list[str]:
    """Names of floating-point fields holding NaN or infinity."""
    return [
        name
        for name, arr in batch.items()
        if np.issubdtype(arr.dtype, np.floating) and arr.size and not np.isfinite(arr).all()
    ]


def concat(batches: list[Mapping[str, np.ndarray]]) -> Batch:
    if not batches:
        raise BatchError("nothing to concatenate")
    keys = list(batches[0])
    return {k: np.concatenate([b[k] for b in batches]) for k in keys}


def take(batch: Mapping[str, np.ndarray], index: np.ndarray | slice) -> Batch:
    return {k: v[index] for k, v in batch.items()}
