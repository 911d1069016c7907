"""Grid symmetries: the 8 rotations/reflections of a square grid game, as (obs, action) maps.

Gems has no walls and no preferred direction, so rotating or reflecting a whole transition (every
agent's observation planes, next observations and moves) gives another valid transition with the
same rewards, and an expert's move maps to an equally good move. Offering the learner all 8 images
of each demonstration multiplies what a small demo set teaches (`learner.augment=symmetry`).

A transform is (transpose, flip_rows, flip_cols), applied in that order to the last two (row, col)
axes of an observation and to a move's (drow, dcol).
"""

from __future__ import annotations

import itertools

import numpy as np
from torch import Tensor

TRANSFORMS = tuple(itertools.product((False, True), repeat=3))  # (transpose, flip_rows, flip_cols); [0] = identity


def _move_image(move: np.ndarray, transform: tuple[bool, bool, bool]) -> np.ndarray:
    dr, dc = int(move[0]), int(move[1])
    transpose, flip_rows, flip_cols = transform
    if transpose:
        dr, dc = dc, dr
    return np.array([-dr if flip_rows else dr, -dc if flip_cols else dc])


def action_permutations(moves: np.ndarray) -> np.ndarray:
    """[8, A] long: perm[t, a] = the action whose move is the image of action a's move under
    TRANSFORMS[t]. `moves` [A, 2] are the (drow, dcol) of each action (stay = (0, 0))."""
    moves = np.asarray(moves)
    index = {tuple(m): a for a, m in enumerate(moves.tolist())}
    return np.array([[index[tuple(_move_image(m, t).tolist())] for m in moves] for t in TRANSFORMS], dtype=np.int64)


def transform_obs(obs: Tensor, transform: tuple[bool, bool, bool]) -> Tensor:
    """Apply one transform to the trailing (row, col) axes of a batch of planes [..., H, W]."""
    transpose, flip_rows, flip_cols = transform
    if transpose:
        obs = obs.transpose(-1, -2)
    dims = [d for d, on in ((-2, flip_rows), (-1, flip_cols)) if on]
    return obs.flip(dims) if dims else obs


def env_symmetries(env_name: str) -> np.ndarray | None:
    """Action permutations [8, A] for envs whose dynamics are symmetric under the grid's dihedral
    group, else None (augmentation is then refused, not silently skipped)."""
    if env_name == "gems":
        from mamql.envs.gems import MOVES

        return action_permutations(MOVES)
    return None


def augment_batch(batch: dict[str, Tensor], agents: list[str], perms: Tensor, choice: Tensor) -> dict[str, Tensor]:
    """Rows of a transition batch mapped by TRANSFORMS[choice[row]] (perms, choice and the batch on
    one device): every agent's obs, next_obs and
    action with the SAME transform per row (the joint transition stays consistent). Square grids only.
    Returns a new dict; the other fields (rewards, done) are unchanged, as symmetry preserves them. A batch
    without next_obs (a learner that reads none, like BC) is mapped without it."""
    out = dict(batch)
    for key in [k for k in [f"obs/{a}" for a in agents] + [f"next_obs/{a}" for a in agents] if k in batch]:
        x = batch[key].clone()
        for t, transform in enumerate(TRANSFORMS[1:], start=1):
            rows = (choice == t).nonzero().squeeze(-1)
            if rows.numel():
                x[rows] = transform_obs(batch[key][rows], transform)
        out[key] = x
    for a in agents:
        out[f"action/{a}"] = perms[choice, batch[f"action/{a}"].long()]
    return out


def permute_action_probs(probs: Tensor, perms: Tensor, choice: Tensor) -> Tensor:
    """Action distributions [B, A] carried through the same maps as augment_batch's actions: row b's
    probability of action a moves to action perms[choice[b], a]."""
    out = probs.new_empty(probs.shape)
    out.scatter_(-1, perms[choice].long(), probs)
    return out
