"""algo soft-q: the real Updater, trained on a small tabular general-sum game, reaches the logit
(soft) equilibrium computed independently by damped soft best responses.

The game: 3 states, agent p0 with 2 actions and p1 with 3, random joint dynamics, random rewards
r_i(s, a0, a1) for each agent (general-sum) and a random termination probability. Observations are
one-hot, the critics `network=linear` (a Q table). Each update samples a fresh batch in which both
agents act by the Boltzmann policies of their CURRENT critics, as actors do; rows flagged
truncated (time limits) must bootstrap like any other row, so a third of them are.
"""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mamql.config import ConfigError, LearnerConfig, load_config, validate
from mamql.learner.fast import fast_supported
from mamql.learner.updater import SOFT_Q_TARGET_TAU, Updater, make_updater, read_checkpoint

S, A0, A1, GAMMA, ALPHA = 3, 2, 3, 0.7, 1.0
AGENTS = ("p0", "p1")
SPEC = SimpleNamespace(name="tabular", agents=AGENTS, obs_shape={a: (S,) for a in AGENTS},
                       obs_dtype={a: "float32" for a in AGENTS}, num_actions={"p0": A0, "p1": A1})
torch.set_num_threads(1)


def make_game(seed: int = 4):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        transition=rng.dirichlet(np.full(S, 0.5), size=(S, A0, A1)),  # [S, A0, A1, S']
        reward=rng.normal(size=(2, S, A0, A1)),  # reward[i]: agent i's
        terminal=rng.uniform(0.0, 0.3, size=(S, A0, A1)),  # P(episode ends | s, a0, a1)
    )


def softmax(q):
    z = np.exp((q - q.max(-1, keepdims=True)) / ALPHA)
    return z / z.sum(-1, keepdims=True)


def soft_best_response(game, i: int, partner: np.ndarray, iters: int = 400) -> np.ndarray:
    """Q_i(s, a_i) of agent i against the partner's fixed policy [S, A_j]: soft value iteration on
    agent i's marginal game (the partner folded into reward and dynamics)."""
    r, p, keep = game.reward[i], game.transition, 1.0 - game.terminal
    if i == 1:  # index as [s, a_i, a_j]
        r, p, keep = r.transpose(0, 2, 1), p.transpose(0, 2, 1, 3), keep.transpose(0, 2, 1)
    r_m = np.einsum("sb,sab->sa", partner, r)
    p_m = np.einsum("sb,sab,sabt->sat", partner, keep, p)
    v = np.zeros(S)
    for _ in range(iters):
        q = r_m + GAMMA * p_m @ v
        v = ALPHA * np.log(np.exp(q / ALPHA).sum(-1))
    return q


def soft_equilibrium(game, start: tuple[np.ndarray, np.ndarray], damping: float = 0.5, tol: float = 1e-12):
    """Alternating damped soft best responses until the policies stop moving: (Q0, Q1, pi0, pi1)."""
    pi = list(start)
    for _ in range(10_000):
        moved = 0.0
        for i in (0, 1):
            new = softmax(soft_best_response(game, i, pi[1 - i]))
            moved = max(moved, np.abs(new - pi[i]).max())
            pi[i] = (1 - damping) * pi[i] + damping * new
        if moved < tol:
            break
    else:
        raise AssertionError("damped soft best responses did not converge")
    return soft_best_response(game, 0, pi[1]), soft_best_response(game, 1, pi[0]), pi[0], pi[1]


def q_tables(updater: Updater) -> list[np.ndarray]:
    eye = torch.eye(S)
    with torch.no_grad():
        return [updater.critics[a](eye).double().numpy() for a in AGENTS]


def sample_batch(game, updater: Updater, n: int, rng: np.random.Generator) -> dict:
    """n rows acted by both agents' current Boltzmann policies, as actors would produce them."""
    pi0, pi1 = (softmax(q) for q in q_tables(updater))
    s = rng.integers(0, S, n)
    draw = lambda probs: (probs.cumsum(1) > rng.random((len(probs), 1))).argmax(1)
    a0, a1 = draw(pi0[s]), draw(pi1[s])
    s2 = draw(game.transition[s, a0, a1])
    done = rng.random(n) < game.terminal[s, a0, a1]
    eye = np.eye(S, dtype=np.float32)
    batch = {"done": done, "truncated": ~done & (rng.random(n) < 0.33)}
    for i, (a, act) in enumerate(zip(AGENTS, (a0, a1))):
        batch.update({f"obs/{a}": eye[s], f"next_obs/{a}": eye[s2], f"action/{a}": act,
                      f"reward/{a}": game.reward[i, s, a0, a1].astype(np.float32)})
    return batch


