"""algo iqlma, the paper's IQL-MA baseline in the reference code's form (ma-mql `iql_ma`): the loss
on hand-computed numbers, the critic's conditioning on the other agents' actions, the train step's
wiring (expert rows only, a_-i plugged in at s and s'), training and evaluating end to end through
the CLI, and joint-action checkpoints written when iqlma meant that form (now iqlma-joint)."""

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mamql.config import Config, LearnerConfig, to_dict, with_updates
from mamql.envs import env_spec
from mamql.learner.evaluate import load_updater, policy_from
from mamql.learner.losses import iqlma_loss
from mamql.learner.networks import ConditionedCritic, JointCritic, build_algo_critics, others_one_hot
from mamql.learner.policy import BoltzmannPolicy, CheckpointExpert
from mamql.learner.updater import Updater, load_checkpoint, make_updater, read_checkpoint

torch.set_num_threads(1)
L2, L3 = math.log(2.0), math.log(3.0)


# --------------------------------------------------------------------------- the loss by hand


def test_iqlma_loss_by_hand():
    """Two expert rows of agent i (2 own actions), alpha 1, gamma 0.5, chi^2 coefficient 1/4:
    row 1: Q(s, a_-i, .) = [0, ln 3], a_i = 1, Q(s', a_-i, .) = [0, 0], live:
           V = ln 4, y = 0.5 ln 2, r^ = ln 3 - 0.5 ln 2
    row 2: Q = [ln 2, ln 2], a_i = 0, terminal (Q at s' = [5, 7] is ignored):
           V = ln 4, y = 0, r^ = ln 2"""
    q = torch.tensor([[0.0, L3], [L2, L2]], requires_grad=True)
    q_next = torch.tensor([[0.0, 0.0], [5.0, 7.0]])
    loss, terms = iqlma_loss(q, q_next, torch.tensor([1, 0]), torch.tensor([0.0, 1.0]), gamma=0.5)
    r1, r2 = L3 - 0.5 * L2, L2
    value = ((2 * L2 - 0.5 * L2) + (2 * L2 - 0.0)) / 2  # mean(V(s) - y) = 1.75 ln 2
    expert_reward = (r1 + r2) / 2
    chi2 = 0.25 * (r1**2 + r2**2) / 2
    assert terms["value"] == pytest.approx(value, abs=1e-6)
    assert terms["expert_reward"] == pytest.approx(expert_reward, abs=1e-6)
    assert terms["chi2"] == pytest.approx(chi2, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(value - expert_reward + chi2, abs=1e-6)
    assert terms["loss"] == pytest.approx(value - expert_reward + chi2, abs=1e-6)
    assert terms["expert_q"] == pytest.approx((L3 + L2) / 2, abs=1e-6)
    assert terms["mean_q"] == pytest.approx((L3 + 2 * L2) / 4, abs=1e-6)
    assert terms["q_gap"] == pytest.approx(terms["expert_q"] - terms["mean_q"], abs=1e-6)
    # gradient at s, row 1: dV/dQ = pi = [1/4, 3/4] (halved by the mean), minus 1/2 on the taken
    # action from -mean(r^), plus (1/4) * 2 r1 / 2 on the taken action from the chi^2 term
    loss.backward()
    g = q.grad[0]
    assert float(g[0]) == pytest.approx(0.25 / 2, abs=1e-6)
    assert float(g[1]) == pytest.approx(0.75 / 2 - 0.5 + 0.25 * r1, abs=1e-6)


def test_iqlma_loss_temperature_and_chi2_alpha():
    """alpha 2: V = 2 ln(e^0 + e^(2 ln 3 / 2)) = 2 ln 4; with chi2_alpha = inf no regulariser, and
    chi2_alpha = 0.5 gives coefficient 1/2 whatever alpha is."""
    q = torch.tensor([[0.0, 2 * L3]])
    q_next = torch.tensor([[0.0, 0.0]])  # V(s') = 2 ln 2
    args = (q, q_next, torch.tensor([0]), torch.tensor([0.0]))
    _, off = iqlma_loss(*args, gamma=1.0, alpha=2.0, chi2_alpha=math.inf)
    y, v = 2 * L2, 2 * math.log(4.0)
    assert off["value"] == pytest.approx(v - y, abs=1e-6)
    assert off["expert_reward"] == pytest.approx(0.0 - y, abs=1e-6)
    assert off["chi2"] == 0.0
    _, half = iqlma_loss(*args, gamma=1.0, alpha=2.0, chi2_alpha=0.5)
    assert half["chi2"] == pytest.approx(0.5 * y**2, abs=1e-6)
    _, tied = iqlma_loss(*args, gamma=1.0, alpha=2.0)  # None: 1 / (4 alpha)
    assert tied["chi2"] == pytest.approx(y**2 / 8, abs=1e-6)


# --------------------------------------------------------------------------- the critic


def test_others_one_hot_layout():
    actions = torch.tensor([[1, 0, 2], [0, 3, 1]])  # three agents with 2, 4 and 3 actions
    out = others_one_hot(actions, (2, 4, 3), 1)  # agent 1: agents 0 and 2, in that order
    assert out.dtype == torch.float32
    assert out.tolist() == [[0, 1, 0, 0, 1], [1, 0, 0, 1, 0]]
    assert others_one_hot(actions, (2, 4, 3), 0).shape == (2, 7)
    with pytest.raises(ValueError, match="one column per agent"):
        others_one_hot(actions[:, :2], (2, 4, 3), 0)


def test_conditioned_critic_depends_on_the_others_actions():
    spec = env_spec("gems")
    critics = build_algo_critics(spec, "iqlma", (16,))
    assert [type(c) for c in critics.values()] == [ConditionedCritic, ConditionedCritic]
    critic = critics["agent_1"]
    assert critic.agent_index == 1 and critic.others_dim == 5 and critic.others.in_features == 5
    obs = torch.from_numpy((np.random.default_rng(0).random((3, *spec.obs_shape["agent_1"])) < 0.1).astype(np.uint8))
    q_a = critic(obs, others_one_hot(torch.tensor([[0, 2]] * 3), (5, 5), 1))
    q_b = critic(obs, others_one_hot(torch.tensor([[4, 2]] * 3), (5, 5), 1))
    assert q_a.shape == q_b.shape == (3, 5)
    assert not torch.allclose(q_a, q_b)  # agent_0's action is an input
    # acting: the others' actions left out, exactly an all-zero one-hot (the reference's eval input)
    torch.testing.assert_close(critic(obs), critic(obs, torch.zeros(3, 5)))
    with pytest.raises(ValueError, match="others must be"):
        critic(obs, torch.zeros(3, 4))
    # the split first layer starts as one Linear over [features, one-hot] would: U(+-1/sqrt(in))
    bound = 1 / math.sqrt(critic.features + 5)
    with torch.no_grad():
        assert float(critic.others.weight.abs().max()) <= bound and float(critic.head[0].weight.abs().max()) <= bound


def test_conditioned_critic_vector_and_linear_networks():
    c = ConditionedCritic((4,), (2, 3), agent_index=0, network="linear")
    assert c.others_dim == 3 and c(torch.zeros(5, 4), torch.zeros(5, 3)).shape == (5, 2)
    m = ConditionedCritic((2, 3), (2, 3), agent_index=1, hidden=(8, 8), network="mlp")
    assert m.others_dim == 2 and m(torch.zeros(5, 2, 3), torch.zeros(5, 2)).shape == (5, 3)
    with pytest.raises(ValueError, match="agent_index"):
        ConditionedCritic((4,), (2, 3), agent_index=2)


# --------------------------------------------------------------------------- the train step

S = 3
TAB = SimpleNamespace(name="tabular", agents=("p0", "p1"), obs_shape={"p0": (S,), "p1": (S,)},
                      obs_dtype={"p0": "float32", "p1": "float32"}, num_actions={"p0": 2, "p1": 3})


def tabular_batch(rows, rng, poison=False):
    """rows of (s, s', a0, a1, done) as one-hot observations (poison: NaN observations)."""
    eye = np.eye(S, dtype=np.float32)
    b = {"done": np.array([r[4] for r in rows], dtype=bool), "truncated": np.zeros(len(rows), bool)}
    for a in TAB.agents:
        b[f"obs/{a}"] = eye[[r[0] for r in rows]]
        b[f"next_obs/{a}"] = eye[[r[1] for r in rows]]
    b["action/p0"] = np.array([r[2] for r in rows])
    b["action/p1"] = np.array([r[3] for r in rows])
    if poison:
        for k in list(b):
            if k.startswith(("obs/", "next_obs/")):
                b[k] = np.full_like(b[k], np.nan)
    return b


def test_updater_feeds_the_others_actions_at_s_and_s_prime_and_ignores_online_rows():
    """A linear critic, so Q(s, a_-i, .) = W s + U onehot(a_-i) + b is known: the update's logged
    terms equal iqlma_loss on those Q values, while the online batch (all NaN) is never read."""
    cfg = LearnerConfig(algo="iqlma", network="linear", hidden=(), device="cpu", gamma=0.9, lr=1e-2)
    u = make_updater(TAB, cfg, "cpu", seed=0)
    assert type(u) is Updater
    rng = np.random.default_rng(0)
    rows = [(0, 1, 1, 2, False), (2, 0, 0, 0, True), (1, 2, 1, 1, False), (0, 0, 0, 2, False)]
    expert, online = tabular_batch(rows, rng), tabular_batch(rows, rng, poison=True)
    expected = {}
    eye = torch.eye(S)
    joint = torch.tensor([[r[2], r[3]] for r in rows])
    done = torch.tensor([float(r[4]) for r in rows])
    for i, a in enumerate(TAB.agents):
        c = u.critics[a]
        w, b, uw = c.head[0].weight.detach(), c.head[0].bias.detach(), c.others.weight.detach()
        others = others_one_hot(joint, (2, 3), i)
        q = eye[[r[0] for r in rows]] @ w.T + b + others @ uw.T
        q_next = eye[[r[1] for r in rows]] @ w.T + b + others @ uw.T  # the SAME a_-i at s'
        _, expected[a] = iqlma_loss(q, q_next, joint[:, i], done, gamma=0.9)
    logs = u.update(expert, online)
    for a in TAB.agents:
        for k, v in expected[a].items():
            assert logs[f"{a}/{k}"] == pytest.approx(v, abs=1e-5), (a, k)
        assert all(torch.isfinite(p).all() for p in u.critics[a].parameters())


def test_training_makes_the_expert_action_the_greedy_one_given_the_others():
    """On a fixed expert batch where p1's action depends on p0's (p1 copies p0's action), the
    critic learns to rank it first for each a_0: the conditioning is used."""
    cfg = LearnerConfig(algo="iqlma", network="linear", hidden=(), device="cpu", gamma=0.5, lr=5e-2)
    u = make_updater(TAB, cfg, "cpu", seed=1)
    rows = [(s, (s + 1) % S, a0, a0, False) for s in range(S) for a0 in range(2)] * 4
    batch = tabular_batch(rows, None)
    for _ in range(300):
        logs = u.update(batch, batch)
    assert logs["p1/q_gap"] > 0.5
    c = u.critics["p1"]
    with torch.no_grad():
        for a0 in range(2):
            q = c(torch.eye(S), others_one_hot(torch.tensor([[a0, 0]] * S), (2, 3), 1))
            assert q.argmax(-1).tolist() == [a0] * S


# --------------------------------------------------------------------------- end to end


def test_mamql_train_and_evaluate_iqlma(tmp_path):
    cmd = [sys.executable, "-m", "mamql.cli", "train", "--env", "gems", "--algo", "iqlma", "--steps", "8",
           "--expert-transitions", "256", "--run-name", "iq", "--no-progress", "--set", f"run.root={tmp_path}",
           "--set", "learner.hidden=[16]", "--set", "learner.batch_size=16", "--set", "learner.seed_transitions=64",
           "--set", "actor.num_envs=2", "--set", "learner.rollout_steps_per_update=4",
           "--set", "learner.eval_episodes=2", "--set", "learner.log_every=4", "--set", "learner.eval_every=0",
           "--set", "learner.torch_threads=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["step"] == 8
    for mode in ("greedy", "sample"):
        assert set(result["eval"][mode]) == {"agent_0", "agent_1"}
    state = read_checkpoint(result["checkpoint"])["updater"]
    assert state["algo"] == "iqlma" and "others.weight" in state["critics"]["agent_0"]
    ev = subprocess.run([sys.executable, "-m", "mamql.cli", "evaluate", "--checkpoint", result["checkpoint"],
                         "--episodes", "2", "--recovery-rows", "64"],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    out = json.loads(ev.stdout)
    assert out["algo"] == "iqlma" and out["step"] == 8
    for mode in ("greedy", "sample"):
        assert out[mode]["episodes"] == 2 and set(out[mode]["mean_return"]) == {"agent_0", "agent_1"}
    assert set(out["reward_recovery"]) == {"agent_0", "agent_1"}  # the run's own demos were found
    # a checkpoint expert acts with it too (demos from an IQL-MA policy)
    expert = CheckpointExpert(result["checkpoint"], "gems")
    assert expert.algo == "iqlma" and all(isinstance(c, ConditionedCritic) for c in expert.critics.values())
    acts = expert.policy(mode="greedy").act({a: np.zeros((2, 5, 15, 15), np.uint8) for a in ("agent_0", "agent_1")})
    assert all(v.shape == (2,) for v in acts.values())


# --------------------------------------------------------------------------- joint-action checkpoints


def _legacy_joint_checkpoint(tmp_path):
    """A checkpoint as algo iqlma wrote it before it took the reference's form: joint-action
    critics, algo "iqlma" in the state and in the stored config."""
    spec = env_spec("gems")
    config = with_updates(Config(), learner={"algo": "iqlma-joint", "hidden": (8,), "device": "cpu"})
    u = make_updater(spec, config.learner, "cpu", seed=0)
    stored = to_dict(config)
    stored["learner"]["algo"] = "iqlma"
    state = u.state_dict()
    state["algo"] = "iqlma"
    path = tmp_path / "old.pt"
    torch.save({"updater": state, "extra": {"config_json": json.dumps(stored), "step": 0}}, path)
    return path, u


def test_joint_checkpoints_of_the_old_iqlma_load_as_iqlma_joint(tmp_path):
    path, original = _legacy_joint_checkpoint(tmp_path)
    assert read_checkpoint(path)["updater"]["algo"] == "iqlma-joint"
    updater, extra = load_updater(path)  # what `mamql evaluate` does
    assert updater.algo == "iqlma-joint" and isinstance(updater.critics["agent_0"], JointCritic)
    for k, v in original.policy_weights().items():
        assert torch.equal(v, updater.policy_weights()[k])
    policy = policy_from(updater, "greedy")
    assert isinstance(policy, BoltzmannPolicy)
    expert = CheckpointExpert(str(path), "gems")
    assert expert.algo == "iqlma-joint" and isinstance(expert.critics["agent_1"], JointCritic)
    # resuming it as the new iqlma is refused with the way out
    fresh = make_updater(env_spec("gems"), LearnerConfig(algo="iqlma", hidden=(8,), device="cpu"), "cpu")
    with pytest.raises(ValueError, match="learner.algo=iqlma-joint"):
        load_checkpoint(path, fresh)
    with pytest.raises(ValueError, match="learner.algo=iqlma-joint"):
        fresh.load_state_dict(torch.load(path, weights_only=True)["updater"])
