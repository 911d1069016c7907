"""Critic shapes for image and vector specs; the Boltzmann policy's actions and weight swaps."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mamql.learner.losses import boltzmann_probs
from mamql.learner.networks import (
    Critic,
    JointCritic,
    build_critics,
    build_joint_critics,
    forward_current_next,
    torch_dtype,
)
from mamql.learner.policy import BoltzmannPolicy, flatten_weights, unflatten_weights

GEMS = SimpleNamespace(
    agents=["agent_0", "agent_1"],
    obs_shape={"agent_0": (5, 15, 15), "agent_1": (5, 15, 15)},
    obs_dtype={"agent_0": np.uint8, "agent_1": np.dtype("uint8")},
    num_actions={"agent_0": 5, "agent_1": 5},
)
KITCHEN = SimpleNamespace(
    agents=["chef_0", "chef_1"],
    obs_shape={"chef_0": (27,), "chef_1": (27,)},
    obs_dtype={"chef_0": "float32", "chef_1": "float32"},
    num_actions={"chef_0": 6, "chef_1": 6},
)


def _obs(spec, k, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for a in spec.agents:
        dt = np.dtype(spec.obs_dtype[a])
        shape = (k, *spec.obs_shape[a])
        out[a] = rng.integers(0, 2, shape).astype(dt) if dt == np.uint8 else rng.standard_normal(shape).astype(dt)
    return out


@pytest.mark.parametrize("spec", [GEMS, KITCHEN], ids=["image", "vector"])
def test_critic_output_shapes(spec):
    critics = build_critics(spec)
    obs = _obs(spec, 4)
    for a in spec.agents:
        q = critics[a](torch.from_numpy(obs[a]))
        assert q.shape == (4, spec.num_actions[a]) and q.dtype == torch.float32
        q, q_next = forward_current_next(critics[a], torch.from_numpy(obs[a]), torch.from_numpy(obs[a][:3]))
        assert q.shape == (4, spec.num_actions[a]) and q_next.shape == (3, spec.num_actions[a])
        assert torch.allclose(q[:3], q_next, atol=1e-6)  # same states, one pass, sliced
    joint = build_joint_critics(spec)
    assert [c.agent_index for c in joint.values()] == [0, 1]
    assert joint[spec.agents[1]](torch.from_numpy(obs[spec.agents[1]])).shape == (4, 36 if spec is KITCHEN else 25)


def test_default_and_custom_widths():
    assert build_critics(GEMS)["agent_0"].hidden == (1024, 1024)
    assert build_critics(KITCHEN)["chef_0"].hidden == (256, 256)
    c = build_critics(KITCHEN, hidden=(64, 32, 16))["chef_0"]
    assert [m.out_features for m in c.head if isinstance(m, torch.nn.Linear)] == [64, 32, 16, 6]
    assert build_critics(KITCHEN, hidden=())["chef_0"].hidden == (256, 256)  # () = default, as config
    # odd-sized image: the strided conv rounds up
    assert Critic((2, 7, 9), 3)(torch.zeros(2, 2, 7, 9)).shape == (2, 3)
    assert torch_dtype(np.uint8) == torch.uint8 and torch_dtype("float32") == torch.float32


def test_uint8_and_float_input_agree():
    c = build_critics(GEMS)["agent_0"]
    x = _obs(GEMS, 3)["agent_0"]
    assert torch.equal(c(torch.from_numpy(x)), c(torch.from_numpy(x.astype(np.float32))))


def _constant_critic(logits):
    """A vector critic whose output is `logits` for every input."""
    c = Critic((3,), len(logits), hidden=(4,))
    with torch.no_grad():
        for p in c.parameters():
            p.zero_()
        c.head[-1].bias.copy_(torch.tensor(logits))
    return c


def test_greedy_picks_argmax():
    critics = build_critics(KITCHEN, hidden=(16,))
    policy = BoltzmannPolicy(critics, mode="greedy")
    obs = _obs(KITCHEN, 32)
    actions = policy.act(obs)
    for a in KITCHEN.agents:
        want = critics[a](torch.from_numpy(obs[a])).argmax(1).numpy()
        assert actions[a].dtype == np.int64 and actions[a].shape == (32,)
        assert np.array_equal(actions[a], want)


def test_sampling_follows_softmax():
    logits = [0.0, np.log(2.0), np.log(5.0)]  # alpha = 2 -> probs proportional to (1, sqrt2, sqrt5)
    policy = BoltzmannPolicy({"x": _constant_critic(logits)}, alpha=2.0, seed=123)
    k = 20_000
    counts = np.bincount(policy.act({"x": np.zeros((k, 3), np.float32)})["x"], minlength=3)
    expected = k * boltzmann_probs(torch.tensor(logits, dtype=torch.float64), 2.0).numpy()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 13.8  # df = 2, p = 0.001
    # same seed, same actions
    again = BoltzmannPolicy({"x": _constant_critic(logits)}, alpha=2.0, seed=123)
    assert np.array_equal(np.bincount(again.act({"x": np.zeros((k, 3), np.float32)})["x"], minlength=3), counts)


def test_epsilon_explores_uniformly():
    policy = BoltzmannPolicy({"x": _constant_critic([0.0, 0.0, 50.0])}, mode="greedy", epsilon=0.3, seed=1)
    a = policy.act({"x": np.zeros((30_000, 3), np.float32)})["x"]
    freq = np.bincount(a, minlength=3) / len(a)
    assert freq == pytest.approx([0.1, 0.1, 0.8], abs=0.01)


def test_joint_critic_policy_uses_marginal():
    jc = JointCritic((3,), (2, 3), agent_index=1, hidden=(4,))
    with torch.no_grad():
        for p in jc.parameters():
            p.zero_()
        jc.head[-1].bias.copy_(torch.arange(6, dtype=torch.float32))
    q = BoltzmannPolicy({"b": jc}, mode="greedy").action_values({"b": np.zeros((2, 3), np.float32)})["b"]
    joint = torch.softmax(torch.arange(6.0), 0).reshape(2, 3).sum(0)
    assert np.allclose(boltzmann_probs(torch.from_numpy(q)).numpy()[0], joint.numpy(), atol=1e-6)


def test_flatten_round_trip_and_load_state_swaps_weights():
    a, b = build_critics(KITCHEN, hidden=(8,)), build_critics(KITCHEN, hidden=(8,))
    flat = flatten_weights(b)
    assert "chef_0/head.0.weight" in flat and all(k.split("/")[0] in KITCHEN.agents for k in flat)
    nested = unflatten_weights(flat)
    assert set(nested) == set(KITCHEN.agents)
    assert unflatten_weights({"team/red/head.0.bias": torch.zeros(1)}) == {"team/red": {"head.0.bias": torch.zeros(1)}}
    with pytest.raises(ValueError):
        unflatten_weights({"nobody": torch.zeros(1)})

    original = {k: v.clone() for k, v in flatten_weights(a).items()}
    policy = BoltzmannPolicy(a, mode="greedy")
    obs = _obs(KITCHEN, 16)
    policy.load_state(nested, version=7)
    assert policy.version == 7
    got = policy.action_values(obs)
    for agent in KITCHEN.agents:
        assert np.allclose(got[agent], b[agent](torch.from_numpy(obs[agent])).detach().numpy(), atol=1e-6)
    assert all(torch.equal(policy.state_dict()[k], flat[k]) for k in flat)
    # the modules handed in were not written to (new modules were built)
    assert all(torch.equal(flatten_weights(a)[k], v) for k, v in original.items())
    policy.load_flat(original, version=8)
    assert all(torch.equal(policy.state_dict()[k], v) for k, v in original.items())
    with pytest.raises(KeyError):
        policy.load_state({"chef_0": nested["chef_0"]})


def test_no_torn_weights_under_concurrent_swaps():
    # every parameter equals c, so a consistent set of weights gives one output value per c;
    # mixed layers from two versions would give a value outside that set
    def const_state(c):
        return {"x": {k: torch.full_like(v, c) for k, v in critic.state_dict().items()}}

    critic = Critic((3,), 2, hidden=(4, 4))
    policy = BoltzmannPolicy({"x": critic}, mode="greedy")
    allowed = set()
    probe = Critic((3,), 2, hidden=(4, 4)).requires_grad_(False)
    for c in np.linspace(0.1, 1.0, 10):
        probe.load_state_dict(const_state(float(c))["x"])
        allowed.add(round(probe(torch.ones(1, 3))[0, 0].item(), 4))
    policy.load_state(const_state(0.1))
    stop, bad = threading.Event(), []

    def reader():
        while not stop.is_set():
            v = round(float(policy.action_values({"x": np.ones((1, 3), np.float32)})["x"][0, 0]), 4)
            if v not in allowed:
                bad.append(v)

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(5):
        for c in np.linspace(0.1, 1.0, 10):
            policy.load_state(const_state(float(c)))
    stop.set()
    t.join()
    assert not bad


def test_checkpoint_round_trip(tmp_path):
    from mamql.learner.checkpoint import load_critic_state, read_metadata, save_critics

    a, b = build_critics(GEMS, hidden=(16,)), build_critics(GEMS, hidden=(16,))
    save_critics(tmp_path / "ckpt" / "critics.safetensors", a, {"step": 12, "algo": "mamql"})
    state = load_critic_state(tmp_path / "ckpt" / "critics.safetensors")
    for agent, module in b.items():
        module.load_state_dict(state[agent])
    assert all(torch.equal(v, flatten_weights(a)[k]) for k, v in flatten_weights(b).items())
    assert read_metadata(tmp_path / "ckpt" / "critics.safetensors") == {"step": "12", "algo": "mamql"}
