"""Registry names, EnvSpec, and the MPE wrappers' API conformance."""

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from mamql import envs


def test_list_envs():
    names = envs.list_envs()
    assert {"gems", "kitchen", "mpe/simple_spread", "mpe/simple_adversary", "mpe/simple_tag"} <= set(names)


@pytest.mark.parametrize("name", ["mpe/simple_spread", "mpe/simple_adversary", "mpe/simple_tag"])
def test_mpe_parallel_api(name):
    parallel_api_test(envs.make(name), num_cycles=60)


def test_short_mpe_alias_and_unknown_name():
    assert envs.canonical_name("simple_spread") == "mpe/simple_spread"
    with pytest.raises(KeyError):
        envs.make("no_such_env")


def test_env_spec_gems_and_kitchen():
    g = envs.env_spec("gems")
    assert g.agents == ("agent_0", "agent_1")
    assert g.obs_shape["agent_0"] == (5, 15, 15) and g.obs_dtype["agent_1"] == "uint8"
    assert g.num_actions == {"agent_0": 5, "agent_1": 5} and g.max_steps == 45
    k = envs.env_spec("kitchen", horizon=100)
    assert k.obs_dtype["agent_0"] == "float32" and k.num_actions["agent_1"] == 6 and k.max_steps == 100
    assert k.obs_shape["agent_0"][0] >= 27


def test_env_spec_mpe_agents_differ_in_shape():
    s = envs.env_spec("simple_adversary", max_cycles=30)
    assert s.obs_shape["adversary_0"] != s.obs_shape["agent_0"]
    assert set(s.obs_dtype.values()) == {"float32"} and s.max_steps == 30


def test_mpe_seed_determinism():
    def run(seed):
        env = envs.make("mpe/simple_tag")
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = [obs["agent_0"]]
        while env.agents:
            obs, *_ = env.step({a: int(rng.integers(5)) for a in env.agents})
            out.append(obs["agent_0"])
        return np.stack(out)

    assert np.array_equal(run(3), run(3)) and not np.array_equal(run(3), run(4))
