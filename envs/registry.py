"""Env name -> factory, and the EnvSpec the learner builds its networks from.

A name is one of:
- a built-in (`gems`, `kitchen`, `mpe/simple_spread`, ...; `simple_spread` also works),
- a name a package registers in the `mamql.envs` entry-point group, e.g. in its pyproject.toml
  `[project.entry-points."mamql.envs"] corridor = "corridor_env:CorridorEnv"`,
- `package.module:ClassOrFactory` (attribute paths may be dotted), imported on use.
The factory is called with the config's `env.kwargs` and must return a PettingZoo ParallelEnv with
Discrete action spaces. Nothing beyond the ParallelEnv API is required: episodes end when the env
terminates or truncates them, and `max_steps` is read only when the env has it (the built-ins do),
else EnvSpec.max_steps is 0 = unknown.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
from pettingzoo import ParallelEnv

from mamql.config import InputError

ENTRY_POINT_GROUP = "mamql.envs"


class UnknownEnvError(KeyError, InputError):
    """An env name that is not registered, a `module:attr` spec that cannot be imported, or an env
    mamql cannot drive. A KeyError for the callers that catch that; an InputError, so the CLI prints
    it as one line wherever it surfaces."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class EnvSpec:
    name: str
    agents: tuple[str, ...]
    obs_shape: dict[str, tuple[int, ...]]
    obs_dtype: dict[str, str]  # numpy dtype name, e.g. "uint8"
    num_actions: dict[str, int]
    max_steps: int = 0  # episode limit; 0 = unknown (the env truncates by itself, or never)


def _gems(**kw) -> ParallelEnv:
    from mamql.envs.gems import GemsEnv

    return GemsEnv(**kw)


def _kitchen(**kw) -> ParallelEnv:
    from mamql.envs.kitchen import KitchenEnv

    return KitchenEnv(**kw)


def _mpe(game: str) -> Callable[..., ParallelEnv]:
    def factory(**kw) -> ParallelEnv:
        from mamql.envs.mpe import MPEEnv

        return MPEEnv(game, **kw)

    return factory


_REGISTRY: dict[str, Callable[..., ParallelEnv]] = {
    "gems": _gems,
    "kitchen": _kitchen,
    "mpe/simple_spread": _mpe("simple_spread"),
    "mpe/simple_adversary": _mpe("simple_adversary"),
    "mpe/simple_tag": _mpe("simple_tag"),
}


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _REGISTRY}


def is_import_spec(name: str) -> bool:
    return ":" in name


def canonical_name(name: str) -> str:
    """The name as stored in specs and checkpoints: `simple_spread` -> `mpe/simple_spread`; entry-point
    names and `module:attr` specs as given. A spec is imported here, so a typo fails at validation."""
    if name in _REGISTRY:
        return name
    if f"mpe/{name}" in _REGISTRY:
        return f"mpe/{name}"
    if name in _entry_points() or is_import_spec(name):
        _factory(name)
        return name
    raise UnknownEnvError(f"unknown env {name!r}; known: {', '.join(list_envs())}, "
                          "or give your own ParallelEnv as package.module:ClassOrFactory")


def list_envs() -> list[str]:
    """Built-in names, then the `mamql.envs` entry-point names."""
    return list(_REGISTRY) + sorted(_entry_points())


@lru_cache(maxsize=None)
def _factory(name: str) -> Callable[..., ParallelEnv]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    eps = _entry_points()
    if name in eps:
        try:
            return eps[name].load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is one line, not a traceback
            raise UnknownEnvError(f"env {name!r} (entry point {eps[name].value}): cannot load: {_one_line(exc)}") from None
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise UnknownEnvError(f"env {name!r}: expected package.module:ClassOrFactory")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, or the module itself failing to run
        raise UnknownEnvError(f"env {name!r}: cannot import module {module_name!r}: {_one_line(exc)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownEnvError(f"env {name!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UnknownEnvError(f"env {name!r}: {attr!r} is not a class or factory function")
    return obj


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def make(name: str, **kwargs) -> ParallelEnv:
    """A new env; kwargs (the config's env.kwargs) go to its factory, except `max_episode_steps`,
    which mamql applies itself (envs.limit.EpisodeLimit) for envs without a limit of their own."""
    limit = kwargs.pop("max_episode_steps", None)
    env = _factory(canonical_name(name))(**kwargs)
    if limit is None:
        return env
    from mamql.envs.limit import EpisodeLimit

    return EpisodeLimit(env, limit)


def env_spec(name: str, **kwargs) -> EnvSpec:
    """What the learner needs to know of an env. Only Discrete action spaces are supported."""
    env = make(name, **kwargs)
    try:
        agents = tuple(env.possible_agents)
        num_actions = {}
        for a in agents:
            space = env.action_space(a)
            if not hasattr(space, "n"):
                raise UnknownEnvError(f"env {name!r}: agent {a!r} has action space {space}; mamql needs Discrete actions")
            num_actions[a] = int(space.n)
        return EnvSpec(
            name=canonical_name(name),
            agents=agents,
            obs_shape={a: tuple(env.observation_space(a).shape) for a in agents},
            obs_dtype={a: np.dtype(env.observation_space(a).dtype).name for a in agents},
            num_actions=num_actions,
            max_steps=int(getattr(env, "max_steps", 0) or 0),
        )
    finally:
        env.close()
