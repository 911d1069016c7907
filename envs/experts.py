"""Batched policies an actor can run from observations alone: scripted experts and random play.

All implement mamql.policy.Policy: `act(obs[agent] [K, ...]) -> actions[agent] [K] int64`.
"""

from __future__ import annotations

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


def has_scripted(env_name: str) -> bool:
    return canonical_name(env_name) in SCRIPTED


def check_expert(env_name: str, kind: str) -> None:
    """Raise NoExpertError unless `make_expert(env_name, kind)` can succeed (before a command starts)."""
    if kind not in ("scripted", "random"):
        raise NoExpertError(f"unknown expert {kind!r}; use scripted or random")
    if kind == "scripted" and not has_scripted(env_name):
        raise NoExpertError(f"env {env_name!r} has no scripted expert (envs with one: {', '.join(SCRIPTED)}); "
                            "use --expert random (actor.expert=random) or recorded demos")


def make_expert(env_name: str, kind: str = "scripted", seed: int = 0, epsilon: float = 0.0, **kwargs):
    """`kind` is "scripted" (Gems, Kitchen) or "random" (every env); `epsilon` mixes in random actions."""
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
