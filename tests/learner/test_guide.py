"""Guided exploration for soft-Q (learner/guide.py): the schedule and the per-(row, agent) mixing."""

import numpy as np
import pytest

from mamql.learner.guide import GuidedPolicy, guide_probability


class Constant:
    def __init__(self, value):
        self.value = value

    def act(self, obs):
        return {a: np.full(len(o), self.value, dtype=np.int64) for a, o in obs.items()}


def test_probability_anneals_linearly_to_zero():
    assert guide_probability(0, 0.5, 100) == 0.5
    assert guide_probability(50, 0.5, 100) == pytest.approx(0.25)
    assert guide_probability(100, 0.5, 100) == 0.0
    assert guide_probability(1000, 0.5, 100) == 0.0
    assert guide_probability(0, 0.5, 0) == 0.0  # no guide updates: never guided


def test_mixing_takes_the_guides_action_with_the_given_probability_per_row_and_agent():
    obs = {"a": np.zeros((20_000, 3)), "b": np.zeros((20_000, 3))}
    mixed = GuidedPolicy(Constant(1), Constant(4), 0.3, np.random.default_rng(0)).act(obs)
    for agent, actions in mixed.items():
        assert set(np.unique(actions)) == {1, 4} and actions.dtype == np.int64
        assert abs((actions == 4).mean() - 0.3) < 0.02, agent
    # independent per agent: the two agents are not guided on the same rows
    assert 0.05 < ((mixed["a"] == 4) & (mixed["b"] == 4)).mean() < 0.13


def test_probability_zero_and_one_are_exactly_the_policy_and_the_guide():
    obs = {"a": np.zeros((100, 3))}
    assert (GuidedPolicy(Constant(1), Constant(4), 0.0, np.random.default_rng(0)).act(obs)["a"] == 1).all()
    assert (GuidedPolicy(Constant(1), Constant(4), 1.0, np.random.default_rng(0)).act(obs)["a"] == 4).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        GuidedPolicy(Constant(1), Constant(4), 1.5, np.random.default_rng(0))


def test_mamql_train_soft_q_with_the_scripted_guide_plays_the_guides_episodes(tmp_path):
    """guide_probability 1 for the whole run: every rollout action is the scripted expert's, so the
    rollout returns are an expert's (~26 per agent), not a random or untrained policy's (~0.3)."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "mamql.cli", "train", "--env", "gems", "--algo", "soft-q", "--steps", "8",
           "--run-name", "guided", "--no-progress", "--set", f"run.root={tmp_path}", "--set", "learner.hidden=[16]",
           "--set", "learner.batch_size=16", "--set", "learner.seed_transitions=2", "--set", "actor.num_envs=2",
           "--set", "learner.rollout_steps_per_update=12", "--set", "learner.eval_episodes=1",
           "--set", "learner.log_every=8", "--set", "learner.eval_every=0", "--set", "learner.torch_threads=1",
           "--set", "learner.guide=scripted", "--set", "learner.guide_probability=1.0",
           "--set", "learner.guide_updates=1000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "guided" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if r.get("rollout_return") is not None]
    assert logged and logged[-1]["rollout_return"] > 8.0, logged


@pytest.mark.parametrize("overrides, message", [
    (["learner.guide=scripted", "learner.guide_updates=100"], "learner.guide explores for forward soft-Q"),
    (["learner.algo=soft-q", "learner.guide=scripted"], "needs learner.guide_updates > 0"),
    (["learner.algo=soft-q", "learner.guide=oracle", "learner.guide_updates=10"], "learner.guide must be one of"),
    (["learner.algo=soft-q", "learner.guide_probability=1.5"], r"guide_probability must be in \[0, 1\]"),
])
def test_bad_guide_settings_are_refused_in_one_line(overrides, message):
    from mamql.config import ConfigError, load_config, validate

    with pytest.raises(ConfigError, match=message):
        validate(load_config(overrides=overrides))
