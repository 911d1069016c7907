"""Gems rules on hand-built states, API conformance and seed determinism."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pettingzoo.test import parallel_api_test

from mamql.envs.gems import BLUE, DOWN, LEFT, PURPLE, RED, RIGHT, STAY, UP, GemsEnv, GemsState, gems_true_reward


def state(agents, gems, collected=0, step=0):
    """gems: list of (row, col, colour)."""
    g = np.array(gems, dtype=np.int64).reshape(-1, 3)
    return GemsState(np.array(agents, dtype=np.int64), g[:, :2].copy(), g[:, 2].copy(), collected, step)


def env_at(s, **kw):
    env = GemsEnv(**kw)
    env.reset(seed=0, options={"state": s})
    return env


def test_parallel_api():
    parallel_api_test(GemsEnv(), num_cycles=300)


def test_both_on_purple_pays_six_each_and_collects():
    s = state([[5, 5], [9, 9]], [[5, 6, PURPLE], [8, 9, PURPLE], [0, 0, RED], [14, 14, BLUE]])
    env = env_at(s)
    _, rew, term, trunc, _ = env.step({"agent_0": RIGHT, "agent_1": UP})
    assert rew == {"agent_0": 6.0, "agent_1": 6.0}
    assert env.state.collected == 2
    # both purple gems respawned elsewhere (not under the agents)
    purple = env.state.gem_pos[env.state.gem_color == PURPLE].tolist()
    assert [5, 6] not in purple and [8, 9] not in purple and len(purple) == 2
    assert not any(term.values()) and not any(trunc.values())


def test_one_agent_on_purple_pays_nothing():
    s = state([[5, 5], [9, 9]], [[5, 6, PURPLE], [0, 0, PURPLE]])
    env = env_at(s)
    _, rew, *_ = env.step({"agent_0": RIGHT, "agent_1": STAY})
    assert rew == {"agent_0": 0.0, "agent_1": 0.0}
    assert env.state.collected == 0 and [5, 6] in env.state.gem_pos.tolist()


def test_same_purple_gem_counts():
    s = state([[5, 5], [5, 7]], [[5, 6, PURPLE]])
    rew = gems_true_reward(s, [RIGHT, LEFT])
    assert rew.tolist() == [6.0, 6.0]


def test_own_colour_gem_pays_one_other_colour_nothing():
    s = state([[5, 5], [9, 9]], [[6, 5, RED], [10, 9, RED], [3, 3, BLUE]])
    env = env_at(s)
    _, rew, *_ = env.step({"agent_0": DOWN, "agent_1": DOWN})
    assert rew == {"agent_0": 1.0, "agent_1": 0.0}
    assert env.state.collected == 1
    assert [10, 9] in env.state.gem_pos.tolist()  # blue agent on a red gem leaves it
    assert gems_true_reward(s, [DOWN, DOWN]).tolist() == [1.0, 0.0]


def test_true_reward_is_pure():
    s = state([[5, 5], [9, 9]], [[6, 5, RED]])
    before = s.agent_pos.copy(), s.gem_pos.copy()
    assert gems_true_reward(s, [DOWN, STAY]).tolist() == [1.0, 0.0]
    assert np.array_equal(s.agent_pos, before[0]) and np.array_equal(s.gem_pos, before[1])


def test_seventh_gem_terminates():
    s = state([[5, 5], [9, 9]], [[6, 5, RED], [0, 0, BLUE]], collected=6)
    env = env_at(s)
    _, rew, term, trunc, _ = env.step({"agent_0": DOWN, "agent_1": STAY})
    assert rew["agent_0"] == 1.0
    assert term == {"agent_0": True, "agent_1": True} and not any(trunc.values())
    assert env.agents == []


def test_truncates_at_45_steps():
    env = GemsEnv()
    env.reset(seed=3)
    steps = 0
    while env.agents:
        _, _, term, trunc, _ = env.step({"agent_0": STAY, "agent_1": STAY})
        steps += 1
    assert steps == 45 and all(trunc.values()) and not any(term.values())


def test_walls_clip_moves():
    s = state([[0, 0], [14, 14]], [[7, 7, RED]])
    env = env_at(s)
    env.step({"agent_0": UP, "agent_1": RIGHT})
    assert env.state.agent_pos.tolist() == [[0, 0], [14, 14]]


def test_observation_planes_are_per_agent_perspective():
    s = state([[1, 2], [3, 4]], [[0, 0, RED], [0, 1, BLUE], [0, 2, PURPLE]])
    obs, _ = GemsEnv().reset(options={"state": s})
    o0, o1 = obs["agent_0"], obs["agent_1"]
    assert o0.dtype == np.uint8 and o0.shape == (5, 15, 15)
    assert o0[0, 1, 2] == o0[1, 3, 4] == o0[2, 0, 0] == o0[3, 0, 1] == o0[4, 0, 2] == 1
    assert o1[0, 3, 4] == o1[1, 1, 2] == o1[2, 0, 1] == o1[3, 0, 0] == o1[4, 0, 2] == 1
    assert o0.sum() == 5


def trajectory(seed):
    env = GemsEnv()
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    out = [obs["agent_0"].copy()]
    while env.agents:
        obs, rew, *_ = env.step({a: int(rng.integers(5)) for a in env.agents})
        out.append(obs["agent_0"].copy())
        out.append(np.array([rew["agent_0"], rew["agent_1"]]))
    return out


def test_seed_determinism():
    a, b, c = trajectory(7), trajectory(7), trajectory(8)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not (len(a) == len(c) and all(np.array_equal(x, y) for x, y in zip(a, c)))


def test_render_ansi():
    env = GemsEnv(render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert "A" in text and "B" in text and text.count("\n") == 16  # header, 15 rows, legend


@pytest.mark.parametrize("bad", ["human"])
def test_rejects_unknown_render_mode(bad):
    with pytest.raises(ValueError):
        GemsEnv(render_mode=bad)



@settings(max_examples=150, deadline=None)
@given(
    cells=st.lists(st.integers(0, 224), min_size=6, max_size=6, unique=True),
    colours=st.lists(st.sampled_from([RED, BLUE, PURPLE]), min_size=4, max_size=4),
    actions=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    shared=st.booleans(),
)
def test_env_reward_equals_true_reward(cells, colours, actions, shared):
    rc = [list(divmod(c, 15)) for c in cells]
    agents = [rc[0], rc[0] if shared else rc[1]]
    s = state(agents, [r + [col] for r, col in zip(rc[2:], colours)])
    expected = gems_true_reward(s, list(actions))
    env = env_at(s)
    _, rew, *_ = env.step({"agent_0": actions[0], "agent_1": actions[1]})
    assert [rew["agent_0"], rew["agent_1"]] == expected.tolist()
    assert set(expected.tolist()) <= {0.0, 1.0, 6.0}  # one gem per cell: never own + purple at once
    assert env.state.collected - s.collected == int(sum(r > 0 for r in expected)) - int(
        expected[0] == 6 and (env.state.agent_pos[0] == env.state.agent_pos[1]).all()
    )
    cells_after = {tuple(c) for c in env.state.gem_pos.tolist()}
    assert len(cells_after) == len(s.gem_pos)  # respawned gems never stack
