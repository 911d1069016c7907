"""Gems: the paper's two-agent mixed-motive grid game, as a PettingZoo ParallelEnv.

Rules (paper, "Environments"):
- 15x15 open grid, agents `agent_0` (red) and `agent_1` (blue). Two agents may share a cell.
- Actions: 0 stay, 1 up (row - 1), 2 down (row + 1), 3 left (col - 1), 4 right (col + 1);
  moves off the grid leave the agent in place. (The reference code orders them differently; the
  set is the same.)
- Gems: 3 red (agent_0's colour), 3 blue (agent_1's), 2 purple by default; one gem per cell.
- +1 to an agent that steps on a gem of its own colour (the gem is collected; one gem per cell, so
  at most +1 per step). Standing on the other agent's colour does nothing.
- +6 to BOTH agents when both stand on purple gems after the same step (the same or two different
  purple gems); those purple gems are collected.
- Collected gems respawn at a random free cell (no gem, no agent), drawn from the env's seeded rng.
- The episode terminates once 7 gems have been collected in total and is truncated at 45 steps.

Observation per agent: uint8 planes [5, 15, 15], from that agent's own perspective:
  0 own position, 1 other agent's position, 2 gems of own colour, 3 gems of the other agent's
  colour, 4 purple gems.

The reward is also exposed as a pure function, `gems_true_reward(state, actions)`, so evaluation can
score recovered rewards against the true one on any (state, joint action).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

AGENTS = ("agent_0", "agent_1")
RED, BLUE, PURPLE = 0, 1, 2  # gem colours; agent i's own colour is i
STAY, UP, DOWN, LEFT, RIGHT = range(5)
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)  # (drow, dcol) per action
PURPLE_BONUS = 6.0
OWN_GEM_REWARD = 1.0
PLANES = ("own_pos", "other_pos", "own_gems", "other_gems", "purple_gems")
# what `render()` draws, explained under every text frame and beside every image frame
ANSI_LEGEND = "A agent_0 (red)  B agent_1 (blue)  * both on one cell  r/b/p red/blue/purple gem  . empty"
COLOURS = {"agent_0": (214, 39, 40), "agent_1": (31, 119, 180), "purple": (148, 52, 196),
           "floor": (238, 238, 238), "line": (205, 205, 205)}
RGB_LEGEND = (  # (label, colour, "frame" | "fill"): how gems_rgb draws it
    ("agent_0", COLOURS["agent_0"], "frame"), ("agent_1", COLOURS["agent_1"], "frame"),
    ("red gem: +1 agent_0", COLOURS["agent_0"], "fill"), ("blue gem: +1 agent_1", COLOURS["agent_1"], "fill"),
    ("purple gem: +6 each when both step on purple", COLOURS["purple"], "fill"))


@dataclass(frozen=True)
class GemsState:
    """Everything the dynamics need: agent cells [2, 2], gem cells [G, 2], gem colours [G]."""

    agent_pos: np.ndarray
    gem_pos: np.ndarray
    gem_color: np.ndarray
    collected: int = 0
    step: int = 0


def gems_move(agent_pos: np.ndarray, actions: np.ndarray, size: int = 15) -> np.ndarray:
    return np.clip(agent_pos + MOVES[np.asarray(actions, dtype=np.int64)], 0, size - 1)


def gems_transition(state: GemsState, actions, size: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pure dynamics without respawn: (new agent cells, rewards [2] float32, collected-gem mask [G])."""
    pos = gems_move(state.agent_pos, actions, size)
    rewards = np.zeros(2, dtype=np.float32)
    collected = np.zeros(len(state.gem_color), dtype=bool)
    on_gem = [np.flatnonzero((state.gem_pos == pos[i]).all(axis=1)) for i in range(2)]
    for i in range(2):
        if on_gem[i].size and state.gem_color[on_gem[i][0]] == i:
            rewards[i] += OWN_GEM_REWARD
            collected[on_gem[i][0]] = True
    if all(g.size and state.gem_color[g[0]] == PURPLE for g in on_gem):
        rewards += PURPLE_BONUS
        collected[on_gem[0][0]] = collected[on_gem[1][0]] = True
    return pos, rewards, collected


