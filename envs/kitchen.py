"""Kitchen: a two-cook Overcooked "cramped room" game we own, as a PettingZoo ParallelEnv.

Layout (default; `X` counter, `O` onion dispenser, `P` pot, `D` dish dispenser, `S` serving
counter, `.` floor; cooks start at (2, 1) and (1, 3) facing up):

    X X P X X
    O . . . O
    X . . . X
    X D X S X

Actions: 0 up, 1 down, 2 left, 3 right, 4 stay, 5 interact. A move turns the cook to face that way
and steps if the cell ahead is free floor; two cooks never share a cell or swap (both stay).
Interact acts on the faced tile: take an onion or a dish from a dispenser with empty hands, put an
onion in the pot (3 onions start cooking; the soup is ready `cook_time` steps later), take the ready
soup with a dish, deliver a soup at the serving counter (+20 to both cooks). Counters hold nothing.
The episode is truncated after `horizon` steps (400); it never terminates.

Observation per cook, float32 [35], from its own perspective:
  0-1 own (row, col)          2-5 own facing one-hot (up, down, left, right)
  6-9 own held one-hot (nothing, onion, dish, soup)
  10-11 other (row, col)      12-15 other facing      16-19 other held
  20 pot onions / 3           21 cooking              22 ready        23 cook steps left / cook_time
  24-25 (drow, dcol) to the nearest onion dispenser   26-27 to the pot
  28-29 to the dish dispenser 30-31 to the serving counter            32-33 to the other cook
  34 fraction of the horizon elapsed
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

AGENTS = ("agent_0", "agent_1")
UP, DOWN, LEFT, RIGHT, STAY, INTERACT = range(6)
DIRS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)  # by facing index = move action
NOTHING, ONION, DISH, SOUP = range(4)
SOUP_REWARD = 20.0
OBS_DIM = 35
LAYOUT = ("XXPXX", "O...O", "X...X", "XDXSX")
STARTS = ((2, 1), (1, 3))
# what `render()` draws, explained under every text frame and beside every image frame
ANSI_LEGEND = ("0/1 cooks agent_0/agent_1 (header: facing ^v<>, holding -/onion/dish/soup)  X counter  "
               "O onions  P pot  D dishes  S serve (+20 each)  . floor")
COLOURS = {"agent_0": (214, 39, 40), "agent_1": (31, 119, 180), ".": (238, 238, 238), "X": (176, 146, 106),
           "O": (240, 200, 40), "P": (80, 80, 80), "D": (200, 225, 245), "S": (60, 170, 80),
           "onion": (240, 200, 40), "dish": (250, 250, 250), "soup": (255, 127, 14), "line": (205, 205, 205),
           "notch": (20, 20, 20)}
RGB_LEGEND = (  # (label, colour, "frame" | "fill"): how kitchen_rgb draws it
    ("agent_0 (black notch: facing)", COLOURS["agent_0"], "fill"), ("agent_1", COLOURS["agent_1"], "fill"),
    ("counter", COLOURS["X"], "fill"), ("onions / held onion / pot onions", COLOURS["O"], "fill"),
    ("pot: orange frame cooking, green ready", COLOURS["P"], "fill"), ("dishes", COLOURS["D"], "fill"),
    ("serve: +20 each", COLOURS["S"], "fill"), ("held soup", COLOURS["soup"], "fill"))


@dataclass
class KitchenState:
    pos: np.ndarray  # [2, 2] (row, col)
    facing: np.ndarray  # [2] index into DIRS
    held: np.ndarray  # [2] NOTHING / ONION / DISH / SOUP
    pot_onions: int = 0
    pot_timer: int = 0  # steps until ready while cooking (pot_onions == 3)
    t: int = 0
    served: int = 0


@dataclass(frozen=True)
class Layout:
    grid: tuple[str, ...]
    tiles: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @staticmethod
    def parse(grid: tuple[str, ...]) -> "Layout":
        tiles: dict[str, list[tuple[int, int]]] = {}
        for r, row in enumerate(grid):
            for c, ch in enumerate(row):
                tiles.setdefault(ch, []).append((r, c))
        return Layout(tuple(grid), tiles)

    def at(self, r: int, c: int) -> str:
        if 0 <= r < len(self.grid) and 0 <= c < len(self.grid[0]):
            return self.grid[r][c]
        return "X"


class KitchenEnv(ParallelEnv):
    """Two cooks share one pot: fetch 3 onions, wait for the soup, plate it with a dish, serve."""

    metadata = {"name": "kitchen_v0", "render_modes": ["ansi", "rgb_array"], "is_parallelizable": True}
    rgb_legend = RGB_LEGEND  # for `mamql envs play --gif`

    def __init__(self, horizon: int = 400, cook_time: int = 20, render_mode: str | None = None):
        if render_mode not in (None, "ansi", "rgb_array"):
            raise ValueError(f"render_mode must be None, 'ansi' or 'rgb_array', got {render_mode!r}")
        self.layout = Layout.parse(LAYOUT)
        self.horizon = self.max_steps = horizon
        self.cook_time = cook_time
        self.render_mode = render_mode
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self._obs_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self._act_space = spaces.Discrete(6)
        self.state: KitchenState | None = None

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        """The start is fixed, so the seed only seeds the action spaces; dynamics are deterministic."""
        if seed is not None:
            self._act_space.seed(seed)
        self.state = KitchenState(
            pos=np.array(STARTS, dtype=np.int64), facing=np.array([UP, UP]), held=np.array([NOTHING, NOTHING])
        )
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict):
        s = self.state
        acts = [int(actions[a]) for a in AGENTS]
        reward = 0.0
        for i, a in enumerate(acts):
            if a == INTERACT:
                reward += self._interact(i)
        self._move(acts)
        if s.pot_onions == 3 and s.pot_timer > 0:
            s.pot_timer -= 1
        s.t += 1
        truncated = s.t >= self.horizon
        agents = self.agents
        if truncated:
            self.agents = []
        return (
            self._observations(),
            {a: reward for a in agents},
            {a: False for a in agents},
            {a: truncated for a in agents},
            {a: {"served": s.served} for a in agents},
        )

    def get_state(self) -> dict:
        """A snapshot to hand back to set_state (a copy: step mutates the live state in place).
        The dynamics are deterministic, so restoring it and stepping with the same actions
        reproduces the same transition; learner.reward_compare draws successor states this way."""
        if self.state is None:
            raise RuntimeError("get_state before reset: there is no state yet")
        return {"state": _copy_state(self.state), "agents": tuple(self.agents)}

    def set_state(self, snapshot: dict) -> None:
        """Restore a get_state snapshot."""
        self.state = _copy_state(snapshot["state"])
        self.agents = list(snapshot["agents"])

    def _interact(self, i: int) -> float:
        s = self.state
        r, c = s.pos[i] + DIRS[s.facing[i]]
        tile, held = self.layout.at(r, c), s.held[i]
        if tile == "O" and held == NOTHING:
            s.held[i] = ONION
        elif tile == "D" and held == NOTHING:
            s.held[i] = DISH
        elif tile == "P" and held == ONION and s.pot_onions < 3:
            s.pot_onions += 1
            s.held[i] = NOTHING
            if s.pot_onions == 3:
                s.pot_timer = self.cook_time
        elif tile == "P" and held == DISH and s.pot_onions == 3 and s.pot_timer == 0:
            s.pot_onions = 0
            s.held[i] = SOUP
        elif tile == "S" and held == SOUP:
            s.held[i] = NOTHING
            s.served += 1
            return SOUP_REWARD
        return 0.0

    def _move(self, acts: list[int]) -> None:
        s = self.state
        new = s.pos.copy()
        for i, a in enumerate(acts):
            if a < 4:
                s.facing[i] = a
                r, c = s.pos[i] + DIRS[a]
                if self.layout.at(r, c) == ".":
                    new[i] = (r, c)
        same = (new[0] == new[1]).all()
        swap = (new[0] == s.pos[1]).all() and (new[1] == s.pos[0]).all()
        if not (same or swap):
            s.pos = new

    def _observations(self) -> dict[str, np.ndarray]:
        return {a: kitchen_observation(self.state, i, self.layout, self.cook_time, self.horizon) for i, a in enumerate(AGENTS)}

    def render(self) -> str | np.ndarray | None:
        """ansi: a header (time, soups served, pot, each cook's facing and load), the grid and a legend
        line; rgb_array: kitchen_rgb's image."""
        if self.render_mode is None or self.state is None:
            return None
        if self.render_mode == "rgb_array":
            return kitchen_rgb(self.state, self.layout, self.cook_time)
        s = self.state
        grid = [list(row) for row in self.layout.grid]
        for i in range(2):
            grid[s.pos[i][0]][s.pos[i][1]] = str(i)
        held = " ".join(f"{i}:{'^v<>'[s.facing[i]]}{['-', 'onion', 'dish', 'soup'][s.held[i]]}" for i in range(2))
        pot = "ready" if s.pot_onions == 3 and s.pot_timer == 0 else (
            f"cooking {s.pot_timer}" if s.pot_onions == 3 else f"{s.pot_onions}/3 onions"
        )
        header = f"t {s.t}/{self.horizon}  served {s.served}  pot {pot}  {held}"
        return "\n".join([header] + [" ".join(row) for row in grid] + [ANSI_LEGEND])

    def close(self) -> None:
        pass


def _copy_state(s: KitchenState) -> KitchenState:
    return KitchenState(pos=s.pos.copy(), facing=s.facing.copy(), held=s.held.copy(), pot_onions=s.pot_onions,
                        pot_timer=s.pot_timer, t=s.t, served=s.served)


def kitchen_rgb(s: KitchenState, layout: Layout, cook_time: int, cell: int = 32) -> np.ndarray:
    """The kitchen as an RGB image [rows*cell, cols*cell, 3] uint8: tiles in their colours (the pot
    with one yellow square per onion, an orange frame while cooking, a green centre when ready), each
    cook a square in its colour with a black notch on the side it faces and what it holds in the middle."""
    rows, cols = len(layout.grid), len(layout.grid[0])
    img = np.empty((rows * cell, cols * cell, 3), dtype=np.uint8)
    for r, row in enumerate(layout.grid):
        for c, ch in enumerate(row):
            img[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = COLOURS.get(ch, COLOURS["."])
    img[::cell, :] = img[:, ::cell] = COLOURS["line"]
    q = cell // 8
    for pr, pc in layout.tiles.get("P", []):
        y, x = pr * cell, pc * cell
        if s.pot_onions == 3 and s.pot_timer > 0:
            img[y + 1 : y + cell, x + 1 : x + cell] = COLOURS["soup"]
            img[y + 2 * q : y + cell - 2 * q, x + 2 * q : x + cell - 2 * q] = COLOURS["P"]
        elif s.pot_onions == 3:
            img[y + 2 * q : y + cell - 2 * q, x + 2 * q : x + cell - 2 * q] = COLOURS["S"]
        for k in range(s.pot_onions if s.pot_timer > 0 or s.pot_onions < 3 else 0):
            img[y + 3 * q : y + 5 * q, x + q + 2 * k * q : x + 3 * q + 2 * k * q] = COLOURS["onion"]
    for i, agent in enumerate(AGENTS):
        y, x = s.pos[i][0] * cell, s.pos[i][1] * cell
        img[y + q : y + cell - q, x + q : x + cell - q] = COLOURS[agent]
        dr, dc = DIRS[s.facing[i]]
        reach = cell // 2 - q - q // 2  # the notch sits at the edge of the cook's square
        cy, cx = y + cell // 2 + dr * reach, x + cell // 2 + dc * reach
        img[cy - q // 2 : cy + q // 2, cx - q // 2 : cx + q // 2] = COLOURS["notch"]
        if s.held[i] != NOTHING:
            item = ("onion", "dish", "soup")[s.held[i] - 1]
            img[y + 3 * q : y + 5 * q, x + 3 * q : x + 5 * q] = COLOURS[item]
    return img


def kitchen_observation(s: KitchenState, i: int, layout: Layout, cook_time: int, horizon: int) -> np.ndarray:
    o = np.zeros(OBS_DIM, dtype=np.float32)
    j = 1 - i
    me = s.pos[i]
    for base, k in ((0, i), (10, j)):
        o[base : base + 2] = s.pos[k]
        o[base + 2 + s.facing[k]] = 1
        o[base + 6 + s.held[k]] = 1
    o[20] = s.pot_onions / 3
    o[21] = float(s.pot_onions == 3 and s.pot_timer > 0)
    o[22] = float(s.pot_onions == 3 and s.pot_timer == 0)
    o[23] = s.pot_timer / cook_time if s.pot_onions == 3 else 0.0
    for base, ch in ((24, "O"), (26, "P"), (28, "D"), (30, "S")):
        cells = np.array(layout.tiles[ch])
        d = cells - me
        o[base : base + 2] = d[np.abs(d).sum(1).argmin()]
    o[32:34] = s.pos[j] - me
    o[34] = s.t / horizon
    return o
