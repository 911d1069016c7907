"""Batched policies an actor can run from observations alone: scripted experts, random play, and
learner checkpoints (`checkpoint:PATH`: a trained critic sampling Boltzmann(Q/alpha)).

All implement mamql.policy.Policy: `act(obs[agent] [K, ...]) -> actions[agent] [K] int64`.
Checkpoint experts import torch and the learner lazily, so scripted and random ones stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from mamql.config import InputError
from mamql.envs.registry import canonical_name, env_spec


class NoExpertError(InputError, ValueError):
    """The env has no expert of the kind asked for (the CLI prints it as one line)."""


class RandomPolicy:
    """Uniform random actions; the baseline experts must beat and the replay's seed data."""

    def __init__(self, num_actions: Mapping[str, int], seed: int = 0):
        self.num_actions = dict(num_actions)
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            a: self._rng.integers(0, self.num_actions[a], size=len(o), dtype=np.int64) for a, o in obs.items()
        }


SCRIPTED = ("gems", "kitchen")
CHECKPOINT = "checkpoint:"  # expert kind prefix: checkpoint:PATH
KINDS = "scripted, random or checkpoint:PATH"


def checkpoint_path(kind: str) -> str | None:
    """PATH of a `checkpoint:PATH` expert kind, else None."""
    return kind[len(CHECKPOINT):] if kind.startswith(CHECKPOINT) else None


def add_checkpoint_expert_args(parser) -> None:
    """--expert, --temperature and --greedy of the commands that play an expert themselves."""
    parser.add_argument("--expert", type=expert_arg, default="scripted",
                        help="scripted (envs that have one, see `mamql envs list`), random, or checkpoint:PATH "
                             "(a learner checkpoint of this env: samples Boltzmann(Q/alpha))")
    parser.add_argument("--temperature", type=float, default=None, metavar="ALPHA",
                        help="sampling temperature of a checkpoint expert (default: the checkpoint's learner.alpha)")
    parser.add_argument("--greedy", action="store_true", help="a checkpoint expert takes argmax Q instead of sampling")


def expert_arg(text: str) -> str:
    """argparse type of --expert: the kind's form only (the file is checked before the command starts).
    A checkpoint path becomes absolute, so child processes and dataset records name the same file."""
    import argparse

    if text in ("scripted", "random"):
        return text
    if (checkpoint_path(text) or "").strip():
        return CHECKPOINT + str(Path(checkpoint_path(text)).resolve())
    raise argparse.ArgumentTypeError(f"invalid expert {text!r}: use {KINDS}")


def has_scripted(env_name: str) -> bool:
    return canonical_name(env_name) in SCRIPTED


def check_expert(env_name: str, kind: str, env_kwargs: Mapping | None = None, load: bool = True) -> None:
    """Raise an InputError unless `make_expert(env_name, kind)` can succeed (before a command starts).
    A checkpoint is read and matched to the env (torch), or with `load` False only looked for
    (mamql.config.validate, which every process runs)."""
    path = checkpoint_path(kind)
    if path is not None:
        if load:
            describe_expert(env_name, kind, env_kwargs)
        elif not path.strip():
            raise NoExpertError("expert checkpoint: needs a path, e.g. checkpoint:runs/NAME/checkpoints/learner_00000100.pt")
        elif not Path(path).is_file():
            raise NoExpertError(f"expert checkpoint {path} does not exist")
        return
    if kind not in ("scripted", "random"):
        raise NoExpertError(f"unknown expert {kind!r}; use {KINDS}")
    if kind == "scripted" and not has_scripted(env_name):
        raise NoExpertError(f"env {env_name!r} has no scripted expert (envs with one: {', '.join(SCRIPTED)}); "
                            "use --expert random (actor.expert=random) or recorded demos")


def load_checkpoint_expert(env_name: str, kind: str, env_kwargs: Mapping | None = None):
    """learner.policy.CheckpointExpert of a `checkpoint:PATH` kind, matched to the env (env_kwargs
    None: the checkpoint's own env.kwargs)."""
    from mamql.learner.policy import CheckpointExpert

    if not (checkpoint_path(kind) or "").strip():
        check_expert(env_name, kind, load=False)  # the one-line "needs a path"
    return CheckpointExpert(checkpoint_path(kind), env_name, env_kwargs)


def describe_expert(env_name: str, kind: str, env_kwargs: Mapping | None = None,
                    temperature: float | None = None, greedy: bool = False) -> dict:
    """What a dataset records of its expert: {"kind"}, and for a checkpoint its path, sha256, the
    temperature sampled at (alpha) and the checkpoint's gamma. Checks the expert like check_expert."""
    if checkpoint_path(kind) is None:
        check_expert(env_name, kind)
        return {"kind": kind}
    return load_checkpoint_expert(env_name, kind, env_kwargs).info(temperature, "greedy" if greedy else "sample")


def make_expert(env_name: str, kind: str = "scripted", seed: int = 0, epsilon: float = 0.0,
                temperature: float | None = None, greedy: bool = False, **kwargs):
    """`kind` is "scripted" (Gems, Kitchen), "random" (every env) or "checkpoint:PATH" (a learner
    checkpoint of this env, sampling Boltzmann(Q/temperature), temperature None = its learner.alpha;
    `greedy`: argmax Q); `epsilon` mixes in random actions."""
    if checkpoint_path(kind) is not None:
        expert = load_checkpoint_expert(env_name, kind, kwargs)
        return expert.policy(temperature, "greedy" if greedy else "sample", epsilon, seed)
    check_expert(env_name, kind)
    name = canonical_name(env_name)
    if kind == "random":
        return RandomPolicy(env_spec(name, **kwargs).num_actions, seed=seed)
    if name == "gems":
        from mamql.envs.gems_expert import GemsExpert

        return GemsExpert(size=kwargs.get("size", 15), epsilon=epsilon, seed=seed)
    if name == "kitchen":
        from mamql.envs.kitchen_expert import KitchenExpert

        return KitchenExpert(epsilon=epsilon, seed=seed)
    raise AssertionError(f"SCRIPTED lists {name!r} without a branch here")
