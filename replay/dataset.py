"""Demo datasets on disk: shards of complete episodes plus one manifest.json (see docs/datasets.md).

Why this shape: a collection of millions of transitions must survive a crash without leaving
anything half-written, and must be readable one shard at a time. Each shard is an uncompressed
`.npz` (no pickle) of whole episodes, written to a temp name and renamed into place; the manifest
(counts, sha256 per shard, return sums) is then replaced atomically. The manifest is the source of
truth: a shard file it does not list (a crash between the two renames) is not part of the dataset
and is removed when the writer resumes. Imports neither torch nor grpc.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

FORMAT = "mamql-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Per-transition fields every shard holds besides the per-agent obs/action/next_obs (and reward,
# which is optional: demonstrations for inverse RL may carry none; training never reads it).
SHARED_SCHEMA = {
    "done": ("bool", ()),
    "truncated": ("bool", ()),
    "episode_id": ("int64", ()),
    "step": ("int32", ()),
    "actor_id": ("int32", ()),
    "env_seed": ("int64", ()),
    "policy_version": ("int64", ()),
}


class DatasetError(ValueError):
    """A dataset that is missing, malformed, or fails verification."""


def dataset_schema(spec, rewards: bool = True) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Field -> (dtype, per-row shape) for an envs.registry.EnvSpec (or its dict form); without
    `rewards` the reward/<agent> fields are left out."""
    s = spec if isinstance(spec, Mapping) else spec_to_dict(spec)
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for a in s["agents"]:
        shape = tuple(s["obs_shape"][a])
        out[f"obs/{a}"] = (s["obs_dtype"][a], shape)
        out[f"action/{a}"] = ("int64", ())
        if rewards:
            out[f"reward/{a}"] = ("float32", ())
        out[f"next_obs/{a}"] = (s["obs_dtype"][a], shape)
    out.update(SHARED_SCHEMA)
    return out


def spec_to_dict(spec) -> dict:
    return {
        "name": spec.name,
        "agents": list(spec.agents),
        "obs_shape": {a: list(v) for a, v in spec.obs_shape.items()},
        "obs_dtype": dict(spec.obs_dtype),
        "num_actions": dict(spec.num_actions),
        "max_steps": int(spec.max_steps),
    }


def expert_summary(expert: Mapping[str, Any]) -> str:
    """One line naming a manifest's `expert`: its kind, and for a learner checkpoint the file, its
    sha256, the temperature sampled at and the gamma it was trained for."""
    if expert.get("kind") != "checkpoint":
        return f"{expert.get('kind', 'unknown')}" + (f" (epsilon {expert['epsilon']})" if expert.get("epsilon") else "")
    return (f"checkpoint {expert.get('checkpoint')} ({expert.get('algo')} step {expert.get('step')}, sha256 "
            f"{str(expert.get('sha256'))[:12]}, {expert.get('sampling', 'sample')} at alpha {expert.get('alpha')}, "
            f"gamma {expert.get('gamma')})")


def is_dataset(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# What np.load(allow_pickle=False) raises on a file that is not a clean .npz.
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def npz_problem(exc: BaseException) -> str:
    """Why an .npz did not load, in words: numpy's own message for a non-zip file or an object
    array suggests loading it with allow_pickle, which must never be done with data from disk."""
    if "pickle" in str(exc):
        return "not an .npz archive of plain numeric arrays (pickled data is never loaded)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: no {MANIFEST} (not a mamql dataset)") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path / MANIFEST}: not valid JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path / MANIFEST}: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DatasetError(f"{path / MANIFEST}: format is {found!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{path / MANIFEST}: format_version {manifest.get('format_version')} is not supported "
                           f"(this reader knows {FORMAT_VERSION})")
    return manifest


# --------------------------------------------------------------------------- return statistics


