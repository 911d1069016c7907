"""Scripted Kitchen cooks: greedy task choice, BFS navigation and a priority rule against deadlock.

Each cook decodes the whole (small) state from its own observation and computes the JOINT plan, so
both cooks agree without talking. Tasks: a soup goes to the serving counter; a dish goes to the pot
once it cooks; an onion goes to the pot while it fills (else the cook waits); empty hands fetch
the dish when the pot cooks or is about to (the cook nearer the dish dispenser, ties to agent_0),
otherwise onions. Collisions: agent_0 plans around agent_1's cell; agent_1 plans around agent_0's
cell and its next cell, so they never collide or swap. A cook with nothing to do steps off the
other's goal cell.
"""

from __future__ import annotations

from collections import deque
from typing import Mapping

import numpy as np

from mamql.envs.kitchen import AGENTS, DIRS, DISH, INTERACT, LAYOUT, NOTHING, ONION, SOUP, STAY, Layout


class KitchenExpert:
    def __init__(self, layout: tuple[str, ...] = LAYOUT, epsilon: float = 0.0, seed: int = 0):
        self.layout = Layout.parse(layout)
        self.epsilon = epsilon
        self._rng = np.random.default_rng(seed)
        self.floor = set(self.layout.tiles.get(".", []))
        # tile char -> [(access cell, facing index)]
        self.access: dict[str, list[tuple[tuple[int, int], int]]] = {}
        for ch in "OPDS":
            for r, c in self.layout.tiles[ch]:
                for d, (dr, dc) in enumerate(DIRS):
                    cell = (r - dr, c - dc)
                    if cell in self.floor:
                        self.access.setdefault(ch, []).append((cell, d))

    def act(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for i, agent in enumerate(AGENTS):
            if agent not in obs:
                continue
            rows = np.asarray(obs[agent])
            acts = np.array([self.joint_action(row, i)[i] for row in rows], dtype=np.int64)
            if self.epsilon > 0:
                explore = self._rng.random(len(acts)) < self.epsilon
                acts[explore] = self._rng.integers(0, 6, size=int(explore.sum()))
            out[agent] = acts
        return out

    def joint_action(self, o: np.ndarray, me: int) -> tuple[int, int]:
        """Both cooks' actions, from cook `me`'s observation vector."""
        other = 1 - me
        pos = [None, None]
        facing, held = [0, 0], [0, 0]
        pos[me], pos[other] = (int(o[0]), int(o[1])), (int(o[10]), int(o[11]))
        facing[me], facing[other] = int(o[2:6].argmax()), int(o[12:16].argmax())
        held[me], held[other] = int(o[6:10].argmax()), int(o[16:20].argmax())
        pot = {"onions": int(round(o[20] * 3)), "cooking": o[21] > 0.5, "ready": o[22] > 0.5}
        tasks = [self._task(k, pos, held, pot) for k in range(2)]
        goals = [self._goal(tasks[k], pos[k], pos[1 - k]) for k in range(2)]
        a0, next0 = self._act(0, tasks[0], goals, pos, facing, held, pot, avoid={pos[1]}, other_goal=goals[1])
        a1, _ = self._act(1, tasks[1], goals, pos, facing, held, pot, avoid={pos[0], next0}, other_goal=goals[0])
        return a0, a1

    def _task(self, k: int, pos, held, pot) -> str | None:
        h, ho = held[k], held[1 - k]
        filling = pot["onions"] < 3
        busy = not filling
        if h == SOUP:
            return "S"
        if h == DISH:
            return "P" if busy else None
        if h == ONION:
            return "P" if filling else None
        dish_out = ho in (DISH, SOUP)
        will_fill = filling and pot["onions"] + (ho == ONION) >= 3
        if (busy or will_fill) and not dish_out:
            if ho != NOTHING or self._dish_priority(k, pos):
                return "D"
        return "O"

    def _dish_priority(self, k: int, pos) -> bool:
        d = [min(abs(pos[i][0] - c[0]) + abs(pos[i][1] - c[1]) for c, _ in self.access["D"]) for i in range(2)]
        return d[k] < d[1 - k] or (d[k] == d[1 - k] and k == 0)

    def _goal(self, task: str | None, me, other) -> tuple[tuple[int, int], int] | None:
        if task is None:
            return None
        options = [(c, f) for c, f in self.access[task] if c != other] or self.access[task]
        return min(options, key=lambda cf: abs(cf[0][0] - me[0]) + abs(cf[0][1] - me[1]))

    def _act(self, k, task, goals, pos, facing, held, pot, avoid, other_goal):
        """(action, cell after the move) for cook k."""
        me, goal = pos[k], goals[k]
        if goal is None:
            if other_goal is not None and me == other_goal[0]:
                step = self._step_aside(me, avoid | {other_goal[0]}, other_goal[0])
                if step is not None:
                    return step
            return STAY, me
        cell, face = goal
        if me == cell:
            if facing[k] != face:
                return face, me  # moving into a non-floor tile only turns
            if task == "P" and held[k] == DISH and not pot["ready"]:
                return STAY, me
            return INTERACT, me
        first = self._bfs_first_step(me, cell, avoid)
        if first is None:
            return STAY, me
        return first

    def _step_aside(self, me, blocked, away_from):
        best = None
        for d, (dr, dc) in enumerate(DIRS):
            cell = (me[0] + dr, me[1] + dc)
            if cell in self.floor and cell not in blocked:
                score = abs(cell[0] - away_from[0]) + abs(cell[1] - away_from[1])
                if best is None or score > best[0]:
                    best = (score, d, cell)
        return None if best is None else (best[1], best[2])

    def _bfs_first_step(self, start, goal, blocked):
        """(move action, next cell) of a shortest floor path avoiding `blocked`, or None."""
        first: dict[tuple[int, int], tuple[int, tuple[int, int]]] = {}
        queue = deque([start])
        seen = {start}
        while queue:
            cur = queue.popleft()
            if cur == goal:
                return first[cur]
            for d, (dr, dc) in enumerate(DIRS):
                nxt = (cur[0] + dr, cur[1] + dc)
                if nxt in self.floor and nxt not in seen and nxt not in blocked:
                    seen.add(nxt)
                    first[nxt] = first.get(cur, (d, nxt))
                    queue.append(nxt)
        return None
