"""The shaping-invariant reward comparison (learner.reward_compare) and `mamql evaluate`'s report of it.

Exact invariances on a tabular MDP, the simulator-sampled estimator on the tabular game against
the exact partial correlation (MAMQL's default objective included), state round trips of Gems and
Kitchen, the copying simulator on MPE, and `mamql evaluate` JSON for Gems and MPE."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mamql.envs import env_spec, make
from mamql.envs.experts import make_expert
from mamql.experiments import tabular_recovery as tab
from mamql.learner.reward_compare import (AGREEMENT_TOLERANCE, CoverageState, Simulator, compare_rewards, sample_agent, simulator_for, soft_value_np, tabular_dard_canonical,
                                          tabular_dard_correlation, tabular_projected_correlation)

torch.set_num_threads(1)
GAMMA = tab.GAMMA


def random_mdp(seed: int, s: int = 6, a: int = 3):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(s, 0.5), size=(s, a)), rng.normal(size=(s, a)), rng


def test_exact_forms_are_invariant_to_shaping_and_positive_scale():
    p, r, rng = random_mdp(0)
    s, a = r.shape
    phi, q = rng.normal(size=s), rng.normal(size=(s, a))
    base = tabular_dard_canonical(r, np.zeros(s), p, GAMMA)
    # the true reward shaped per transition: f = r - Phi(s), g = gamma Phi(s')
    assert np.allclose(tabular_dard_canonical(r - phi[:, None], GAMMA * phi, p, GAMMA), base, atol=1e-12)
    rho = tabular_dard_correlation(r, q, p, GAMMA)
    # a critic's implied reward shaped by Phi is the critic Q - Phi(s); scaled by c, cQ at temperature c
    assert tabular_dard_correlation(r, q - phi[:, None], p, GAMMA) == pytest.approx(rho, abs=1e-9)
    assert tabular_dard_correlation(r, 3.0 * q, p, GAMMA, alpha=3.0) == pytest.approx(rho, abs=1e-9)
    assert tabular_dard_correlation(2.0 * r + 5.0, q, p, GAMMA) == pytest.approx(rho, abs=1e-9)
    # the exact projection, weighted or not, sees through (s, a)-level shaping, scale and shift
    w = rng.random((s, a)) + 0.1
    shaped = 2.5 * (r + GAMMA * p @ phi - phi[:, None]) + 4.0
    for weights in (None, w):
        assert tabular_projected_correlation(shaped, r, p, GAMMA, weights) == pytest.approx(1.0, abs=1e-9)
        assert tabular_projected_correlation(-shaped, r, p, GAMMA, weights) == pytest.approx(-1.0, abs=1e-9)
    from mamql.learner.losses import shaping_projected_correlation

    other = rng.normal(size=(s, a))
    assert tabular_projected_correlation(other, r, p, GAMMA) == pytest.approx(
        shaping_projected_correlation(other, r, p, GAMMA), abs=1e-9)


def test_soft_optimal_critic_scores_one_and_a_different_reward_scores_low():
    p, r, rng = random_mdp(1)
    v = np.zeros(r.shape[0])  # soft value iteration: Q = r + gamma P V, V = logsumexp Q
    for _ in range(2000):
        q_star = r + GAMMA * p @ v
        v = soft_value_np(q_star, 1.0)
    # alpha log pi* = r + gamma P V* - V* is r shaped at the (s, a) level, which the exact projection
    # removes exactly and DARD up to a gamma^2 remainder
    r_hat = q_star - GAMMA * p @ soft_value_np(q_star, 1.0)
    assert tabular_projected_correlation(r_hat, r, p, GAMMA) == pytest.approx(1.0, abs=1e-9)
    assert tabular_dard_correlation(r, q_star, p, GAMMA) > 0.999
    assert tabular_dard_correlation(r, -q_star, p, GAMMA) < 0
    assert abs(tabular_dard_correlation(r, rng.normal(size=r.shape), p, GAMMA)) < 0.7


def test_dard_reads_a_soft_optimal_critic_below_one_where_dynamics_are_local():
    """The metric's known limit, pinned so that docs/results.md's numbers stay true: on a grid (local
    moves) the exact projection reads a soft-optimal critic as 1, DARD lower (it removes two steps of
    the V* shaping that separates alpha log pi* from the reward); on the random game both read ~1."""
    sparse = tab.grid_ceiling(0.9, sparse=True)
    assert sparse["projection"] == pytest.approx(1.0, abs=1e-9)
    assert 0.6 < sparse["dard_exact"] < 0.8
    assert tab.grid_ceiling(0.9, sparse=False)["dard_exact"] > 0.9


def _tabular_samples(game, policy, per_state=12, draws=4, seed=0):
    env = tab.TabularGameEnv(game, seed=seed)
    env.reset(seed=seed)
    sim = Simulator(env)
    eye = np.eye(tab.STATES, dtype=np.float32)
    coverage = [CoverageState({"s": s, "t": 0, "agents": tab.AGENTS}, {a: eye[s] for a in tab.AGENTS}, 0)
                for s in range(tab.STATES) for _ in range(per_state)]
    return {"agent_0": sample_agent(sim, coverage, tab.demonstrator(game, policy), "agent_0",
                                    {"agent_0": tab.ACTIONS, "agent_1": tab.PARTNER_ACTIONS}, seed=seed, draws=draws)}


def _table(q, alpha=1.0):
    q = np.asarray(q, dtype=np.float64)
    return {"agent_0": (lambda obs: q[np.asarray(obs).argmax(-1)], alpha)}


def test_sampled_figure_is_invariant_to_the_critics_shaping_and_scale_and_sensitive_to_the_reward():
    game = tab.random_game(3)
    policy = tab.expert_policy(game, "soft")
    q_star = tab.soft_value_iteration(game.reward, game.transition, 1.0)
    rng = np.random.default_rng(0)
    phi = rng.normal(size=tab.STATES)
    samples = _tabular_samples(game, policy)
    figs = compare_rewards(samples, {"q": _table(q_star), "shaped": _table(q_star - 4 * phi[:, None]),
                                     "scaled": _table(3.0 * q_star, 3.0), "other": _table(rng.normal(size=q_star.shape))},
                           GAMMA)
    rho = figs["q"]["agent_0"]["pearson"]
    assert figs["shaped"]["agent_0"]["pearson"] == pytest.approx(rho, abs=1e-9)
    assert figs["scaled"]["agent_0"]["pearson"] == pytest.approx(rho, abs=1e-9)
    assert rho > 0.95  # the soft expert's own critic: the true reward up to shaping, less sampling noise
    assert figs["q"]["agent_0"]["distance"] == pytest.approx(np.sqrt((1 - rho) / 2))
    assert abs(figs["other"]["agent_0"]["pearson"]) < 0.6


def _conditioned_table(qc, alpha=1.0):
    """A critic conditioned on the partner's action (IQL-MA's form): Q[s, a0, a1] as a QFunction."""
    qc = np.asarray(qc, dtype=np.float64)

    def q_fn(obs, others):
        return qc[np.asarray(obs).argmax(-1), :, np.asarray(others).argmax(-1)]

    q_fn.others_num_actions = (tab.PARTNER_ACTIONS,)
    return {"agent_0": (q_fn, alpha)}


def test_a_critic_conditioned_on_the_partners_action_is_scored_by_the_reward_it_implies():
    """IQL-MA's critic Q(s, a0, a1) implies r(s, a0, a1) = Q - gamma V(s', a1'). A joint soft-optimal
    critic (its V(s') the expectation over the partner's policy at s') implies the true joint reward,
    and scores ~1 as such; a conditioned critic that ignores a1 scores exactly what the same table
    scores unconditioned; read with the partner's action left out (as it acts) the joint critic
    scores lower."""
    game = tab.random_game(3)
    policy = tab.expert_policy(game, "soft")
    samples = _tabular_samples(game, policy)
    qc = np.zeros_like(game.joint_reward)
    for _ in range(400):  # soft value iteration in the joint game, the partner's policy fixed
        v = np.einsum("sb,sb->s", game.partner_policy, soft_value_np(qc.transpose(0, 2, 1), 1.0))
        qc = game.joint_reward + GAMMA * game.joint_transition @ v
    q_star = tab.soft_value_iteration(game.reward, game.transition, 1.0)
    figs = compare_rewards(samples, {"joint": _conditioned_table(qc), "as_acting": _table(qc.mean(-1)),
                                     "ignores": _conditioned_table(np.repeat(q_star[:, :, None], tab.PARTNER_ACTIONS, -1)),
                                     "plain": _table(q_star)}, GAMMA)
    assert figs["joint"]["agent_0"]["pearson"] > 0.95  # 0.973: the true reward, less sampling noise
    assert figs["ignores"]["agent_0"]["pearson"] == pytest.approx(figs["plain"]["agent_0"]["pearson"], abs=1e-9)
    assert figs["as_acting"]["agent_0"]["pearson"] < figs["joint"]["agent_0"]["pearson"] - 0.1  # 0.73
    with pytest.raises(ValueError, match="record them"):
        bare = dataclasses.replace(samples["agent_0"], others_actions=None)
        compare_rewards({"agent_0": bare}, {"joint": _conditioned_table(qc)}, GAMMA)


def test_each_critic_implies_its_reward_with_its_own_discount():
    """A critic trained for discount 0 is the reward itself (Q = r, implied reward Q - 0 V(s')):
    compared under the game's 0.9 it scores like the soft-optimal 0.9 critic when its own discount is
    given, and lower when its reward is read as Q - 0.9 V(s')."""
    game = tab.random_game(3)
    samples = _tabular_samples(game, tab.expert_policy(game, "soft"))
    (fn9, _), (fn0, _) = _table(tab.soft_value_iteration(game.reward, game.transition, 1.0))["agent_0"], _table(game.reward)["agent_0"]
    figs = compare_rewards(samples, {"q9": {"agent_0": (fn9, 1.0)}, "r_own": {"agent_0": (fn0, 1.0, 0.0)},
                                     "r_read_at_09": {"agent_0": (fn0, 1.0)}}, GAMMA)
    rho = {k: v["agent_0"]["pearson"] for k, v in figs.items()}  # 0.973, 0.988, 0.954
    assert rho["r_own"] == pytest.approx(rho["q9"], abs=0.03)
    assert rho["r_read_at_09"] < rho["r_own"] - 0.02


@pytest.mark.parametrize("expert", ["soft", "argmax"])
def test_sampled_figure_agrees_with_the_exact_projection_for_mamqls_default_objective(expert):
    """The figure `mamql evaluate` reports, computed through the simulator on the tabular game, agrees
    with the exact partial correlation (shaping projected out under the true dynamics) within
    AGREEMENT_TOLERANCE, for a critic trained with MAMQL's default objective (value term on the
    learner's own online rows) and with IQ-Learn's offline one."""
    game = tab.random_game(1)
    policy = tab.expert_policy(game, expert)
    rows = tab.expert_rows(game, policy, 4000, seed=1)
    for value_term in ("online", "expert"):
        q = tab.fit_critic(rows, 1.0, None, 600, value_term, game, seed=1).numpy()
        r_hat = q - GAMMA * game.transition @ soft_value_np(q, 1.0)
        exact = tabular_projected_correlation(r_hat, game.reward, game.transition, GAMMA)
        sampled = compare_rewards(_tabular_samples(game, policy), {"c": _table(q)}, GAMMA)["c"]["agent_0"]["pearson"]
        assert abs(sampled - exact) <= AGREEMENT_TOLERANCE, (value_term, sampled, exact)
        assert abs(tabular_dard_correlation(game.reward, q, game.transition, GAMMA) - exact) <= 0.03
        if expert == "soft":
            assert exact > 0.9, (value_term, exact)  # the objective itself recovers a soft expert's reward


def test_online_objective_needs_the_game():
    game = tab.random_game(0)
    rows = tab.expert_rows(game, tab.expert_policy(game, "soft"), 100, seed=0)
    with pytest.raises(ValueError, match="pass the game"):
        tab.fit_critic(rows, 1.0, None, 1, "online")
    with pytest.raises(ValueError, match="value_term"):
        tab.fit_critic(rows, 1.0, None, 1, "value")


@pytest.mark.parametrize("name", ["gems", "kitchen"])
def test_get_state_set_state_round_trip_reproduces_the_transition(name):
    env = make(name)
    expert = make_expert(name, "scripted")
    snapshots, moves = [], []
    obs, _ = env.reset(seed=5)
    for t in range(120):  # record snapshots along an expert episode, with the step taken from each
        acts = {a: int(v[0]) for a, v in expert.act({a: obs[a][None] for a in env.agents}).items()}
        snapshots.append(env.get_state())
        obs, rew, term, trunc, _ = env.step(acts)
        moves.append((acts, obs, rew, term, trunc))
        if not env.agents:
            break
    assert any(sum(m[2].values()) > 0 for m in moves), "the episode never rewarded: nothing checked respawns/serving"
    for snap, (acts, obs2, rew, term, trunc) in zip(snapshots, moves):
        env.set_state(snap)
        again = env.step(acts)
        assert again[1:4] == (rew, term, trunc)
        assert all(np.array_equal(again[0][a], obs2[a]) for a in obs2)
    # a snapshot is a copy: stepping after it does not change it
    env.set_state(snapshots[0])
    before = env.get_state()
    env.step(moves[0][0])
    env.set_state(before)
    replay = env.step(moves[0][0])[0]
    assert all(np.array_equal(replay[a], moves[0][1][a]) for a in moves[0][1])


def test_mpe_is_restored_by_copying_and_the_copy_is_independent():
    env = make("mpe/simple_adversary")
    sim, how = simulator_for(env, seed=2)
    assert sim is not None and how == "deepcopy"
    env.reset(seed=2)
    env.step({a: 1 for a in env.agents})
    token = sim.snapshot()

    def two_steps(action):  # an MPE action shows in the positions one step later (velocity is state)
        copy = sim.restore(token)
        copy.step({a: action for a in env.possible_agents})
        return copy.step({a: action for a in env.possible_agents})

    first, second, other = two_steps(3), two_steps(3), two_steps(4)
    assert first[1] == second[1] and all(np.array_equal(first[0][a], second[0][a]) for a in first[0])
    assert first[1] != other[1] and not all(np.array_equal(first[0][a], other[0][a]) for a in first[0])
    assert env.step({a: 3 for a in env.possible_agents})[1] != first[1]  # the original was not stepped


def test_recovery_report_in_process_dard_and_the_epic_fallback():
    from mamql.config import Config, with_updates
    from mamql.learner.demos import collect_demos
    from mamql.learner.evaluate import recovery_report
    from mamql.learner.updater import make_updater

    cfg = with_updates(Config(), learner={"hidden": (8,), "network": "mlp", "device": "cpu"})
    u = make_updater(env_spec("gems"), cfg.learner, "cpu", seed=1)
    demos, meta = collect_demos("gems", 120, seed=0, num_envs=2)
    rep = recovery_report(u, "gems", {}, demos, meta, expert=(u, {"checkpoint": "self"}), states=12)
    metric = rep["reward_recovery_metric"]
    assert metric["method"] == "dard" and metric["simulator"] == "get_state"
    assert metric["demonstrators"] == {"source": "demos", "kind": "scripted", "epsilon": 0.0}
    assert metric["coverage"]["states"]["agent_0"] + metric["coverage"]["dropped"]["agent_0"]["terminal"] == 12
    for agent, fig in rep["reward_recovery"].items():
        assert -1 <= fig["pearson"] <= 1 and "pearson" in fig["raw"]
    yard = rep["reward_recovery_yardsticks"]
    assert yard["expert_implied"]["agents"] == {a: {k: v[k] for k in ("pearson", "distance")}
                                                for a, v in rep["reward_recovery"].items()}
    assert "bc-checkpoint" in yard["bc_log_policy"]["skipped"] and yard["random_critic"]["seed"] == 0
    epic = recovery_report(u, "gems", {}, demos, meta, method="epic", raw_rows=200)
    assert epic["reward_recovery_metric"]["method"] == "epic"
    assert all(-1 <= f["pearson"] <= 1 for f in epic["reward_recovery"].values())
    with pytest.raises(ValueError, match="method"):
        recovery_report(u, "gems", {}, demos, meta, method="raw")


# --------------------------------------------------------------------------- mamql evaluate


def mamql(cwd: Path, *argv: str) -> dict | str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mamql.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("env_name,expert", [("gems", "scripted"), ("mpe/simple_adversary", "random")])
def test_mamql_evaluate_reports_the_shaping_invariant_figure_and_yardsticks(tmp_path, env_name, expert):
    mamql(tmp_path, "demos", "collect", "--env", env_name, "--expert", expert, "--transitions", "100",
          "--num-envs", "2", "--out", "d.npz")
    small = ["--demos", "d.npz", "--steps", "2", "--no-progress", "--set", "learner.network=mlp",
             "--set", "learner.hidden=[8]", "--set", "learner.batch_size=16", "--set", "learner.seed_transitions=16",
             "--set", "learner.eval_episodes=1", "--set", "learner.eval_every=0", "--set", "actor.num_envs=2",
             "--set", "learner.torch_threads=1", "--set", f"run.root={tmp_path}"]
    trained = mamql(tmp_path, "train", "--env", env_name, "--run-name", "m", *small)
    ckpt = json.loads(trained.strip().splitlines()[-1])["checkpoint"]
    extra = []
    if env_name == "gems":  # the BC yardstick from a BC checkpoint, the expert one from a checkpoint
        bc = json.loads(mamql(tmp_path, "train", "--env", env_name, "--algo", "bc", "--run-name", "b",
                              *small).strip().splitlines()[-1])["checkpoint"]
        extra = ["--bc-checkpoint", bc, "--expert-checkpoint", ckpt]
    out = json.loads(mamql(tmp_path, "evaluate", "--checkpoint", ckpt, "--demos", "d.npz", "--episodes", "1",
                           "--recovery-states", "6", "--recovery-rows", "50", *extra))
    agents = set(env_spec(env_name).agents)
    metric = out["reward_recovery_metric"]
    assert metric["method"] == "dard" and metric["simulator"] == ("get_state" if env_name == "gems" else "deepcopy")
    assert metric["demonstrators"]["kind"] == expert and metric["demonstrators"]["source"] == "demos"
    assert set(out["reward_recovery"]) == agents
    for fig in out["reward_recovery"].values():
        assert fig["pearson"] is None or -1 <= fig["pearson"] <= 1
        assert "raw" in fig and "raw" in out["reward_recovery_raw_note"]
    yard = out["reward_recovery_yardsticks"]
    assert set(yard["random_critic"]["agents"]) == agents and yard["random_critic"]["seed"] == 0
    if env_name == "gems":
        assert set(yard["bc_log_policy"]["agents"]) == agents and yard["bc_log_policy"]["checkpoint"]["algo"] == "bc"
        assert yard["expert_implied"]["agents"] == {a: {k: f[k] for k in ("pearson", "distance")}
                                                    for a, f in out["reward_recovery"].items()}
    else:
        assert "expert-checkpoint" in yard["expert_implied"]["skipped"] and "skipped" in yard["bc_log_policy"]
