"""An episode limit for envs that have none of their own (Gymnasium's `max_episode_steps`, for
PettingZoo ParallelEnvs): `env.kwargs.max_episode_steps: N` truncates every episode after N steps.

mamql needs episodes to end (actors cut them into transitions, the learner bootstraps through
truncations); a user's env need not declare a limit attribute, so this wrapper supplies one.
"""

from __future__ import annotations

from pettingzoo import ParallelEnv


class EpisodeLimit(ParallelEnv):
    """Truncates all live agents after `limit` steps of the wrapped env; everything else passes through."""

    def __init__(self, env: ParallelEnv, limit: int):
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"max_episode_steps must be an integer >= 1, got {limit!r}")
        self.env = env
        self.max_steps = limit  # read by envs.registry.env_spec
        self.possible_agents = list(env.possible_agents)
        self.metadata = getattr(env, "metadata", {})
        self.render_mode = getattr(env, "render_mode", None)
        self._steps = 0
        self._cut = False

    @property
    def agents(self) -> list:
        return [] if self._cut else self.env.agents

    def observation_space(self, agent):
        return self.env.observation_space(agent)

    def action_space(self, agent):
        return self.env.action_space(agent)

    def reset(self, seed=None, options=None):
        self._steps, self._cut = 0, False
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        self._steps += 1
        if self._steps >= self.max_steps:
            truncations = {a: True for a in truncations}
            self._cut = True
        return obs, rewards, terminations, truncations, infos

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()

    def state(self):
        return self.env.state()

    def __getattr__(self, name):  # the wrapped env's own extras (e.g. Gems' get/set state)
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)