def _return_sums(returns: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {a: {"count": int(len(r)), "sum": float(r.sum()), "sumsq": float(np.square(r).sum()),
                "min": float(r.min()) if len(r) else math.inf, "max": float(r.max()) if len(r) else -math.inf}
            for a, r in returns.items()}


def summarize_returns(shards: list[dict], agents: list[str]) -> dict[str, dict[str, float]]:
    """mean/std/min/max of per-episode returns, per agent, over the shards' return sums."""
    out = {}
    for a in agents:
        parts = [s["returns"][a] for s in shards if a in s["returns"]]  # none for reward-less shards
        n = sum(p["count"] for p in parts)
        if not n:
            out[a] = {"episodes": 0, "mean": None, "std": None, "min": None, "max": None}
            continue
        mean = sum(p["sum"] for p in parts) / n
        var = max(sum(p["sumsq"] for p in parts) / n - mean * mean, 0.0)
        out[a] = {"episodes": n, "mean": mean, "std": math.sqrt(var),
                  "min": min(p["min"] for p in parts), "max": max(p["max"] for p in parts)}
    return out


# --------------------------------------------------------------------------- writing


def write_npz(path: Path, episodes: list[Mapping[str, np.ndarray]], schema: Mapping[str, list]) -> None:
    """An uncompressed .npz (what np.savez writes, np.load reads) streamed episode by episode, so
    a shard is never concatenated in memory; fsynced before it may be renamed into place."""
    import zipfile

    rows = sum(len(e["step"]) for e in episodes)
    with open(path, "wb") as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, (dtype, shape) in schema.items():
                dtype = np.dtype(dtype)
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": (rows, *shape)}
                    np.lib.format.write_array_header_1_0(member, header)
                    for e in episodes:
                        member.write(memoryview(np.ascontiguousarray(e[key], dtype=dtype)).cast("B"))
        f.flush()
        os.fsync(f.fileno())


@dataclass
class DatasetWriter:
    """Buffers complete episodes and writes them as shards of >= `shard_transitions` rows.

    `open()` creates a new dataset or resumes an existing one; `keys` then holds every
    (actor_id, episode_id) already on disk so a resumed collection never writes an episode twice.
    """

    path: Path
    manifest: dict
    shard_transitions: int = 10_000
    keys: set = field(default_factory=set)
    _buffer: list = field(default_factory=list)
    _buffered_rows: int = 0

    @classmethod
    def open(cls, path: str | Path, env: Mapping[str, Any], resume: bool = False,
             shard_transitions: int = 10_000, info: Mapping[str, Any] | None = None,
             rewards: bool = True) -> "DatasetWriter":
        """`env` = {"name", "kwargs", "spec"}; `info` = expert/collection descriptions (kept on resume);
        `rewards` False: shards without reward/<agent> fields (and no return statistics)."""
        path = Path(path)
        if is_dataset(path):
            if not resume:
                raise DatasetError(f"{path} already holds a dataset; pass --resume to continue it")
            manifest = read_manifest(path)
            if manifest["env"]["name"] != env["name"] or manifest["env"]["spec"] != env["spec"]:
                raise DatasetError(f"{path}: dataset env {manifest['env']['name']!r} differs from {env['name']!r}")
            writer = cls(path, manifest, shard_transitions)
            writer._clean_orphans()
            for shard in manifest["shards"]:
                with np.load(path / shard["file"], allow_pickle=False) as data:
                    writer.keys.update(zip(data["actor_id"].tolist(), data["episode_id"].tolist()))
            return writer
        path.mkdir(parents=True, exist_ok=True)
        if any(p.name.startswith("shard-") for p in path.iterdir()):
            raise DatasetError(f"{path} holds shard files but no manifest; refusing to mix datasets")
        spec = env["spec"]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "env": dict(env),
            "schema": {k: [d, list(s)] for k, (d, s) in dataset_schema(spec, rewards).items()},
            **dict(info or {}),
            "complete": False,
            "counts": {"transitions": 0, "episodes": 0, "shards": 0},
            "returns": summarize_returns([], spec["agents"]),
            "shards": [],
        }
        writer = cls(path, manifest, shard_transitions)
        _write_json_atomic(path / MANIFEST, manifest)
        return writer

    def _clean_orphans(self) -> None:
        listed = {s["file"] for s in self.manifest["shards"]}
        for p in self.path.iterdir():
            if p.name.startswith("shard-") and p.name not in listed:
                p.unlink()  # temp file or a shard renamed in but never committed to the manifest

    @property
    def agents(self) -> list[str]:
        return list(self.manifest["env"]["spec"]["agents"])

    @property
    def transitions(self) -> int:
        """Rows committed to disk plus rows buffered for the next shard."""
        return self.manifest["counts"]["transitions"] + self._buffered_rows

    @property
    def episodes(self) -> int:
        return self.manifest["counts"]["episodes"] + len(self._buffer)

    def add_episode(self, episode: Mapping[str, np.ndarray]) -> bool:
        """Queue one complete episode (rows in step order); False if it is already in the dataset."""
        key = (int(episode["actor_id"][0]), int(episode["episode_id"][0]))
        if key in self.keys:
            return False
        self.keys.add(key)
        self._buffer.append(episode)
        self._buffered_rows += len(episode["step"])
        if self._buffered_rows >= self.shard_transitions:
            self.flush()
        return True

    def flush(self) -> dict | None:
        """Write the buffered episodes as one shard and commit it to the manifest."""
        if not self._buffer:
            return None
        index = len(self.manifest["shards"])
        name = f"shard-{index:06d}.npz"
        tmp = self.path / f"{name}.tmp"
        write_npz(tmp, self._buffer, self.manifest["schema"])
        returns = {a: np.array([e[f"reward/{a}"].sum(dtype=np.float64) for e in self._buffer])
                   for a in self.agents if f"reward/{a}" in self.manifest["schema"]}
        shard = {
            "file": name,
            "transitions": self._buffered_rows,
            "episodes": len(self._buffer),
            "bytes": tmp.stat().st_size,
            "sha256": sha256_file(tmp),
            "returns": _return_sums(returns),
        }
        os.replace(tmp, self.path / name)
        self._commit(shard)
        self._buffer, self._buffered_rows = [], 0
        return shard

    def _commit(self, shard: dict) -> None:
        m = self.manifest
        m["shards"].append(shard)
        m["counts"] = {"transitions": m["counts"]["transitions"] + shard["transitions"],
                       "episodes": m["counts"]["episodes"] + shard["episodes"], "shards": len(m["shards"])}
        m["returns"] = summarize_returns(m["shards"], self.agents)
        m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_json_atomic(self.path / MANIFEST, m)

    def update(self, **fields: Any) -> None:
        """Set top-level manifest fields (e.g. complete=True, collection info) atomically."""
        self.manifest.update(fields)
        _write_json_atomic(self.path / MANIFEST, self.manifest)

    def close(self, complete: bool = False) -> dict:
        self.flush()
        self.update(complete=bool(complete))
        return self.manifest


