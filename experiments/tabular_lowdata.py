"""Does the MAMQL objective learn more than BC from few demonstrations when nothing generalises?

The paper's data-efficiency claim (Gems, 1k demos: MAMQL above the baselines) could come from the
objective itself (its online value term sees states the demos miss) or from the network generalising
from the demos' states to others. A free table generalises nothing, so it isolates the objective.

At a state u with no expert row every gradient the MAMQL loss sends to Q(u, .) is c * pi(. | u) (the
value terms and the chi^2 term reach u only through V(u)) or, with the chi^2 term on online rows,
pi(a | u) (Q(u, a) - y) with ONE target y for all actions (the replay row's own s'). From a constant
start Q(u, .) therefore stays constant across actions: the acting policy at u is exactly uniform, as
BC's is. Whatever MAMQL gains over BC from few demos must come from the states the demos do cover,
or from generalisation, which a table does not have.

The game: experiments.tabular_recovery.grid_world (7 x 7, Gems' five moves, deterministic local
dynamics, 10 for stepping onto one goal cell; a single agent, i.e. a marginal game whose partner has
one action), gamma 0.9, a soft-optimal expert at temperature 1 (entropy ~0.5 nats, Gems' soft expert
0.25). Demos: episodes of `horizon` steps from uniform start cells. For each demo count: BC (a logit
table fitted by cross-entropy), MAMQL's objective (value term on online rows, chi^2 on expert rows: the
default) and the same with the chi^2 term on online rows too (IQ-Learn's `regularize`), the same Adam
steps; exact figures: the acting policy's return as a share of the expert's gain over uniform play,
the share of cells the demos visit, and the largest departure from uniform at unvisited cells.
Prints one JSON line: `python -m mamql.experiments.tabular_lowdata [--seeds 5]` (~5 min on one core).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from mamql.experiments.tabular_recovery import (GAMMA, MarginalGame, _draw, expert_policy, fit_critic, grid_world,
                                                 return_share)
from mamql.learner.losses import bc_loss, boltzmann_probs

GOAL_REWARD, ALPHA, HORIZON = 10.0, 1.0, 15
DEMO_COUNTS = (15, 45, 150, 450, 1500)
METHODS = ("bc", "mamql", "mamql/chi2_online")


def grid_game(seed: int) -> MarginalGame:
    """grid_world(sparse) with the goal worth GOAL_REWARD as a marginal game whose partner has one action."""
    transition, reward = grid_world(sparse=True, seed=seed)
    reward = GOAL_REWARD * reward
    n = len(reward)
    return MarginalGame(transition[:, :, None, :], np.ones((n, 1)), transition, reward, reward[:, :, None])


def demo_rows(game: MarginalGame, policy: np.ndarray, transitions: int, horizon: int, seed: int) -> dict[str, torch.Tensor]:
    """`transitions` rows (s, a, s2, b = 0) of episodes of `horizon` steps from uniform start cells."""
    rng = np.random.default_rng(seed)
    episodes = -(-transitions // horizon)
    s = rng.integers(0, len(policy), episodes)
    rows = []
    for _ in range(horizon):
        a = _draw(rng, policy[s])
        s2 = _draw(rng, game.transition[s, a])
        rows.append(np.stack([s, a, s2]))
        s = s2
    table = np.concatenate(rows, axis=1)[:, :transitions]
    keys = ("s", "a", "s2")
    out = {k: torch.as_tensor(table[j]) for j, k in enumerate(keys)}
    out["b"] = torch.zeros(transitions, dtype=torch.int64)
    return out


def fit_bc(rows: dict[str, torch.Tensor], states: int, actions: int, steps: int) -> torch.Tensor:
    """A logit table [S, A] fitted by cross-entropy to the rows' actions (full batch, Adam, lr as fit_critic's)."""
    table = torch.nn.Parameter(torch.zeros(states, actions, dtype=torch.float64))
    opt = torch.optim.Adam([table], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        bc_loss(table[rows["s"]], rows["a"]).backward()
        opt.step()
    return table.detach()


def lowdata(seed: int, counts: tuple[int, ...] = DEMO_COUNTS, horizon: int = HORIZON, steps: int = 2000) -> dict:
    """Per demo count: coverage and, per method, return_share and max_dev_unvisited (exact figures)."""
    game = grid_game(seed)
    states, actions = game.reward.shape
    expert = expert_policy(game, "soft", ALPHA)
    out = {}
    for n in counts:
        rows = demo_rows(game, expert, n, horizon, seed * 1000 + n)
        seen = np.zeros(states, dtype=bool)
        seen[rows["s"].numpy()] = True
        tables = {"bc": fit_bc(rows, states, actions, steps),
                  "mamql": fit_critic(rows, ALPHA, None, steps, "online", game, seed),
                  "mamql/chi2_online": fit_critic(rows, ALPHA, None, steps, "online", game, seed, chi2_on_policy=True)}
        cell = {"coverage": float(seen.mean())}
        for name, table in tables.items():
            pi = boltzmann_probs(table, ALPHA).numpy()
            dev = np.abs(pi[~seen] - 1.0 / actions).max() if (~seen).any() else 0.0
            cell[name] = {"return_share": return_share(game, expert, pi), "max_dev_unvisited": float(dev)}
        out[str(n)] = cell
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    torch.set_num_threads(1)
    runs = [lowdata(seed) for seed in range(args.seeds)]
    result = {}
    for n in runs[0]:
        result[n] = {"coverage": [round(r[n]["coverage"], 3) for r in runs]}
        for m in METHODS:
            result[n][m] = {k: [round(r[n][m][k], 3) for r in runs] for k in runs[0][n][m]}
    print(json.dumps({"experiment": "tabular_lowdata", "seeds": args.seeds, "grid": "7x7", "gamma": GAMMA,
                      "alpha": ALPHA, "goal_reward": GOAL_REWARD, "horizon": HORIZON, "by_demo_count": result}))


if __name__ == "__main__":
    main()
