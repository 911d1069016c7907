"""env.kwargs.max_episode_steps: mamql truncates episodes of any env (envs.limit.EpisodeLimit)."""

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from mamql.envs.registry import env_spec, make
from mamql.envs.vector import VectorEnv

SPEC = "corridor_env:CorridorEnv"


def test_limit_truncates_every_agent_and_passes_the_parallel_api_test():
    env = make(SPEC, max_cycles=1000, max_episode_steps=3)
    parallel_api_test(env, num_cycles=20)
    env.reset(seed=0)
    for t in range(1, 4):
        _, _, terminated, truncated, _ = env.step({a: 1 for a in env.agents})
        assert all(truncated.values()) == (t == 3) and not any(terminated.values())
    assert env.agents == []
    env.reset(seed=1)  # a new episode counts from zero
    assert env.agents == ["agent_0", "agent_1"]


def test_spec_reports_the_limit_and_the_vector_env_resets_on_it():
    assert env_spec(SPEC, max_cycles=1000, max_episode_steps=4).max_steps == 4
    assert env_spec(SPEC).max_steps == 0  # no limit declared: unknown
    venv = VectorEnv(SPEC, num_envs=2, seed=0, max_cycles=1000, max_episode_steps=4)
    venv.reset()
    ends = []
    for t in range(1, 9):
        out = venv.step({a: np.ones(2, dtype=np.int64) for a in venv.agents})
        if out.truncated.any():
            ends.append(t)
    assert ends == [4, 8]


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10"])
def test_a_bad_limit_is_refused(bad):
    with pytest.raises(ValueError, match="max_episode_steps must be an integer >= 1"):
        make(SPEC, max_episode_steps=bad)
