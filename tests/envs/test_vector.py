"""VectorEnv: auto-reset, next_obs before reset, episode bookkeeping and the transition batch."""

import numpy as np

from mamql.envs.gems import GemsEnv
from mamql.envs.vector import VectorEnv, transition_batch
from mamql.batch import batch_size


def test_shapes_dtypes_and_batch_fields():
    v = VectorEnv("gems", 3, seed=0)
    obs = v.reset()
    assert obs["agent_0"].shape == (3, 5, 15, 15) and obs["agent_0"].dtype == np.uint8
    actions = {a: np.array([1, 2, 3]) for a in v.agents}
    res = v.step(actions)
    batch = transition_batch(obs, actions, res)
    assert batch_size(batch) == 3
    assert batch["action/agent_0"].dtype == np.int64 and batch["reward/agent_1"].dtype == np.float32
    assert batch["done"].dtype == bool and batch["truncated"].dtype == bool
    assert batch["episode_id"].dtype == np.int64 and batch["step"].dtype == np.int32
    assert batch["step"].tolist() == [0, 0, 0] and len(set(batch["episode_id"].tolist())) == 3


def test_copies_match_single_envs_and_auto_reset():
    """Copy k reproduces a GemsEnv seeded with seed + k, episode after episode."""
    K, seed = 2, 5
    v = VectorEnv("gems", K, seed=seed, max_steps=4)
    refs = [GemsEnv(max_steps=4) for _ in range(K)]
    ref_obs = [r.reset(seed=seed + k)[0] for k, r in enumerate(refs)]
    obs = v.reset()
    rng = np.random.default_rng(0)
    ended = 0
    for t in range(10):
        actions = {a: rng.integers(0, 5, size=K) for a in v.agents}
        res = v.step(actions)
        for k, r in enumerate(refs):
            assert np.array_equal(obs["agent_0"][k], ref_obs[k]["agent_0"])
            o, rew, te, tr, _ = r.step({a: int(actions[a][k]) for a in v.agents})
            assert np.array_equal(res.next_obs["agent_1"][k], o["agent_1"])  # true next obs
            assert res.rewards["agent_0"][k] == rew["agent_0"]
            assert res.step[k] == t % 4
            if te["agent_0"] or tr["agent_0"]:
                assert res.truncated[k] or res.terminated[k]
                ref_obs[k] = r.reset()[0]  # continues the copy's rng, like the VectorEnv
                assert not np.array_equal(res.obs["agent_0"][k], res.next_obs["agent_0"][k])
                ended += 1
            else:
                ref_obs[k] = o
                assert np.array_equal(res.obs["agent_0"][k], res.next_obs["agent_0"][k])
        obs = res.obs
    assert ended == 4  # two episodes of 4 steps per copy


def test_episode_returns_and_ids():
    v = VectorEnv("kitchen", 2, seed=0, horizon=3, episode_id_start=100)
    v.reset()
    stay = {a: np.full(2, 4) for a in v.agents}
    ids = []
    for _ in range(3):
        res = v.step(stay)
        ids.append(res.episode_id.tolist())
    assert ids == [[100, 101]] * 3
    assert res.finished_ids.tolist() == [100, 101] and res.episode_lengths.tolist() == [3, 3]
    assert res.episode_returns["agent_0"].tolist() == [0.0, 0.0]
    assert v.step(stay).episode_id.tolist() == [102, 103]
