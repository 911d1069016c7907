"""Grid symmetries: a rotated/reflected Gems transition is still a Gems transition."""

import numpy as np
import pytest
import torch

from mamql.envs.gems import MOVES, gems_move
from mamql.envs.symmetry import (
    TRANSFORMS,
    action_permutations,
    augment_batch,
    env_symmetries,
    permute_action_probs,
    transform_obs,
)
from mamql.learner.demos import collect_demos

AGENTS = ["agent_0", "agent_1"]


def _cells(planes: torch.Tensor, plane: int) -> np.ndarray:
    """(row, col) of the single 1 in `plane` of each row's [C, H, W] observation."""
    flat = planes[:, plane].reshape(len(planes), -1).argmax(1).numpy()
    return np.stack(np.divmod(flat, planes.shape[-1]), axis=1)


def test_permutations_form_the_dihedral_group_on_moves():
    perms = action_permutations(MOVES)
    assert perms.shape == (8, 5)
    assert (perms[0] == np.arange(5)).all()  # identity first
    assert all(sorted(p) == list(range(5)) for p in perms)  # each is a permutation
    assert (perms[:, 0] == 0).all()  # stay stays
    assert len({tuple(p) for p in perms}) == 8  # 8 distinct images of the 4 moves
    assert env_symmetries("kitchen") is None  # a kitchen layout is not symmetric


@pytest.mark.parametrize("t", range(8))
def test_transformed_expert_moves_match_transformed_next_positions(t):
    """For every demo row and agent: the transformed agent cell, moved by the PERMUTED action, is the
    agent cell in the transformed next observation (the dynamics commute with the symmetry)."""
    demos, _ = collect_demos("gems", 300, seed=5, num_envs=4)
    batch = {k: torch.as_tensor(v) for k, v in demos.items()}
    choice = torch.full((len(batch["done"]),), t)
    out = augment_batch(batch, AGENTS, torch.as_tensor(env_symmetries("gems")), choice)
    for a in AGENTS:
        assert torch.equal(out[f"obs/{a}"], transform_obs(batch[f"obs/{a}"], TRANSFORMS[t]))
        moved = gems_move(_cells(out[f"obs/{a}"], 0), out[f"action/{a}"].numpy())
        assert (moved == _cells(out[f"next_obs/{a}"], 0)).all()
    assert torch.equal(out["reward/agent_0"], batch["reward/agent_0"])
    if t:  # a non-identity transform really moves things
        assert not torch.equal(out["obs/agent_0"], batch["obs/agent_0"])


def test_action_probs_follow_the_actions_map():
    """A distribution moved by permute_action_probs puts each action's mass where augment_batch sends
    that action: one-hots go exactly where the actions go, and mass is kept."""
    perms = torch.as_tensor(action_permutations(MOVES))
    actions = torch.arange(5).repeat(8)
    choice = torch.arange(8).repeat_interleave(5)
    moved = permute_action_probs(torch.nn.functional.one_hot(actions, 5).float(), perms, choice)
    assert torch.equal(moved.argmax(-1), perms[choice, actions])
    probs = torch.softmax(torch.randn(40, 5), -1)
    out = permute_action_probs(probs, perms, choice)
    assert torch.allclose(out.sum(-1), torch.ones(40))
    for b in range(40):
        for a in range(5):
            assert out[b, perms[choice[b], a]] == probs[b, a]


def test_a_batch_without_next_obs_maps_the_same():
    """BC reads no next_obs: augment_batch maps obs and actions exactly as it does with them."""
    batch, _ = collect_demos("gems", 64, seed=1, num_envs=2)
    full = {f"{k}/{a}": torch.as_tensor(batch[f"{k}/{a}"]) for a in AGENTS for k in ("obs", "next_obs", "action")}
    perms = torch.as_tensor(action_permutations(MOVES))
    choice = torch.arange(len(batch["done"])) % 8
    with_next = augment_batch(full, AGENTS, perms, choice)
    without = augment_batch({k: v for k, v in full.items() if not k.startswith("next_obs/")}, AGENTS, perms, choice)
    assert not any(k.startswith("next_obs/") for k in without)
    for a in AGENTS:
        assert torch.equal(without[f"obs/{a}"], with_next[f"obs/{a}"])
        assert torch.equal(without[f"action/{a}"], with_next[f"action/{a}"])
