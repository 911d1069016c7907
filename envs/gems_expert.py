"""Scripted Gems expert: batched over K envs, computed from the observation planes alone.

Purple pays +6 to each agent against +1 for an own gem, so both agents head for purple: each agent
reconstructs the joint state from its own planes, and both pick the same (gem for agent_0, gem for
agent_1) pair by the smallest time-to-meet max(d0, d1) (ties broken by total distance, then by cell
order), so they agree without talking. The first to arrive waits on its gem. An own-colour gem
that lies on a shortest path to the purple target is picked up on the way (no detour, +1) when
`pickup_own` is set. The grid has no walls, so Manhattan distance is the BFS distance.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from mamql.envs.gems import AGENTS, DOWN, LEFT, RIGHT, STAY, UP


class GemsExpert:
    def __init__(self, size: int = 15, epsilon: float = 0.0, pickup_own: bool = True, seed: int = 0):
        self.size, self.epsilon, self.pickup_own = size, epsilon, pickup_own
        self._rng = np.random.default_rng(seed)
        rc = np.stack(np.divmod(np.arange(size * size), size), axis=1)
        self._rc = rc  # cell -> (row, col)
        self._dist = np.abs(rc[:, None, :] - rc[None, :, :]).sum(-1)  # [cells, cells] Manhattan

    def act(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {agent: self._act_one(np.asarray(obs[agent]), i) for i, agent in enumerate(AGENTS) if agent in obs}

    def _act_one(self, planes: np.ndarray, me: int) -> np.ndarray:
        k = planes.shape[0]
        flat = planes.reshape(k, 5, -1)
        own_cell, other_cell = flat[:, 0].argmax(1), flat[:, 1].argmax(1)
        target = self._nearest(own_cell, flat[:, 2])  # fallback: nearest own gem
        purple = flat[:, 4]
        counts = purple.sum(1, dtype=np.int64)
        rows = np.flatnonzero(counts > 0)
        if rows.size:
            cells0 = np.where(me == 0, own_cell, other_cell)
            cells1 = np.where(me == 0, other_cell, own_cell)
            for n in np.unique(counts[rows]).tolist():  # one group: the purple count is constant
                grp = rows[counts[rows] == n]
                pcells = np.nonzero(purple[grp])[1].reshape(len(grp), n)  # sorted cell order per row
                d0 = self._dist[cells0[grp, None], pcells]  # [g, n]
                d1 = self._dist[cells1[grp, None], pcells]
                meet = np.maximum(d0[:, :, None], d1[:, None, :])  # [g, p0, p1]
                score = meet * 10_000 + (d0[:, :, None] + d1[:, None, :]) * 100
                best = score.reshape(len(grp), -1).argmin(1)
                p0, p1 = np.divmod(best, n)
                mine = p0 if me == 0 else p1
                target[grp] = pcells[np.arange(len(grp)), mine]
        if self.pickup_own:
            target = self._via_own_gem(own_cell, target, flat[:, 2])
        actions = self._step_toward(own_cell, target)
        if self.epsilon > 0:
            explore = self._rng.random(k) < self.epsilon
            actions[explore] = self._rng.integers(0, 5, size=int(explore.sum()))
        return actions

    def _nearest(self, cell: np.ndarray, mask: np.ndarray) -> np.ndarray:
        d = np.where(mask > 0, self._dist[cell], 1 << 20)
        best = d.argmin(1)
        return np.where(mask.any(1), best, cell)  # no gem: stay

    def _via_own_gem(self, cell: np.ndarray, target: np.ndarray, own: np.ndarray) -> np.ndarray:
        """Swap the target for an own gem on a shortest path to it (nearest such gem)."""
        d_me = self._dist[cell]  # [K, cells]
        d_tgt = self._dist[target]
        on_path = (own > 0) & (d_me + d_tgt == d_me[np.arange(len(cell)), target][:, None]) & (d_me > 0)
        d = np.where(on_path, d_me, 1 << 20)
        best = d.argmin(1)
        return np.where(on_path.any(1), best, target)

    def _step_toward(self, cell: np.ndarray, target: np.ndarray) -> np.ndarray:
        dr = self._rc[target, 0] - self._rc[cell, 0]
        dc = self._rc[target, 1] - self._rc[cell, 1]
        vertical = np.abs(dr) >= np.abs(dc)
        act = np.where(vertical, np.where(dr > 0, DOWN, UP), np.where(dc > 0, RIGHT, LEFT))
        return np.where((dr == 0) & (dc == 0), STAY, act).astype(np.int64)
