"""Scripted experts beat random play by a wide margin and honour the Policy contract."""

import numpy as np
import pytest

from mamql.envs.experts import RandomPolicy, make_expert
from mamql.envs.vector import VectorEnv


def mean_return(env, policy, episodes, num_envs=10, **kw):
    v = VectorEnv(env, num_envs, seed=1, **kw)
    obs, rets = v.reset(), []
    while len(rets) < episodes:
        res = v.step(policy.act(obs))
        obs = res.obs
        rets += list((res.episode_returns[v.agents[0]] + res.episode_returns[v.agents[1]]) / 2)
    return float(np.mean(rets[:episodes]))


def test_gems_expert_beats_random():
    expert = mean_return("gems", make_expert("gems"), 30)
    rand = mean_return("gems", make_expert("gems", "random"), 30)
    assert expert >= 10.0 and expert > 5 * max(rand, 1.0)


def test_kitchen_expert_serves_several_soups():
    expert = mean_return("kitchen", make_expert("kitchen"), 2, num_envs=2)
    rand = mean_return("kitchen", make_expert("kitchen", "random"), 2, num_envs=2)
    assert expert >= 5 * 20 and rand < expert / 5


def test_expert_actions_are_int64_batched():
    v = VectorEnv("gems", 4, seed=0)
    acts = make_expert("gems", epsilon=0.5).act(v.reset())
    assert set(acts) == {"agent_0", "agent_1"}
    assert all(a.dtype == np.int64 and a.shape == (4,) and ((a >= 0) & (a < 5)).all() for a in acts.values())


def test_random_policy_for_mpe_and_no_scripted_mpe():
    pol = make_expert("mpe/simple_adversary", "random", seed=2)
    assert isinstance(pol, RandomPolicy)
    acts = pol.act({"adversary_0": np.zeros((3, 8), np.float32)})
    assert acts["adversary_0"].shape == (3,) and acts["adversary_0"].dtype == np.int64
    with pytest.raises(ValueError):
        make_expert("mpe/simple_spread")
