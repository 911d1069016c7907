"""Name -> environment factory, and the EnvSpec the learner builds its networks from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from pettingzoo import ParallelEnv


@dataclass(frozen=True)
class EnvSpec:
    name: str
    agents: tuple[str, ...]
    obs_shape: dict[str, tuple[int, ...]]
    obs_dtype: dict[str, str]  # numpy dtype name, e.g. "uint8"
    num_actions: dict[str, int]
    max_steps: int


def _gems(**kw) -> ParallelEnv:
    from envs.gems import GemsEnv

    return GemsEnv(**kw)


def _kitchen(**kw) -> ParallelEnv:
    from envs.kitchen import KitchenEnv

    return KitchenEnv(**kw)


def _mpe(game: str) -> Callable[..., ParallelEnv]:
    def factory(**kw) -> ParallelEnv:
        from envs.mpe import MPEEnv

        return MPEEnv(game, **kw)

    return factory


_REGISTRY: dict[str, Callable[..., ParallelEnv]] = {
    "gems": _gems,
    "kitchen": _kitchen,
    "mpe/simple_spread": _mpe("simple_spread"),
    "mpe/simple_adversary": _mpe("simple_adversary"),
    "mpe/simple_tag": _mpe("simple_tag"),
}


def canonical_name(name: str) -> str:
    """Accepts `simple_spread` as well as `mpe/simple_spread`."""
    if name in _REGISTRY:
        return name
    if f"mpe/{name}" in _REGISTRY:
        return f"mpe/{name}"
    raise KeyError(f"unknown env {name!r}; known: {', '.join(list_envs())}")


def list_envs() -> list[str]:
    return list(_REGISTRY)


def make(name: str, **kwargs) -> ParallelEnv:
    return _REGISTRY[canonical_name(name)](**kwargs)


def env_spec(name: str, **kwargs) -> EnvSpec:
    env = make(name, **kwargs)
    try:
        agents = tuple(env.possible_agents)
        return EnvSpec(
            name=canonical_name(name),
            agents=agents,
            obs_shape={a: tuple(env.observation_space(a).shape) for a in agents},
            obs_dtype={a: np.dtype(env.observation_space(a).dtype).name for a in agents},
            num_actions={a: int(env.action_space(a).n) for a in agents},
            max_steps=int(env.max_steps),
        )
    finally:
        env.close()
