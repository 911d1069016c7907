"""Small expert-demonstration files: collect with an expert (scripted, random, a learner checkpoint),
save/load as one `.npz`.

A later issue adds the sharded on-disk dataset format for large collections; this is the minimal
version the single-process trainer and the tests need. Arrays use the mamql.batch field names, so a
loaded batch goes straight into a replay table. No pickle anywhere: np.savez + allow_pickle=False,
and the metadata travels as a JSON string inside the archive.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mamql.config import InputError

METADATA_KEY = "__metadata_json__"
# What training reads of a demonstration, per agent (plus done and truncated). Rewards are optional,
# evaluation-only fields: inverse RL learns from demonstrations that carry none.
DEMO_FIELDS = ("obs", "action", "next_obs")


class DemosError(InputError):
    """A demos path that does not exist or does not hold demos (says which file and why)."""


def collect_demos(
    env_name: str,
    transitions: int,
    seed: int = 0,
    epsilon: float = 0.0,
    num_envs: int = 16,
    env_kwargs: Mapping[str, Any] | None = None,
    expert: str = "scripted",
    temperature: float | None = None,
    greedy: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run the expert (`scripted`, `random` play for baselines and benchmarks, or `checkpoint:PATH`, a
    learner checkpoint sampling at `temperature`, default its alpha) in a VectorEnv until at least `transitions` steps of COMPLETE
    episodes exist, order them episode by episode (in the order they finished), and cut to exactly
    `transitions` rows. Only the last kept episode may be cut short; its final row then keeps
    done=False, which is correct (a cut is not a terminal state). Returns (batch, summary); the
    summary's returns are over the complete episodes collected (the expert's quality); its `expert` says
    which expert played (docs/datasets.md), and a checkpoint's gamma becomes the demos' `gamma`."""
    from mamql.envs.experts import checkpoint_path, describe_expert, load_checkpoint_expert, make_expert
    from mamql.envs.vector import VectorEnv, transition_batch

    kwargs = dict(env_kwargs or {})
    if checkpoint_path(expert) is not None:  # read once: the policy and the record come from the same file
        loaded = load_checkpoint_expert(env_name, expert, kwargs)
        policy = loaded.policy(temperature, "greedy" if greedy else "sample", epsilon, seed)
        about = loaded.info(temperature, policy.mode)
    else:
        policy = make_expert(env_name, kind=expert, seed=seed, epsilon=epsilon, **kwargs)
        about = describe_expert(env_name, expert)
    env = VectorEnv(env_name, num_envs, seed=seed, **kwargs)
    steps: list[dict[str, np.ndarray]] = []
    finished: list[int] = []  # episode ids in the order they ended
    returns: dict[str, list[float]] = {a: [] for a in env.agents}
    lengths: list[int] = []
    done_rows = 0
    obs = env.reset()
    try:
        while done_rows < transitions:
            actions = policy.act(obs)
            result = env.step(actions)
            steps.append(transition_batch(obs, actions, result))
            obs = result.obs
            finished.extend(int(e) for e in result.finished_ids)
            for a in env.agents:
                returns[a].extend(float(r) for r in result.episode_returns[a])
            lengths.extend(int(n) for n in result.episode_lengths)
            done_rows += int(result.episode_lengths.sum())
    finally:
        env.close()
    batch = {k: np.concatenate([s[k] for s in steps]) for k in steps[0]}
    rank = np.full(int(batch["episode_id"].max()) + 1, -1, dtype=np.int64)
    rank[np.asarray(finished, dtype=np.int64)] = np.arange(len(finished))
    row_rank = rank[batch["episode_id"]]
    keep = np.flatnonzero(row_rank >= 0)
    order = keep[np.lexsort((batch["step"][keep], row_rank[keep]))][:transitions]
    batch = {k: np.ascontiguousarray(v[order]) for k, v in batch.items()}
    summary = {
        "env": env_name,
        "env_kwargs": kwargs,
        "expert": about,
        **({"gamma": about["gamma"]} if "gamma" in about else {}),
        "epsilon": float(epsilon),
        "seed": int(seed),
        "transitions": int(len(order)),
        "episodes_collected": len(finished),
        "episodes_in_batch": int(len(np.unique(batch["episode_id"]))),
        "mean_episode_length": float(np.mean(lengths)),
        "mean_return": {a: float(np.mean(r)) for a, r in returns.items()},
        "std_return": {a: float(np.std(r)) for a, r in returns.items()},
    }
    return batch, summary


