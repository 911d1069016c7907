"""K copies of one env stepped in one process, with auto-reset: the actor's hot loop.

Arrays are per agent with a leading K axis. A step returns both `next_obs` (the true observation
after this step, what a transition needs) and `obs` (what the policy acts on next: the reset
observation where an episode just ended). An episode ends for the whole copy as soon as any agent
is terminated or truncated (true of every env in the registry).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mamql.envs.registry import make


@dataclass(frozen=True)
class VectorStep:
    obs: dict[str, np.ndarray]  # [K, *shape], after auto-reset (the same arrays as next_obs if none ended)
    next_obs: dict[str, np.ndarray]  # [K, *shape], before auto-reset
    rewards: dict[str, np.ndarray]  # [K] float32
    terminated: np.ndarray  # [K] bool
    truncated: np.ndarray  # [K] bool
    episode_id: np.ndarray  # [K] int64, the episode this step belongs to
    step: np.ndarray  # [K] int32, index of this step within its episode
    finished_ids: np.ndarray  # [F] int64, episodes that ended on this step
    episode_returns: dict[str, np.ndarray]  # [F] float32 per agent, aligned with finished_ids
    episode_lengths: np.ndarray  # [F] int32


class VectorEnv:
    """`VectorEnv(name, num_envs, seed)`: copy k is reset with seed + k by `reset()`; auto-resets continue
    each copy's own rng, so a run is reproducible. Returned arrays are fresh each step, never reused."""

    def __init__(self, name: str, num_envs: int, seed: int = 0, episode_id_start: int = 0, **kwargs):
        self.envs = [make(name, **kwargs) for _ in range(num_envs)]
        self.num_envs, self.seed = num_envs, seed
        self.agents = list(self.envs[0].possible_agents)
        self._shape = {a: self.envs[0].observation_space(a).shape for a in self.agents}
        self._dtype = {a: self.envs[0].observation_space(a).dtype for a in self.agents}
        self._next_episode = episode_id_start
        self.episode_id = np.zeros(num_envs, dtype=np.int64)
        self.steps = np.zeros(num_envs, dtype=np.int32)
        self.returns = {a: np.zeros(num_envs, dtype=np.float32) for a in self.agents}
        self.obs: dict[str, np.ndarray] | None = None

    def _empty(self) -> dict[str, np.ndarray]:
        return {a: np.empty((self.num_envs, *self._shape[a]), dtype=self._dtype[a]) for a in self.agents}

    def _new_episode(self, k: int) -> None:
        self.episode_id[k] = self._next_episode
        self._next_episode += 1
        self.steps[k] = 0
        for a in self.agents:
            self.returns[a][k] = 0.0

    def reset(self) -> dict[str, np.ndarray]:
        out = self._empty()
        for k, env in enumerate(self.envs):
            obs, _ = env.reset(seed=self.seed + k)
            for a in self.agents:
                out[a][k] = obs[a]
            self._new_episode(k)
        self.obs = out
        return {a: v.copy() for a, v in out.items()}

    def step(self, actions: dict[str, np.ndarray]) -> VectorStep:
        if self.obs is None:
            raise RuntimeError("call reset() before step()")
        agents, K = self.agents, self.num_envs
        act = {a: np.asarray(actions[a]).tolist() for a in agents}
        next_obs = self._empty()
        rewards = {a: np.empty(K, dtype=np.float32) for a in agents}
        term = np.zeros(K, dtype=bool)
        trunc = np.zeros(K, dtype=bool)
        for k, env in enumerate(self.envs):
            o, r, te, tr, _ = env.step({a: act[a][k] for a in agents})
            for a in agents:
                next_obs[a][k] = o[a]
                rewards[a][k] = r[a]
            term[k] = any(te.values())
            trunc[k] = not term[k] and any(tr.values())
        episode_id, steps = self.episode_id.copy(), self.steps.copy()
        for a in agents:
            self.returns[a] += rewards[a]
        self.steps += 1
        done = np.flatnonzero(term | trunc)
        finished_returns = {a: self.returns[a][done].copy() for a in agents}
        lengths = self.steps[done].copy()
        obs = {a: v.copy() for a, v in next_obs.items()} if done.size else next_obs
        for k in done:
            o, _ = self.envs[k].reset()
            for a in agents:
                obs[a][k] = o[a]
            self._new_episode(k)
        self.obs = obs
        return VectorStep(
            obs=obs,
            next_obs=next_obs,
            rewards=rewards,
            terminated=term,
            truncated=trunc,
            episode_id=episode_id,
            step=steps,
            finished_ids=episode_id[done],
            episode_returns=finished_returns,
            episode_lengths=lengths,
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()


def transition_batch(obs: dict[str, np.ndarray], actions: dict[str, np.ndarray], result: VectorStep) -> dict:
    """One step of K copies as a transition batch (mamql.batch field names); the actor adds
    `actor_id` and `policy_version`. `obs` is what the policy acted on."""
    batch: dict[str, np.ndarray] = {}
    for a in result.rewards:
        batch[f"obs/{a}"] = obs[a]
        batch[f"action/{a}"] = np.asarray(actions[a], dtype=np.int64)
        batch[f"reward/{a}"] = result.rewards[a]
        batch[f"next_obs/{a}"] = result.next_obs[a]
    batch["done"] = result.terminated
    batch["truncated"] = result.truncated
    batch["episode_id"] = result.episode_id
    batch["step"] = result.step
    return batch
