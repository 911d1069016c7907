"""experiments/policy_actions: a critic whose argmax ignores the state shows up as one action."""

import numpy as np
import pytest
import torch

from mamql.envs.registry import env_spec
from mamql.experiments.policy_actions import action_frequencies, advantage_split
from mamql.learner.networks import build_critics
from mamql.learner.policy import BoltzmannPolicy


def _biased_policy(mode: str, alpha: float, bias: float) -> BoltzmannPolicy:
    """Kitchen critics whose Q(s, .) = (0, 0, bias, 0, 0, 0) in every state: the last layer's
    weights zeroed, its bias set."""
    critics = build_critics(env_spec("kitchen"), (8,), "mlp")
    for critic in critics.values():
        last = [m for m in critic.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[2] = bias
    return BoltzmannPolicy(critics, alpha=alpha, mode=mode, seed=0)


def test_a_state_blind_argmax_is_one_action_greedy_and_the_boltzmann_share_sampled():
    greedy = action_frequencies(_biased_policy("greedy", 1.0, 0.5), "kitchen", episodes=2, seed=3)
    for agent in ("agent_0", "agent_1"):
        assert greedy[agent]["top_action"] == 2 and greedy[agent]["top_share"] == 1.0
        assert greedy[agent]["steps"] == 2 * env_spec("kitchen").max_steps
    sampled = action_frequencies(_biased_policy("sample", 1.0, 0.5), "kitchen", episodes=2, seed=3)
    expected = np.exp(0.5) / (np.exp(0.5) + 5)  # 0.248: Boltzmann's share of the favoured action
    for agent in ("agent_0", "agent_1"):
        freq = sampled[agent]["frequencies"]
        assert sum(freq) == pytest.approx(1.0, abs=1e-3)
        assert freq[2] == pytest.approx(expected, abs=0.05)  # 800 draws: std 0.015
        assert max(f for i, f in enumerate(freq) if i != 2) < expected



def test_advantage_split_by_hand():
    """Q = offset (0, 2, 0) plus a state part (+1, -1, 0) in one state and (-1, +1, 0) in the other:
    the offsets come back exactly, the state's part has std sqrt(2/3) in each state."""
    q = np.array([[1.0, 1.0, 0.0], [-1.0, 3.0, 0.0]]) + 5.0  # a constant per state changes nothing
    out = advantage_split(q)
    assert out["offsets"] == pytest.approx([-2 / 3, 4 / 3, -2 / 3], abs=1e-4)
    assert out["offset_spread"] == pytest.approx(np.std([0, 2, 0]), abs=1e-4)
    assert out["state_spread"] == pytest.approx(np.sqrt(2 / 3), abs=1e-4)
    assert out["offset_to_state"] == pytest.approx(np.std([0, 2, 0]) / np.sqrt(2 / 3), abs=1e-3)


def test_state_blind_critic_reads_as_all_offset():
    out = action_frequencies(_biased_policy("greedy", 1.0, 0.5), "kitchen", episodes=2, seed=3, advantages=True)
    adv = out["agent_0"]["advantages"]
    assert adv["state_spread"] == pytest.approx(0.0, abs=1e-6) and adv["offset_spread"] > 0.1
    assert adv["offsets"][2] == pytest.approx(0.5 * 5 / 6, abs=1e-4)  # 0.5 less the mean over 6 actions
    expected = -sum(p * np.log(p) for p in np.exp([0, 0, 0.5, 0, 0, 0]) / np.exp([0, 0, 0.5, 0, 0, 0]).sum())
    assert out["agent_0"]["entropy_nats"] == pytest.approx(expected, abs=1e-4)
    assert "advantages" not in action_frequencies(_biased_policy("greedy", 1.0, 0.5), "kitchen", episodes=1, seed=3)["agent_0"]


def test_boltzmann_entropy_by_hand():
    """The entropy entropy_nats averages: experiments.experts.boltzmann_entropy, per row."""
    from mamql.experiments.experts import boltzmann_entropy

    assert boltzmann_entropy(np.zeros((3, 4)), 1.0) == pytest.approx(np.log(4))
    assert boltzmann_entropy(np.array([[0.0, np.log(3.0)]]), 1.0) == pytest.approx(-(0.25 * np.log(0.25) + 0.75 * np.log(0.75)))
    assert boltzmann_entropy(np.array([[0.0, 100.0]]), 1.0) == pytest.approx(0.0, abs=1e-12)  # no overflow
    assert boltzmann_entropy(np.array([[0.0, 1.0]]), 0.5) == pytest.approx(boltzmann_entropy(np.array([[0.0, 2.0]]), 1.0))
