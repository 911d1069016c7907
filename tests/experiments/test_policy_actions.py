"""experiments/policy_actions: a critic whose argmax ignores the state shows up as one action."""

import numpy as np
import pytest
import torch

from mamql.envs.registry import env_spec
from mamql.experiments.policy_actions import action_frequencies
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
