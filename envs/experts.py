"""Batched policies an actor can run from observations alone: scripted experts and random play.

All implement mamql.policy.Policy: `act(obs[agent] [K, ...]) -> actions[agent] [K] int64`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from envs.registry import canonical_name, env_spec


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


def make_expert(env_name: str, kind: str = "scripted", seed: int = 0, epsilon: float = 0.0, **kwargs):
    """`kind` is "scripted" (Gems, Kitchen) or "random" (every env); `epsilon` mixes in random actions."""
    name = canonical_name(env_name)
    if kind == "random":
        return RandomPolicy(env_spec(name, **kwargs).num_actions, seed=seed)
    if kind != "scripted":
        raise ValueError(f"unknown expert kind {kind!r}; use 'scripted' or 'random'")
    if name == "gems":
        from envs.gems_expert import GemsExpert

        return GemsExpert(size=kwargs.get("size", 15), epsilon=epsilon, seed=seed)
    if name == "kitchen":
        from envs.kitchen_expert import KitchenExpert

        return KitchenExpert(epsilon=epsilon, seed=seed)
    raise ValueError(f"no scripted expert for {name!r} (scripted: {', '.join(SCRIPTED)}); use kind='random'")