def save_demos(path: str | Path, batch: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> Path:
    """One uncompressed `.npz` (field name -> array) plus the JSON metadata; atomic (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if METADATA_KEY in batch:
        raise ValueError(f"{METADATA_KEY!r} is reserved for the metadata")
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    for k, v in arrays.items():
        if v.dtype == object:
            raise ValueError(f"field {k!r} has dtype object; demos hold plain numeric arrays only")
    arrays[METADATA_KEY] = np.array(json.dumps(dict(metadata), sort_keys=True))
    tmp = path.with_name(path.name + ".tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def check_demos(path: str | Path, fields: bool = True) -> None:
    """Raise DemosError unless `path` looks loadable, reading headers only (no array data): a dataset
    directory's manifest, or a .npz of plain (non-object) arrays with one row count and (`fields`)
    the fields training needs (DEMO_FIELDS per agent, done, truncated; rewards optional). Commands run it before they create anything, so a bad
    --demos costs nothing."""
    from mamql.replay.dataset import NPZ_ERRORS, DatasetError, is_dataset, npz_problem, read_manifest

    path = Path(path)
    if not path.exists():
        raise DemosError(f"demos file {path} does not exist")
    if is_dataset(path):
        try:
            read_manifest(path)
        except DatasetError as exc:
            raise DemosError(f"{path} is not a valid demos dataset: {exc}") from None
        return
    if path.is_dir() or not zipfile.is_zipfile(path):
        problem = "neither an .npz archive (mamql demos collect) nor a dataset directory (mamql collect)"
    else:
        try:
            problem = _npz_problem(path, fields)
        except NPZ_ERRORS as exc:
            problem = npz_problem(exc)
    if problem:
        raise DemosError(f"{path} is not a valid demos file: {problem}")


def _npz_problem(path: Path, fields: bool) -> str | None:
    """What is wrong with an .npz as demos, from the .npy headers inside it; None if nothing."""
    from mamql.batch import SHARED_FIELDS, agents_of

    rows = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            with archive.open(name) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
            field = name.removesuffix(".npy")
            if dtype.hasobject:
                return f"field {field!r} holds Python objects (never unpickled); demos hold plain numeric arrays"
            if field != METADATA_KEY:
                rows[field] = shape[0] if shape else 0
    agents = agents_of(rows)
    needed = [f"{k}/{a}" for a in agents for k in DEMO_FIELDS] + list(SHARED_FIELDS)
    missing = [k for k in needed if k not in rows] if agents else ["obs/<agent>", *needed]
    if fields and missing:
        return f"missing field(s) {', '.join(missing)}"
    if len(set(rows.values())) > 1:
        return f"fields have different row counts {rows}"
    return None


def load_demos(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(batch, metadata) from save_demos' file, read with allow_pickle=False; a dataset directory
    (replay.dataset, from `mamql collect`) loads whole, its manifest less the shard list as metadata.
    A missing or corrupt file is a DemosError naming it."""
    from mamql.replay.dataset import NPZ_ERRORS, DatasetError, is_dataset, load_dataset, npz_problem, read_manifest

    check_demos(path, fields=False)  # what the caller needs of the fields is the caller's to check
    if is_dataset(path):
        try:
            manifest = read_manifest(path)
            metadata = {k: v for k, v in manifest.items() if k != "shards"}
            metadata.update(env=manifest["env"]["name"], env_kwargs=manifest["env"]["kwargs"],
                            transitions=manifest["counts"]["transitions"])
            return load_dataset(path), metadata
        except (DatasetError, KeyError) as exc:
            raise DemosError(f"{path} is not a valid demos dataset: {exc}") from None
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            batch = {k: data[k] for k in data.files if k != METADATA_KEY}
            metadata = json.loads(str(data[METADATA_KEY])) if METADATA_KEY in data.files else {}
    except NPZ_ERRORS as exc:  # a CRC error, a cut-off member, metadata that is not JSON
        raise DemosError(f"{path} is not a valid demos file: {npz_problem(exc)}") from None
    return batch, metadata


def gamma_warning(metadata: Mapping[str, Any], gamma: float) -> str | None:
    """A one-line warning when the demos say which discount they were made for and it is not the
    learner's (the recovered reward then answers a different question); None when they agree or
    the demos do not say."""
    demo_gamma = metadata.get("gamma")
    if demo_gamma is None or abs(float(demo_gamma) - float(gamma)) < 1e-9:
        return None
    return (f"demos were collected for gamma={float(demo_gamma):g} but the learner trains with gamma={float(gamma):g} "
            "(learner.gamma, --gamma)")