def test_soft_q_updater_reaches_the_soft_equilibrium():
    game = make_game()
    uniform = (np.full((S, A0), 1 / A0), np.full((S, A1), 1 / A1))
    q0_star, q1_star, pi0_star, pi1_star = soft_equilibrium(game, uniform)
    # the reference is THE equilibrium of this game, not an artefact of where it started
    other = soft_equilibrium(game, (softmax(np.eye(S, A0) * 5), softmax(-np.eye(S, A1) * 5)))
    assert np.abs(other[0] - q0_star).max() < 1e-9 and np.abs(other[1] - q1_star).max() < 1e-9
    # and it is a real equilibrium: against a uniform partner, the best responses differ from it
    assert np.abs(soft_best_response(game, 0, uniform[1]) - q0_star).max() > 0.2
    assert np.abs(soft_best_response(game, 1, uniform[0]) - q1_star).max() > 0.2

    config = LearnerConfig(algo="soft-q", network="linear", hidden=(), lr=0.03, gamma=GAMMA, alpha=ALPHA,
                           weight_decay=0.0, device="cpu", target_tau=0.02)
    updater = Updater(SPEC, config, seed=0)
    rng = np.random.default_rng(0)
    for step in range(2400):
        if step == 1800:  # a smaller step at the end averages out the sampling noise
            for opt in updater.optimizers.values():
                opt.param_groups[0]["lr"] = 0.003
        logs = updater.update(None, sample_batch(game, updater, 4096, rng))
    assert set(logs) == {f"{a}/{k}" for a in AGENTS for k in ("loss", "q", "target", "reward", "soft_value")}
    q0, q1 = q_tables(updater)
    dq = max(np.abs(q0 - q0_star).max(), np.abs(q1 - q1_star).max())
    dpi = max(np.abs(softmax(q0) - pi0_star).max(), np.abs(softmax(q1) - pi1_star).max())
    assert dq < 0.05, f"max |Q - Q*| = {dq:.4f}"
    assert dpi < 0.02, f"max |pi - pi*| = {dpi:.4f}"


def test_soft_q_always_has_a_target_critic_and_ignores_demos():
    config = LearnerConfig(algo="soft-q", network="linear", hidden=(), device="cpu")  # target_tau 0
    updater = Updater(SPEC, config, seed=0)
    assert updater.target_tau == SOFT_Q_TARGET_TAU and set(updater.targets) == set(AGENTS)
    before = [p.clone() for p in updater.targets["p0"].parameters()]
    updater.update(None, sample_batch(make_game(), updater, 64, np.random.default_rng(1)))
    # the target moved by exactly tau of the way to the updated critic
    for b, t, c in zip(before, updater.targets["p0"].parameters(), updater.critics["p0"].parameters()):
        assert torch.allclose(t, b + SOFT_Q_TARGET_TAU * (c - b), atol=1e-7)
    with pytest.raises(ValueError, match="soft-q"):
        Updater(SPEC, LearnerConfig(algo="soft-q", device="cpu", augment="symmetry"), seed=0)


def test_mamql_train_soft_q_runs_without_demos_and_reports_returns(tmp_path):
    cmd = [sys.executable, "-m", "mamql.cli", "train", "--env", "gems", "--algo", "soft-q", "--steps", "8",
           "--run-name", "sq", "--no-progress", "--set", f"run.root={tmp_path}", "--set", "learner.hidden=[16]",
           "--set", "learner.batch_size=16", "--set", "learner.seed_transitions=64", "--set", "actor.num_envs=2",
           "--set", "learner.rollout_steps_per_update=12", "--set", "learner.eval_episodes=2",
           "--set", "learner.log_every=4", "--set", "learner.eval_every=0", "--set", "learner.torch_threads=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["step"] == 8 and "demos" not in result
    for mode in ("greedy", "sample"):
        assert set(result["eval"][mode]) == {"agent_0", "agent_1"}
    run_dir = tmp_path / "sq"
    assert result["checkpoint"] and (run_dir / "checkpoints" / "learner_00000008.pt").exists()
    assert read_checkpoint(result["checkpoint"])["updater"]["algo"] == "soft-q"
    assert not (run_dir / "demos.npz").exists()  # nothing was collected
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "agent_0/target" in r]
    # 8 updates x 12 steps x 2 envs = 192 steps of 45-step episodes: every log interval saw some end
    assert logged and all(r["rollout_return/agent_0"] is not None for r in logged)


def test_soft_q_takes_the_plain_path_with_a_reason_and_refuses_augment():
    config = LearnerConfig(algo="soft-q", network="linear", hidden=(), device="cpu", fast=True)
    ok, why = fast_supported(SPEC, config)
    assert not ok and "soft-q" in why
    assert type(make_updater(SPEC, config)) is Updater
    with pytest.raises(ConfigError, match="soft-q has none"):
        validate(load_config(overrides=["learner.algo=soft-q", "learner.augment=symmetry"]))