# --------------------------------------------------------------------------- reading


def iter_shards(path: str | Path, check: bool = False) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
    """(shard entry, batch) per shard in manifest order; memory is one shard at a time.
    `check` verifies each shard's sha256 first (raises DatasetError naming the shard)."""
    path = Path(path)
    manifest = read_manifest(path)
    for shard in manifest["shards"]:
        file = path / shard["file"]
        if not file.is_file():
            raise DatasetError(f"{shard['file']}: listed in the manifest but missing")
        if check and sha256_file(file) != shard["sha256"]:
            raise DatasetError(f"{shard['file']}: sha256 mismatch (corrupted or modified)")
        try:
            with np.load(file, allow_pickle=False) as data:
                batch = {k: data[k] for k in data.files}
        except NPZ_ERRORS as exc:
            raise DatasetError(f"{shard['file']}: unreadable shard: {npz_problem(exc)}; "
                               "`mamql dataset verify` checks every shard") from None
        yield shard, batch


def _episode_bounds(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """Start row of every episode plus the end (episodes are contiguous runs starting at step 0)."""
    return np.append(np.flatnonzero(batch["step"] == 0), len(batch["step"]))


def load_dataset(path: str | Path, max_transitions: int | None = None, max_episodes: int | None = None,
                 seed: int | None = None) -> dict[str, np.ndarray]:
    """The dataset (or a subsample) as one batch dict.

    Episodes are taken in dataset order, or in a random order when `seed` is given (a uniform
    subsample of episodes). `max_episodes` keeps that many whole episodes; `max_transitions` keeps
    exactly that many rows: whole episodes, and the last one cut short if needed (its final kept
    row then has done=False and truncated=False: a cut is not a terminal state, as in
    learner.demos.collect_demos). Only the shards holding chosen episodes are read.
    """
    manifest = read_manifest(path)
    counts = [s["episodes"] for s in manifest["shards"]]
    total = sum(counts)
    order = np.arange(total) if seed is None else np.random.default_rng(seed).permutation(total)
    if max_episodes is not None:
        order = order[:max_episodes]
    if max_transitions is not None and seed is None:
        # dataset order: the prefix of shards that covers max_transitions is enough
        rows, n_shards = 0, 0
        for s in manifest["shards"]:
            if rows >= max_transitions:
                break
            rows, n_shards = rows + s["transitions"], n_shards + 1
        order = order[order < sum(counts[:n_shards])]
    wanted = set(order.tolist())
    episodes: dict[int, dict[str, np.ndarray]] = {}
    first = 0
    for (shard, batch), n in zip(iter_shards(path), counts):
        if any(first + i in wanted for i in range(n)):
            bounds = _episode_bounds(batch)
            for i in range(n):
                if first + i in wanted:
                    episodes[first + i] = {k: v[bounds[i]:bounds[i + 1]] for k, v in batch.items()}
        first += n
    chosen = [episodes[i] for i in order.tolist()]
    if max_transitions is not None:
        kept, rows = [], 0
        for ep in chosen:
            if rows >= max_transitions:
                break
            take = min(len(ep["step"]), max_transitions - rows)
            if take < len(ep["step"]):
                ep = {k: v[:take].copy() for k, v in ep.items()}
                ep["done"][-1] = ep["truncated"][-1] = False
            kept.append(ep)
            rows += take
        chosen = kept
    schema = manifest["schema"]
    if not chosen:
        return {k: np.zeros((0, *s), dtype=d) for k, (d, s) in schema.items()}
    return {k: np.concatenate([ep[k] for ep in chosen]) for k in schema}


# --------------------------------------------------------------------------- verification


@dataclass
class VerifyReport:
    errors: list[str] = field(default_factory=list)
    shards: int = 0
    transitions: int = 0
    episodes: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_episodes(batch: Mapping[str, np.ndarray], agents: list[str]) -> list[str]:
    """Episode integrity of one shard: contiguous runs per (actor_id, episode_id), steps 0..L-1,
    exactly one done/truncated flag, on the last row, and next_obs[t] == obs[t+1] inside episodes."""
    errors = []
    n = len(batch["step"])
    if n == 0:
        return ["empty shard"]
    same = (batch["episode_id"][1:] == batch["episode_id"][:-1]) & (batch["actor_id"][1:] == batch["actor_id"][:-1])
    starts = np.append(0, np.flatnonzero(~same) + 1)
    lengths = np.diff(np.append(starts, n))
    expected = np.arange(n) - np.repeat(starts, lengths)
    if not np.array_equal(batch["step"].astype(np.int64), expected):
        bad = int(np.flatnonzero(batch["step"] != expected)[0])
        errors.append(f"row {bad}: step {int(batch['step'][bad])}, expected {int(expected[bad])} "
                      f"(episode {int(batch['episode_id'][bad])} not contiguous from step 0)")
    keys = list(zip(batch["actor_id"][starts].tolist(), batch["episode_id"][starts].tolist()))
    if len(set(keys)) != len(keys):
        errors.append("an episode appears in more than one run of rows")
    ends = batch["done"] | batch["truncated"]
    if np.any(batch["done"] & batch["truncated"]):
        errors.append("a row is both done and truncated")
    last = np.zeros(n, dtype=bool)
    last[starts[1:] - 1] = True
    last[-1] = True
    if not np.array_equal(ends, last):
        bad = int(np.flatnonzero(ends != last)[0])
        errors.append(f"row {bad}: done/truncated is {bool(ends[bad])} but row {'is' if last[bad] else 'is not'} "
                      f"the last of episode {int(batch['episode_id'][bad])}")
    inner = np.flatnonzero(~last)  # rows whose successor is in the same episode
    for a in agents:
        nxt, obs = batch[f"next_obs/{a}"], batch[f"obs/{a}"]
        mismatch = np.any((nxt[inner] != obs[inner + 1]).reshape(len(inner), -1), axis=1) if len(inner) else []
        if np.any(mismatch):
            row = int(inner[np.flatnonzero(mismatch)[0]])
            errors.append(f"row {row}: next_obs/{a} differs from obs/{a} of the next step")
    return errors


def verify_dataset(path: str | Path) -> VerifyReport:
    """Checksums, schema, counts and episode integrity of every shard; errors name the shard."""
    path = Path(path)
    report = VerifyReport()
    try:
        manifest = read_manifest(path)
    except DatasetError as exc:
        report.errors.append(str(exc))
        return report
    schema = {k: (d, tuple(s)) for k, (d, s) in manifest["schema"].items()}
    agents = list(manifest["env"]["spec"]["agents"])
    seen: dict[tuple[int, int], str] = {}
    for shard in manifest["shards"]:
        name, file = shard["file"], path / shard["file"]
        report.shards += 1
        if not file.is_file():
            report.errors.append(f"{name}: missing")
            continue
        digest = sha256_file(file)
        if digest != shard["sha256"]:
            report.errors.append(f"{name}: sha256 mismatch: manifest {shard['sha256'][:16]}..., file {digest[:16]}...")
            continue
        try:
            with np.load(file, allow_pickle=False) as data:
                batch = {k: data[k] for k in data.files}
        except Exception as exc:  # noqa: BLE001 - any unreadable shard is a verification failure
            report.errors.append(f"{name}: unreadable: {npz_problem(exc)}")
            continue
        got = {k: (v.dtype.name, v.shape[1:]) for k, v in batch.items()}
        if got != schema:
            diff = sorted(set(got.items()) ^ set(schema.items()))
            report.errors.append(f"{name}: schema differs from the manifest: {diff[:4]}")
            continue
        rows = {len(v) for v in batch.values()}
        if rows != {shard["transitions"]}:
            report.errors.append(f"{name}: {sorted(rows)} rows, manifest says {shard['transitions']}")
            continue
        errors = check_episodes(batch, agents)
        report.errors.extend(f"{name}: {e}" for e in errors)
        starts = np.flatnonzero(batch["step"] == 0)
        if not errors and len(starts) != shard["episodes"]:
            report.errors.append(f"{name}: {len(starts)} episodes, manifest says {shard['episodes']}")
        for key in zip(batch["actor_id"][starts].tolist(), batch["episode_id"][starts].tolist()):
            if key in seen:
                report.errors.append(f"{name}: episode (actor {key[0]}, id {key[1]}) duplicates one in {seen[key]}")
            seen[key] = name
        report.transitions += shard["transitions"]
        report.episodes += len(starts)
    counts = manifest["counts"]
    if not report.errors and (counts["transitions"], counts["episodes"], counts["shards"]) != (
            report.transitions, report.episodes, report.shards):
        report.errors.append(f"manifest counts {counts} differ from the shards "
                             f"({report.transitions} transitions, {report.episodes} episodes)")
    return report
