"""MPE games from mpe2 with discrete actions, behind our registry.

A thin ParallelEnv shell around mpe2's parallel env: it fixes `continuous_actions=False`, exposes
`max_steps` (mpe2's `max_cycles`) for EnvSpec, and guarantees float32 observations.
"""

from __future__ import annotations

import importlib

import numpy as np
from pettingzoo import ParallelEnv

MPE_MODULES = {
    "simple_spread": "mpe2.simple_spread_v3",
    "simple_adversary": "mpe2.simple_adversary_v3",
    "simple_tag": "mpe2.simple_tag_v3",
}


class MPEEnv(ParallelEnv):
    def __init__(self, game: str, max_cycles: int = 25, render_mode: str | None = None, **kwargs):
        module = importlib.import_module(MPE_MODULES[game])
        self._env = module.parallel_env(
            max_cycles=max_cycles, continuous_actions=False, render_mode=render_mode, **kwargs
        )
        self.max_steps = max_cycles
        self.render_mode = render_mode
        self.metadata = dict(self._env.metadata)
        self.possible_agents = list(self._env.possible_agents)

    @property
    def agents(self) -> list[str]:
        return self._env.agents

    def observation_space(self, agent: str):
        return self._env.observation_space(agent)

    def action_space(self, agent: str):
        return self._env.action_space(agent)

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, infos = self._env.reset(seed=seed, options=options)
        return _as_f32(obs), infos

    def step(self, actions: dict):
        obs, rewards, terminated, truncated, infos = self._env.step(actions)
        return _as_f32(obs), rewards, terminated, truncated, infos

    def render(self):
        return self._env.render()

    def close(self) -> None:
        self._env.close()


def _as_f32(obs: dict) -> dict:
    return {a: np.asarray(o, dtype=np.float32) for a, o in obs.items()}