def gems_true_reward(state: GemsState, actions, size: int = 15) -> np.ndarray:
    """True reward per agent [2] (float32) for taking joint `actions` in `state`."""
    return gems_transition(state, actions, size)[1]


_PLANE_OF_COLOUR = (np.array([2, 3, 4]), np.array([3, 2, 4]))  # per agent: gem colour -> plane


def gems_observation(state: GemsState, agent: int, size: int = 15) -> np.ndarray:
    """The [5, size, size] uint8 planes agent `agent` sees (order in PLANES)."""
    planes = np.zeros((5, size, size), dtype=np.uint8)
    order = [agent, 1 - agent]
    planes[[0, 1], state.agent_pos[order, 0], state.agent_pos[order, 1]] = 1
    planes[_PLANE_OF_COLOUR[agent][state.gem_color], state.gem_pos[:, 0], state.gem_pos[:, 1]] = 1
    return planes


def gems_rgb(state: GemsState, size: int = 15, cell: int = 16) -> np.ndarray:
    """The grid as an RGB image [size*cell, size*cell, 3] uint8: gems are filled squares in their
    colour, each agent a frame around its cell in its colour (a gem under it stays visible); two
    agents on one cell share it: agent_0 the top and left edges, agent_1 the bottom and right."""
    img = np.empty((size * cell, size * cell, 3), dtype=np.uint8)
    img[:] = COLOURS["floor"]
    img[::cell, :] = img[:, ::cell] = COLOURS["line"]
    gem_colour = (COLOURS["agent_0"], COLOURS["agent_1"], COLOURS["purple"])
    lo, hi = cell // 4, cell - cell // 4
    for (r, c), colour in zip(state.gem_pos, state.gem_color):
        img[r * cell + lo : r * cell + hi, c * cell + lo : c * cell + hi] = gem_colour[colour]
    (r0, c0), (r1, c1) = state.agent_pos
    shared = (r0, c0) == (r1, c1)
    w = max(2, cell // 6)
    for i, (r, c) in enumerate(state.agent_pos):
        y, x, colour = r * cell, c * cell, COLOURS[AGENTS[i]]
        if not shared or i == 0:
            img[y + 1 : y + 1 + w, x + 1 : x + cell] = colour  # top
            img[y + 1 : y + cell, x + 1 : x + 1 + w] = colour  # left
        if not shared or i == 1:
            img[y + cell - w : y + cell, x + 1 : x + cell] = colour  # bottom
            img[y + 1 : y + cell, x + cell - w : x + cell] = colour  # right
    return img


class GemsEnv(ParallelEnv):
    """Two agents collect gems; own colour pays the collector, purple pays both if they cooperate."""

    metadata = {"name": "gems_v0", "render_modes": ["ansi", "rgb_array"], "is_parallelizable": True}
    rgb_legend = RGB_LEGEND  # for `mamql envs play --gif`

    def __init__(
        self,
        size: int = 15,
        num_red: int = 3,
        num_blue: int = 3,
        num_purple: int = 2,
        gem_limit: int = 7,
        max_steps: int = 45,
        render_mode: str | None = None,
    ):
        if render_mode not in (None, "ansi", "rgb_array"):
            raise ValueError(f"render_mode must be None, 'ansi' or 'rgb_array', got {render_mode!r}")
        self.size, self.gem_limit, self.max_steps = size, gem_limit, max_steps
        self.render_mode = render_mode
        self.gem_colors = np.array([RED] * num_red + [BLUE] * num_blue + [PURPLE] * num_purple, dtype=np.int64)
        if 2 + len(self.gem_colors) > size * size:
            raise ValueError("more gems and agents than cells")
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self._obs_space = spaces.Box(0, 1, shape=(5, size, size), dtype=np.uint8)
        self._act_space = spaces.Discrete(5)
        self._rng = np.random.default_rng()
        self.state: GemsState | None = None

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        """`options={"state": GemsState}` starts from a hand-built state (used by tests)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._act_space.seed(seed)
        if options and "state" in options:
            self.state = options["state"]
        else:
            n = len(self.gem_colors)
            cells = self._rng.choice(self.size * self.size, size=2 + n, replace=False)
            xy = np.stack(np.divmod(cells, self.size), axis=1).astype(np.int64)
            self.state = GemsState(agent_pos=xy[:2], gem_pos=xy[2:], gem_color=self.gem_colors.copy())
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict):
        s = self.state
        pos, rewards, collected = gems_transition(s, [actions[a] for a in AGENTS], self.size)
        gem_pos = s.gem_pos
        if collected.any():
            gem_pos = gem_pos.copy()
            for g in np.flatnonzero(collected):
                gem_pos[g] = self._free_cell(pos, gem_pos)
        self.state = replace(
            s, agent_pos=pos, gem_pos=gem_pos, collected=s.collected + int(collected.sum()), step=s.step + 1
        )
        terminated = self.state.collected >= self.gem_limit
        truncated = not terminated and self.state.step >= self.max_steps
        obs = self._observations()
        agents = self.agents
        if terminated or truncated:
            self.agents = []
        return (
            obs,
            {a: float(rewards[i]) for i, a in enumerate(agents)},
            {a: terminated for a in agents},
            {a: truncated for a in agents},
            {a: {} for a in agents},
        )

    def get_state(self) -> dict:
        """A snapshot to hand back to set_state: the GemsState, the respawn rng's state and the live
        agents. Restoring it and stepping with the same actions reproduces the same transition
        (respawn cells included), which is what a simulator-based reward comparison
        (learner.reward_compare) needs to draw successor states of any visited state."""
        if self.state is None:
            raise RuntimeError("get_state before reset: there is no state yet")
        s = self.state
        return {"state": replace(s, agent_pos=s.agent_pos.copy(), gem_pos=s.gem_pos.copy(), gem_color=s.gem_color.copy()),
                "rng": self._rng.bit_generator.state, "agents": tuple(self.agents)}

    def set_state(self, snapshot: dict) -> None:
        """Restore a get_state snapshot (of an env with the same size and gem counts)."""
        s = snapshot["state"]
        if s.gem_color.shape != self.gem_colors.shape:
            raise ValueError(f"snapshot has {len(s.gem_color)} gems, this env {len(self.gem_colors)}")
        self.state = replace(s, agent_pos=s.agent_pos.copy(), gem_pos=s.gem_pos.copy(), gem_color=s.gem_color.copy())
        if self._rng.bit_generator.state["bit_generator"] != snapshot["rng"]["bit_generator"]:
            self._rng = np.random.default_rng()
        self._rng.bit_generator.state = snapshot["rng"]
        self.agents = list(snapshot["agents"])

    def _free_cell(self, agent_pos: np.ndarray, gem_pos: np.ndarray) -> np.ndarray:
        taken = np.zeros(self.size * self.size, dtype=bool)
        taken[agent_pos[:, 0] * self.size + agent_pos[:, 1]] = True
        taken[gem_pos[:, 0] * self.size + gem_pos[:, 1]] = True  # includes the collected gem's old cell
        cell = self._rng.choice(np.flatnonzero(~taken))
        return np.array(divmod(int(cell), self.size), dtype=np.int64)

    def _observations(self) -> dict[str, np.ndarray]:
        return {a: gems_observation(self.state, i, self.size) for i, a in enumerate(self.possible_agents)}

    def render(self) -> str | np.ndarray | None:
        """ansi: a header, the grid and a legend line; rgb_array: gems_rgb's image."""
        if self.render_mode is None or self.state is None:
            return None
        if self.render_mode == "rgb_array":
            return gems_rgb(self.state, self.size)
        grid = [["." for _ in range(self.size)] for _ in range(self.size)]
        for (r, c), colour in zip(self.state.gem_pos, self.state.gem_color):
            grid[r][c] = "rbp"[colour]
        (r0, c0), (r1, c1) = self.state.agent_pos
        grid[r0][c0] = "A"  # an agent hides the gem it stands on
        grid[r1][c1] = "*" if (r0, c0) == (r1, c1) else "B"
        header = f"step {self.state.step}/{self.max_steps}  gems {self.state.collected}/{self.gem_limit}"
        return "\n".join([header] + [" ".join(row) for row in grid] + [ANSI_LEGEND])

    def close(self) -> None:
        pass
