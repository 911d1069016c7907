"""How much reward can the MAMQL objective recover when everything but the expert is exact?

A random tabular general-sum game: agent 0 (4 actions) plays against a fixed stochastic partner
(3 actions), 8 states, random dynamics and rewards. Agent 0's marginal game (the partner's policy
folded into the dynamics and the reward) is what its marginal critic Q_0(s, a_0) sees. We fit a
free Q table to the MAMQL loss (learner.losses.mamql_loss, value term on the expert rows, as in
IQ-Learn's offline `expert` variant) on joint-action samples of an expert, recover
r^(s,a) = Q(s,a) - gamma E_{s'}[V(s')], and compare it with the true marginal reward:

- raw:            Pearson correlation over all (s, a);
- shaping_invariant: the same after projecting both rewards off every potential-based shaping
                  gamma E[Phi(s')] - Phi(s) and constants (learner.losses.shaping_projected_correlation;
                  exact, because the dynamics are known).

Experts: "soft" = soft-optimal at the learner's temperature (IQ-Learn's assumption), "argmax" =
the deterministic greedy policy of the same Q* (what a scripted expert is like). Prints one JSON
line; `python -m mamql.experiments.tabular_recovery [--seeds 3]` takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from mamql.learner.losses import boltzmann_probs, mamql_loss, shaping_projected_correlation, soft_value

STATES, ACTIONS, PARTNER_ACTIONS, GAMMA = 8, 4, 3, 0.9


@dataclass(frozen=True)
class MarginalGame:
    joint_transition: np.ndarray  # [S, A0, A1, S']
    partner_policy: np.ndarray  # [S, A1]
    transition: np.ndarray  # [S, A0, S'], partner marginalised out
    reward: np.ndarray  # [S, A0], agent 0's reward, partner marginalised out


def random_game(seed: int) -> MarginalGame:
    rng = np.random.default_rng(seed)
    joint = rng.dirichlet(np.full(STATES, 0.3), size=(STATES, ACTIONS, PARTNER_ACTIONS))
    reward = rng.normal(size=(STATES, ACTIONS, PARTNER_ACTIONS))
    partner = rng.dirichlet(np.ones(PARTNER_ACTIONS), size=STATES)
    return MarginalGame(joint, partner, np.einsum("sb,sabt->sat", partner, joint), np.einsum("sb,sab->sa", partner, reward))


def soft_value_iteration(reward: np.ndarray, transition: np.ndarray, alpha: float, iters: int = 3000) -> np.ndarray:
    """Q* of the soft Bellman equation Q = r + gamma P V, V = alpha logsumexp(Q / alpha)."""
    v = np.zeros(reward.shape[0])
    for _ in range(iters):
        q = reward + GAMMA * transition @ v
        v = soft_value(torch.from_numpy(q), alpha).numpy()
    return q


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of `probs` [N, K]."""
    return (probs.cumsum(1) > rng.random((len(probs), 1))).argmax(1)


def expert_rows(game: MarginalGame, policy: np.ndarray, rows: int, seed: int) -> dict[str, torch.Tensor]:
    """(s, a_0, s') with s uniform, a_0 ~ the expert, the partner's a_1 ~ its policy, s' ~ the joint dynamics."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, STATES, rows)
    a0, a1 = _draw(rng, policy[s]), _draw(rng, game.partner_policy[s])
    s2 = _draw(rng, game.joint_transition[s, a0, a1])
    return {"s": torch.as_tensor(s), "a": torch.as_tensor(a0), "s2": torch.as_tensor(s2)}


def fit_critic(rows: dict[str, torch.Tensor], alpha: float, chi2_alpha: float | None, steps: int) -> torch.Tensor:
    """A free Q table [S, A] minimising the MAMQL loss on the expert rows (full batch, Adam)."""
    table = torch.nn.Parameter(torch.zeros(STATES, ACTIONS, dtype=torch.float64))
    opt = torch.optim.Adam([table], lr=0.05)
    n = len(rows["s"])
    done, is_expert = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.bool)
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = mamql_loss(table[rows["s"]], table[rows["s2"]], rows["a"], done, is_expert, gamma=GAMMA,
                             alpha=alpha, value_term="expert", chi2_alpha=chi2_alpha)
        loss.backward()
        opt.step()
    return table.detach()


def recovery(seed: int, expert: str, alpha: float = 1.0, chi2_alpha: float | None = None,
             rows: int = 40_000, steps: int = 3000) -> dict[str, float]:
    game = random_game(seed)
    q_star = soft_value_iteration(game.reward, game.transition, alpha)
    if expert == "soft":
        policy = boltzmann_probs(torch.from_numpy(q_star), alpha).numpy()
    elif expert == "argmax":
        policy = np.eye(ACTIONS)[q_star.argmax(1)]
    else:
        raise ValueError(f"expert must be 'soft' or 'argmax', got {expert!r}")
    table = fit_critic(expert_rows(game, policy, rows, seed), alpha, chi2_alpha, steps)
    r_hat = table.numpy() - GAMMA * game.transition @ soft_value(table, alpha).numpy()
    return {"raw": float(np.corrcoef(r_hat.ravel(), game.reward.ravel())[0, 1]),
            "shaping_invariant": shaping_projected_correlation(r_hat, game.reward, game.transition, GAMMA)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {}
    for expert in ("soft", "argmax"):
        for chi2 in (math.inf, 1.0, 0.25):
            runs = [recovery(seed, expert, chi2_alpha=chi2) for seed in range(args.seeds)]
            result[f"{expert}/chi2_alpha={chi2}"] = {k: round(float(np.mean([r[k] for r in runs])), 3) for k in runs[0]}
    print(json.dumps({"experiment": "tabular_recovery", "seeds": args.seeds, "states": STATES, "actions": ACTIONS,
                      "partner_actions": PARTNER_ACTIONS, "gamma": GAMMA, "alpha": 1.0, "recovery": result}))


if __name__ == "__main__":
    main()
