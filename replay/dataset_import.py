"""`mamql dataset import`: a user's own demonstration arrays (one plain .npz) -> mamql demos.

The minimal schema (docs/datasets.md): per agent `obs/<agent>`, `action/<agent>`, `next_obs/<agent>`
and optionally `reward/<agent>`; shared `done`, `truncated`. Everything is checked against the env's
spaces before anything is written, and every problem is reported (one line each), so a user fixes
a file in one round. Output: a single demos `.npz` (learner.demos format) or, for any other path, a
dataset directory (replay.dataset) whose episodes are cut at done/truncated. Imports neither torch
nor grpc.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mamql.replay.dataset import NPZ_ERRORS, DatasetWriter, is_dataset, npz_problem, spec_to_dict

REQUIRED = ("obs", "action", "next_obs")
SHARED = ("done", "truncated")


def read_npz(path: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """(arrays, problems) of a plain .npz; never unpickles."""
    path = Path(path)
    if not path.is_file():
        return {}, [f"{path}: no such file"]
    if not zipfile.is_zipfile(path):
        return {}, [f"{path}: not an .npz archive"]
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}, []
    except NPZ_ERRORS as exc:
        return {}, [f"{path}: {npz_problem(exc)}"]


def validate(arrays: Mapping[str, np.ndarray], spec, contiguous: bool = False) -> list[str]:
    """Every problem of `arrays` as demos for `spec` (an envs.registry.EnvSpec), one line each:
    missing or unknown fields, lengths, shapes, dtypes, NaN, actions out of range, done+truncated on
    one row; with `contiguous` (a dataset directory holds whole episodes) also next_obs[t] == obs[t+1]
    inside each episode."""
    errors: list[str] = []
    known = {f"{k}/{a}" for a in spec.agents for k in (*REQUIRED, "reward")} | set(SHARED)
    for k in sorted(set(arrays) - known):
        errors.append(f"{k}: unknown field (expected {', '.join(f'{f}/<agent>' for f in REQUIRED)}, "
                      f"optional reward/<agent>, done, truncated; agents {', '.join(spec.agents)})")
    needed = [f"{k}/{a}" for a in spec.agents for k in REQUIRED] + list(SHARED)
    errors += [f"{k}: missing" for k in needed if k not in arrays]
    present = {k: np.asarray(v) for k, v in arrays.items() if k in known}
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in present.items()}
    n_rows = max(set(lengths.values()) - {None}, key=list(lengths.values()).count, default=0)
    for k, n in lengths.items():
        if n != n_rows:
            errors.append(f"{k}: {'a scalar' if n is None else f'{n} rows'}, other fields have {n_rows}")
    if n_rows == 0:
        errors.append("no rows")
    for k, v in present.items():
        if v.dtype.kind not in "biuf":
            errors.append(f"{k}: dtype {v.dtype} is not numeric")
            continue
        if lengths[k] != n_rows:
            continue
        kind, agent = k.split("/", 1) if "/" in k else (k, None)
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            errors.append(f"{k}: {int(np.size(v) - np.isfinite(v).sum())} NaN or infinite value(s)")
            continue
        if kind in ("obs", "next_obs"):
            errors += _check_obs(k, v, tuple(spec.obs_shape[agent]), np.dtype(spec.obs_dtype[agent]))
        elif kind == "action":
            errors += _check_scalar(k, v) or _check_actions(k, v, int(spec.num_actions[agent]))
        elif kind == "reward":
            errors += _check_scalar(k, v)
        else:  # done / truncated
            errors += _check_scalar(k, v) or ([] if np.isin(v, (0, 1)).all() else [f"{k}: values other than 0/1"])
    if errors:
        return errors
    done, truncated = np.asarray(arrays["done"], bool), np.asarray(arrays["truncated"], bool)
    if (done & truncated).any():
        errors.append(f"row {int(np.flatnonzero(done & truncated)[0])}: both done and truncated")
    if contiguous:
        inner = np.flatnonzero(~(done | truncated)[:-1])
        for a in spec.agents:
            obs, nxt = arrays[f"obs/{a}"], arrays[f"next_obs/{a}"]
            bad = np.any((nxt[inner] != obs[inner + 1]).reshape(len(inner), -1), axis=1) if len(inner) else []
            if np.any(bad):
                row = int(inner[np.flatnonzero(bad)[0]])
                errors.append(f"row {row}: next_obs/{a} differs from obs/{a} of row {row + 1} but neither done nor "
                              "truncated ends the episode there (a dataset directory holds whole episodes)")
    return errors


def _check_obs(k: str, v: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> list[str]:
    if tuple(v.shape[1:]) != shape:
        return [f"{k}: per-row shape {list(v.shape[1:])}, the env's observation space is {list(shape)}"]
    if dtype.kind in "biu" and not np.array_equal(v.astype(dtype), v):
        return [f"{k}: dtype {v.dtype} holds values that do not fit the env's {dtype}"]
    return []


def _check_scalar(k: str, v: np.ndarray) -> list[str]:
    return [] if v.ndim == 1 else [f"{k}: shape {list(v.shape)}, expected one value per row [{v.shape[0]}]"]


def _check_actions(k: str, v: np.ndarray, n: int) -> list[str]:
    if v.dtype.kind == "f" and not np.array_equal(v, np.round(v)):
        return [f"{k}: dtype {v.dtype} with non-integer values; actions are discrete indices"]
    bad = (v < 0) | (v >= n)
    if bad.any():
        return [f"{k}: {int(bad.sum())} action(s) outside 0..{n - 1}, first at row {int(np.flatnonzero(bad)[0])} "
                f"(value {v[bad][0]})"]
    return []


def normalise(arrays: Mapping[str, np.ndarray], spec) -> dict[str, np.ndarray]:
    """Validated arrays in the dtypes mamql stores: env obs dtype, int64 actions, float32 rewards, bool flags."""
    out = {}
    for k, v in arrays.items():
        kind, agent = k.split("/", 1) if "/" in k else (k, None)
        dtype = {"obs": spec.obs_dtype.get(agent), "next_obs": spec.obs_dtype.get(agent), "action": "int64",
                 "reward": "float32"}.get(kind, "bool")
        out[k] = np.ascontiguousarray(v, dtype=dtype)
    return out


def write_dataset(out: Path, batch: Mapping[str, np.ndarray], spec, env_kwargs: Mapping[str, Any],
                  info: Mapping[str, Any]) -> dict:
    """A dataset directory of whole episodes cut at done/truncated; a last episode without either
    is marked truncated (cut short, not terminal: the learner bootstraps it as before)."""
    n = len(batch["done"])
    ends = batch["done"] | batch["truncated"]
    truncated = batch["truncated"].copy()
    truncated[-1] |= not ends[-1]
    ends = batch["done"] | truncated
    bounds = np.append(0, np.flatnonzero(ends) + 1)
    rewards = all(f"reward/{a}" in batch for a in spec.agents)
    env = {"name": spec.name, "kwargs": dict(env_kwargs), "spec": spec_to_dict(spec)}
    writer = DatasetWriter.open(out, env, info=info, rewards=rewards)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        ep = {k: v[lo:hi] for k, v in batch.items() if rewards or not k.startswith("reward/")}
        ep["truncated"] = truncated[lo:hi]
        ep.update(episode_id=np.full(hi - lo, i, np.int64), step=np.arange(hi - lo, dtype=np.int32),
                  actor_id=np.zeros(hi - lo, np.int32), env_seed=np.full(hi - lo, -1, np.int64),
                  policy_version=np.full(hi - lo, -1, np.int64))
        writer.add_episode(ep)
    assert writer.transitions == n
    return writer.close(complete=True)


def output_problem(out: Path) -> str | None:
    """Why `out` cannot be written (nothing is ever overwritten); None if it can."""
    if out.suffix == ".npz":
        return f"{out} already exists (refusing to overwrite)" if out.exists() else None
    if is_dataset(out) or (out.is_dir() and any(out.iterdir())):
        return f"{out} already exists and is not empty (refusing to overwrite)"
    if out.exists() and not out.is_dir():
        return f"{out} is a file; give a new directory or a path ending in .npz"
    return None
