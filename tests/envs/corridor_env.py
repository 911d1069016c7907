"""A user's own env, known to mamql only as `corridor_env:CorridorEnv` (tests/ is on the path).

Two agents walk a 5-cell corridor (actions 0 left, 1 stay, 2 right); agent_0 wants the right end,
agent_1 the left end, and both get a bonus for sharing a cell: general-sum. Observations are the
one-hot positions [own | other] (float32, 2 * size); episodes are truncated after `max_cycles`
steps and never terminate. Plain PettingZoo: no `max_steps` attribute, no scripted expert.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class CorridorEnv(ParallelEnv):
    metadata = {"name": "corridor_v0", "render_modes": []}

    def __init__(self, size: int = 5, max_cycles: int = 8, render_mode: str | None = None):
        self.size, self.max_cycles, self.render_mode = size, max_cycles, render_mode
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self._obs_space = spaces.Box(0.0, 1.0, shape=(2 * size,), dtype=np.float32)
        self._act_space = spaces.Discrete(3)
        self._goal = {"agent_0": size - 1, "agent_1": 0}

    def observation_space(self, agent: str):
        return self._obs_space

    def action_space(self, agent: str):
        return self._act_space

    def _observe(self) -> dict[str, np.ndarray]:
        out = {}
        for i, a in enumerate(self.possible_agents):
            obs = np.zeros(2 * self.size, dtype=np.float32)
            obs[self.pos[a]] = 1.0
            obs[self.size + self.pos[self.possible_agents[1 - i]]] = 1.0
            out[a] = obs
        return out

    def reset(self, seed: int | None = None, options: dict | None = None):
        rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.pos = {a: int(rng.integers(self.size)) for a in self.agents}
        self.t = 0
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict):
        for a in self.agents:
            self.pos[a] = int(np.clip(self.pos[a] + int(actions[a]) - 1, 0, self.size - 1))
        self.t += 1
        together = self.pos["agent_0"] == self.pos["agent_1"]
        rewards = {a: float(self.pos[a] == self._goal[a]) + 0.5 * together for a in self.agents}
        obs = self._observe()
        truncated = {a: self.t >= self.max_cycles for a in self.agents}
        terminated = dict.fromkeys(self.agents, False)
        infos = {a: {} for a in self.agents}
        if self.t >= self.max_cycles:
            self.agents = []
        return obs, rewards, terminated, truncated, infos

    def close(self) -> None:
        pass
