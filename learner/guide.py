"""Guided exploration for forward soft-Q: early rollouts take some actions from a guide expert.

Why: a general-sum game can have several soft equilibria, and independent learners starting from
random play find the one random play makes attractive. In Gems that is each agent collecting its own
gems: a purple gem pays +6 to both only when both stand on purple after the same step, which a
random partner almost never does, so ignoring purple is the best response to a random partner and
soft-Q settles there (0 purple collections; docs/results.md). The paper's experts, like our scripted
one, collect purple together. A guide (e.g. the scripted expert) taking each agent's action with a
probability that anneals to 0 shows the learners that other equilibrium; after `guide_updates`
updates the rollouts are the learners' own Boltzmann policies only, so what training converges to
is still a soft equilibrium of the env's reward (each policy a soft best response to the other):
the guide picks which one, it is not imitated. The guide only changes how rows are collected; the
loss and the targets are those of soft-Q.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def guide_probability(step: int, start: float, updates: int) -> float:
    """Probability that an agent's action comes from the guide at update `step`: `start`, falling
    linearly to 0 at `updates` (0 from then on; 0 throughout when updates <= 0)."""
    if updates <= 0 or step >= updates:
        return 0.0
    return float(start) * (1.0 - step / updates)


class GuidedPolicy:
    """Acts like `policy`, except that each (env copy, agent) action is replaced by `guide`'s with
    probability `prob`, drawn independently per row and agent, so within one episode an agent's
    partner is sometimes the guide and sometimes the learner: the rows teach best responses to both."""

    def __init__(self, policy: Any, guide: Any, prob: float, rng: np.random.Generator):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"guide probability must be in [0, 1], got {prob}")
        self.policy, self.guide, self.prob, self.rng = policy, guide, prob, rng

    def act(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        actions = self.policy.act(obs)
        if self.prob <= 0.0:
            return actions
        guided = self.guide.act(obs)
        out = {}
        for agent, own in actions.items():
            take = self.rng.random(len(own)) < self.prob
            out[agent] = np.where(take, np.asarray(guided[agent]), own).astype(own.dtype, copy=False)
        return out
