"""Kitchen rules: a hand-played soup pays +20, collisions, horizon; API and determinism."""

import numpy as np
from pettingzoo.test import parallel_api_test

from mamql.envs.kitchen import DOWN, INTERACT, LEFT, OBS_DIM, RIGHT, STAY, UP, KitchenEnv


def play(env, script):
    """script: list of (action agent_0, action agent_1); returns the summed reward of agent_0."""
    total = 0.0
    for a0, a1 in script:
        _, rew, *_ = env.step({"agent_0": a0, "agent_1": a1})
        assert rew["agent_0"] == rew["agent_1"]
        total += rew["agent_0"]
    return total


def test_parallel_api():
    parallel_api_test(KitchenEnv(horizon=60), num_cycles=300)


def test_scripted_soup_pays_twenty():
    env = KitchenEnv(cook_time=5)
    env.reset()
    # agent_1 at (1,3) fetches onions from the right dispenser and carries them to the pot at (0,2)
    one_onion = [(STAY, RIGHT), (STAY, INTERACT), (STAY, LEFT), (STAY, UP), (STAY, INTERACT), (STAY, RIGHT)]
    assert play(env, one_onion * 3) == 0.0
    assert env.state.pot_onions == 3 and env.state.pot_timer > 0
    # agent_0 at (2,1) takes a dish (faces down at the dish dispenser), waits, then plates and serves
    assert play(env, [(DOWN, STAY), (INTERACT, STAY), (STAY, STAY), (STAY, STAY)]) == 0.0
    assert env.state.held[0] == 2  # dish
    # go to (1,2) facing up: right to (2,2), up to (1,2), up again turns to face the pot
    assert play(env, [(RIGHT, STAY), (UP, STAY), (UP, STAY), (INTERACT, STAY)]) == 0.0
    assert env.state.held[0] == 3  # soup
    # to (2,3), face down at the serving counter
    served = play(env, [(DOWN, STAY), (RIGHT, STAY), (DOWN, STAY), (INTERACT, STAY)])
    assert served == 20.0 and env.state.served == 1 and env.state.held[0] == 0


def test_dish_before_soup_is_ready_does_nothing():
    env = KitchenEnv(cook_time=50)
    env.reset()
    env.state.pot_onions, env.state.pot_timer = 3, 50
    env.state.held[0] = 2
    env.state.pos[0] = (1, 2)
    play(env, [(UP, STAY), (INTERACT, STAY)])
    assert env.state.held[0] == 2 and env.state.pot_onions == 3


def test_cooks_cannot_share_a_cell_or_swap():
    env = KitchenEnv()
    env.reset()
    env.state.pos[:] = [(1, 1), (1, 3)]
    play(env, [(RIGHT, LEFT)])  # both into (1,2)
    assert env.state.pos.tolist() == [[1, 1], [1, 3]]
    env.state.pos[:] = [(1, 1), (1, 2)]
    play(env, [(RIGHT, LEFT)])  # swap
    assert env.state.pos.tolist() == [[1, 1], [1, 2]]
    play(env, [(DOWN, LEFT)])  # agent_1 follows into the vacated cell
    assert env.state.pos.tolist() == [[2, 1], [1, 1]]


def test_truncates_at_horizon_and_observation_shape():
    env = KitchenEnv(horizon=17)
    obs, _ = env.reset()
    assert obs["agent_0"].shape == (OBS_DIM,) and obs["agent_0"].dtype == np.float32
    n = 0
    while env.agents:
        _, _, term, trunc, _ = env.step({"agent_0": STAY, "agent_1": STAY})
        n += 1
    assert n == 17 and all(trunc.values()) and not any(term.values())


def test_seed_determinism():
    def run(seed):
        env = KitchenEnv(horizon=50)
        env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        out = []
        while env.agents:
            obs, *_ = env.step({a: int(rng.integers(6)) for a in env.agents})
            out.append(obs["agent_1"])
        return np.stack(out)

    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_render_ansi_shows_cooks_and_pot():
    env = KitchenEnv(render_mode="ansi")
    env.reset()
    text = env.render()
    assert "0" in text.splitlines()[3] and "pot 0/3" in text
