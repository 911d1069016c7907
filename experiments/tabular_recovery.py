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
the deterministic greedy policy of the same Q* (what a scripted expert is like).

Objectives: value_term "expert" (IQ-Learn offline, the rows above) and "online", MAMQL's default:
the value term on the learner's OWN rows, drawn as in the system by rolling the current Boltzmann
policy (and the partner) forward in parallel chains into a replay that the loss reads in full.

The game is also a PettingZoo env (TabularGameEnv, with get_state/set_state) so that the
simulator-based reward comparison `mamql evaluate` reports (learner.reward_compare, DARD) runs on it
unchanged; `metric` in the output holds, per expert and objective, that sampled figure next to the
exact partial correlation it has to agree with (tests/learner/test_reward_compare.py pins it).
`versus` sets MAMQL's marginal critic against IQL-MA's in the reference form (fit_iqlma_critic: the
partner's action as an input, on expert rows only) on the same soft expert's rows, with exact figures:
how close each acting policy is to the expert (KL), its return, and the reward it implies.
Prints one JSON line; `python -m mamql.experiments.tabular_recovery [--seeds 3] [--only recovery|metric|versus]`
takes a few minutes for the chi^2 table, about 13 for `metric` and 7 for `versus` on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from gymnasium import spaces
from pettingzoo import ParallelEnv

from mamql.learner.losses import boltzmann_probs, iqlma_loss, mamql_loss, shaping_projected_correlation, soft_value

STATES, ACTIONS, PARTNER_ACTIONS, GAMMA = 8, 4, 3, 0.9
AGENTS = ("agent_0", "agent_1")  # agent_1 is the fixed partner


@dataclass(frozen=True)
class MarginalGame:
    joint_transition: np.ndarray  # [S, A0, A1, S']
    partner_policy: np.ndarray  # [S, A1]
    transition: np.ndarray  # [S, A0, S'], partner marginalised out
    reward: np.ndarray  # [S, A0], agent 0's reward, partner marginalised out
    joint_reward: np.ndarray | None = None  # [S, A0, A1], agent 0's reward of the joint action


def random_game(seed: int) -> MarginalGame:
    rng = np.random.default_rng(seed)
    joint = rng.dirichlet(np.full(STATES, 0.3), size=(STATES, ACTIONS, PARTNER_ACTIONS))
    reward = rng.normal(size=(STATES, ACTIONS, PARTNER_ACTIONS))
    partner = rng.dirichlet(np.ones(PARTNER_ACTIONS), size=STATES)
    return MarginalGame(joint, partner, np.einsum("sb,sabt->sat", partner, joint), np.einsum("sb,sab->sa", partner, reward),
                        reward)


class TabularGameEnv(ParallelEnv):
    """The game as a PettingZoo env: both agents observe the state one-hot (float32 [S]); agent_0's
    reward is r(s, a0, a1), the partner's 0 (it is not scored); s' ~ the joint dynamics; it never
    terminates and truncates after `horizon` steps. reset starts from a uniform state.
    get_state/set_state restore the state and step count but NOT the rng, so repeated steps from
    one restored state draw independent successors (reward_compare.sample_agent's `draws`)."""

    metadata = {"name": "tabular_game_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, game: MarginalGame, horizon: int = 1_000_000, seed: int = 0):
        if game.joint_reward is None:
            raise ValueError("TabularGameEnv needs the game's joint_reward (random_game sets it)")
        self.game, self.max_steps = game, horizon
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self._spaces = {"agent_0": spaces.Discrete(ACTIONS), "agent_1": spaces.Discrete(PARTNER_ACTIONS)}
        self._obs_space = spaces.Box(0.0, 1.0, shape=(STATES,), dtype=np.float32)
        self._rng = np.random.default_rng(seed)
        self.s, self.t = 0, 0

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._spaces[agent]

    def _obs(self) -> dict[str, np.ndarray]:
        one_hot = np.eye(STATES, dtype=np.float32)[self.s]
        return {a: one_hot.copy() for a in AGENTS}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.s, self.t, self.agents = int(self._rng.integers(STATES)), 0, list(AGENTS)
        return self._obs(), {a: {} for a in AGENTS}

    def step(self, actions: dict):
        a0, a1 = int(actions["agent_0"]), int(actions["agent_1"])
        reward = float(self.game.joint_reward[self.s, a0, a1])
        self.s = _draw(self._rng, self.game.joint_transition[self.s, a0, a1][None])[0]
        self.t += 1
        truncated = self.t >= self.max_steps
        agents = self.agents
        if truncated:
            self.agents = []
        return (self._obs(), {"agent_0": reward, "agent_1": 0.0}, {a: False for a in agents},
                {a: truncated for a in agents}, {a: {} for a in agents})

    def get_state(self) -> dict:
        return {"s": self.s, "t": self.t, "agents": tuple(self.agents)}

    def set_state(self, snapshot: dict) -> None:
        self.s, self.t, self.agents = int(snapshot["s"]), int(snapshot["t"]), list(snapshot["agents"])


def demonstrator(game: MarginalGame, policy: np.ndarray):
    """reward_compare.Demonstrator of the game: agent_0 by `policy` [S, A0], the partner by its own."""
    tables = {"agent_0": np.asarray(policy, dtype=np.float64), "agent_1": game.partner_policy}
    return lambda obs: {a: tables[a][np.asarray(o).argmax(-1)] for a, o in obs.items()}


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
    """(s, a_0, s', and b = a_1) with s uniform, a_0 ~ the expert, the partner's a_1 ~ its policy, s' ~ the
    joint dynamics."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, STATES, rows)
    a0, a1 = _draw(rng, policy[s]), _draw(rng, game.partner_policy[s])
    s2 = _draw(rng, game.joint_transition[s, a0, a1])
    return {"s": torch.as_tensor(s), "a": torch.as_tensor(a0), "s2": torch.as_tensor(s2), "b": torch.as_tensor(a1)}


def fit_critic(rows: dict[str, torch.Tensor], alpha: float, chi2_alpha: float | None, steps: int,
               value_term: str = "expert", game: MarginalGame | None = None, seed: int = 0,
               chains: int = 256, roll_every: int = 5, chi2_on_policy: bool = False) -> torch.Tensor:
    """A free Q table [S, A] (the game's sizes; random_game's without one) minimising the MAMQL loss
    (full batch, Adam). value_term "expert": the expert rows only. "online" (MAMQL's default, needs
    `game`): online rows as well, from `chains` parallel rollouts of the CURRENT Boltzmann policy (and
    the partner) advanced one step every `roll_every` updates into a replay of the latest len(rows)
    transitions (at least `chains`), seeded with one step of the initial (uniform) policy, as the
    system's actors seed theirs. chi2_on_policy as in learner.losses.mamql_loss."""
    if value_term not in ("expert", "online"):
        raise ValueError(f"value_term must be 'expert' or 'online', got {value_term!r}")
    if value_term == "online" and game is None:
        raise ValueError("value_term 'online' rolls the learner's policy out: pass the game")
    n_states, n_actions = game.transition.shape[:2] if game is not None else (STATES, ACTIONS)
    table = torch.nn.Parameter(torch.zeros(n_states, n_actions, dtype=torch.float64))
    opt = torch.optim.Adam([table], lr=0.05)
    n = len(rows["s"])
    online_rows = max(n, chains)
    rng = np.random.default_rng(seed + 7919)
    chain = rng.integers(0, n_states, chains)
    replay = np.zeros((3, online_rows), dtype=np.int64)  # ring buffer of online (s, a, s')
    filled = cursor = 0
    batch = (rows["s"], rows["a"], rows["s2"], torch.ones(n, dtype=torch.bool))

    def roll() -> tuple[torch.Tensor, ...]:
        nonlocal chain, filled, cursor
        pi = boltzmann_probs(table.detach(), alpha).numpy()
        a0, a1 = _draw(rng, pi[chain]), _draw(rng, game.partner_policy[chain])
        s2 = _draw(rng, game.joint_transition[chain, a0, a1])
        slots = (cursor + np.arange(chains)) % online_rows
        replay[:, slots] = np.stack([chain, a0, s2])
        cursor, filled, chain = (cursor + chains) % online_rows, min(online_rows, filled + chains), s2
        on = torch.as_tensor(replay[:, :filled])
        return (*(torch.cat([rows[k], on[j]]) for j, k in enumerate(("s", "a", "s2"))),
                torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(filled, dtype=torch.bool)]))

    for step in range(steps):
        if value_term == "online" and step % roll_every == 0:
            batch = roll()
        s, a, s2, is_expert = batch
        done = torch.zeros(len(s), dtype=torch.float64)
        opt.zero_grad()
        loss, _ = mamql_loss(table[s], table[s2], a, done, is_expert, gamma=GAMMA,
                             alpha=alpha, value_term=value_term, chi2_alpha=chi2_alpha, chi2_on_policy=chi2_on_policy)
        loss.backward()
        opt.step()
    return table.detach()


def fit_iqlma_critic(rows: dict[str, torch.Tensor], alpha: float, chi2_alpha: float | None,
                     steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """IQL-MA's critic of agent 0 in the reference form, on tables: Q(s, a_1, .) = W[s] + U[a_1], what
    the system's ConditionedCritic is with `network: linear` (the partner's one-hot adds its own row;
    acting leaves it out: Q = W[s]), fitted to learner.losses.iqlma_loss on the expert rows with the
    partner's action of the row plugged in at s' too, as the reference does. Returns (W [S, A], U [B, A])."""
    w = torch.nn.Parameter(torch.zeros(STATES, ACTIONS, dtype=torch.float64))
    u = torch.nn.Parameter(torch.zeros(PARTNER_ACTIONS, ACTIONS, dtype=torch.float64))
    opt = torch.optim.Adam([w, u], lr=0.05)
    s, a, s2, b = rows["s"], rows["a"], rows["s2"], rows["b"]
    done = torch.zeros(len(s), dtype=torch.float64)
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = iqlma_loss(w[s] + u[b], w[s2] + u[b], a, done, gamma=GAMMA, alpha=alpha, chi2_alpha=chi2_alpha)
        loss.backward()
        opt.step()
    return w.detach(), u.detach()


def implied_reward(game: MarginalGame, q: np.ndarray, alpha: float) -> np.ndarray:
    """[S, A0]: a marginal critic's implied reward Q(s, a) - gamma E_{s'}[V(s')] under the game's dynamics."""
    return q - GAMMA * game.transition @ soft_value(torch.from_numpy(q), alpha).numpy()


def iqlma_marginal_reward(game: MarginalGame, w: np.ndarray, u: np.ndarray, alpha: float) -> np.ndarray:
    """[S, A0]: the reward IQL-MA's critic implies, r(s, a_0, a_1) = Q(s, a_1, a_0) - gamma E[V(s', a_1')]
    with the partner's next action drawn from its policy (as `mamql evaluate` reads it), averaged over
    the partner's action at s: comparable with the marginal game's reward."""
    q = w[:, None, :] + u[None, :, :]  # [S, B, A0]
    v = np.einsum("sb,sb->s", game.partner_policy, soft_value(torch.from_numpy(q), alpha).numpy())
    return np.einsum("sb,sba->sa", game.partner_policy, q) - GAMMA * game.transition @ v


def policy_value(game: MarginalGame, policy: np.ndarray) -> float:
    """Agent 0's expected discounted return under `policy` [S, A0] in the marginal game, from a uniform
    start state (exact: (I - gamma P_pi)^-1 r_pi)."""
    p_pi = np.einsum("sa,sat->st", policy, game.transition)
    r_pi = np.einsum("sa,sa->s", policy, game.reward)
    return float(np.linalg.solve(np.eye(len(policy)) - GAMMA * p_pi, r_pi).mean())


def return_share(game: MarginalGame, expert: np.ndarray, policy: np.ndarray) -> float:
    """`policy`'s value as a share of the `expert`'s gain over uniform play (1 = the expert's return; exact)."""
    uniform = policy_value(game, np.full(expert.shape, 1.0 / expert.shape[1]))
    return (policy_value(game, policy) - uniform) / (policy_value(game, expert) - uniform)


def versus_iqlma(seed: int, alpha: float = 1.0, rows: int = 40_000, steps: int = 3000) -> dict:
    """MAMQL (both value terms) against IQL-MA on the same soft expert's rows, exact figures: the acting
    policy's value as a share of the expert's gain over the uniform policy (1 = the expert's return),
    the mean KL(expert || learned) over states, and the shaping-invariant reward correlation."""
    game = random_game(seed)
    policy = expert_policy(game, "soft", alpha)
    data = expert_rows(game, policy, rows, seed)
    out = {}
    learned = {f"mamql/{v}": fit_critic(data, alpha, None, steps, v, game, seed).numpy() for v in ("online", "expert")}
    w, u = (t.numpy() for t in fit_iqlma_critic(data, alpha, None, steps))
    for name, q in [*learned.items(), ("iqlma", w)]:
        pi = boltzmann_probs(torch.from_numpy(q), alpha).numpy()
        r_hat = iqlma_marginal_reward(game, w, u, alpha) if name == "iqlma" else implied_reward(game, q, alpha)
        out[name] = {"return_share": return_share(game, policy, pi),
                     "kl": float(np.mean(np.sum(policy * (np.log(policy) - np.log(pi)), -1))),
                     "shaping_invariant": shaping_projected_correlation(r_hat, game.reward, game.transition, GAMMA)}
    return out


def expert_policy(game: MarginalGame, expert: str, alpha: float = 1.0) -> np.ndarray:
    """[S, A0]: "soft" Boltzmann(Q*/alpha) of the marginal game's soft-optimal Q*, "argmax" its greedy policy."""
    q_star = soft_value_iteration(game.reward, game.transition, alpha)
    if expert == "soft":
        return boltzmann_probs(torch.from_numpy(q_star), alpha).numpy()
    if expert == "argmax":
        return np.eye(ACTIONS)[q_star.argmax(1)]
    raise ValueError(f"expert must be 'soft' or 'argmax', got {expert!r}")


def sampled_metric(game: MarginalGame, policy: np.ndarray, q_table: np.ndarray, alpha: float = 1.0,
                   per_state: int = 32, draws: int = 8, seed: int = 0) -> float:
    """The figure `mamql evaluate` reports, computed the same way on the game: reward_compare's
    simulator path on TabularGameEnv (every state `per_state` times as coverage, so states are uniform
    as in the exact figures; the partner's actions enumerated; `draws` successors per joint action),
    agent_0's critic `q_table` [S, A0] against the env's reward."""
    from mamql.learner.reward_compare import CoverageState, Simulator, compare_rewards, sample_agent

    env = TabularGameEnv(game, seed=seed)
    env.reset(seed=seed)
    sim = Simulator(env)
    eye = np.eye(STATES, dtype=np.float32)
    coverage = [CoverageState({"s": s, "t": 0, "agents": AGENTS}, {a: eye[s] for a in AGENTS}, 0)
                for s in range(STATES) for _ in range(per_state)]
    samples = sample_agent(sim, coverage, demonstrator(game, policy), "agent_0",
                           {"agent_0": ACTIONS, "agent_1": PARTNER_ACTIONS}, seed=seed, draws=draws, second_combos=2)
    q = np.asarray(q_table, dtype=np.float64)
    models = {"critic": {"agent_0": (lambda obs: q[np.asarray(obs).argmax(-1)], alpha)}}
    return compare_rewards({"agent_0": samples}, models, GAMMA)["critic"]["agent_0"]["pearson"]


def recovery(seed: int, expert: str, alpha: float = 1.0, chi2_alpha: float | None = None,
             rows: int = 40_000, steps: int = 3000, value_term: str = "expert", metric: bool = False,
             return_table: bool = False) -> dict:
    """raw and shaping_invariant (the exact partial correlation) of the critic fitted with `value_term`;
    with metric=True also dard_exact (reward_compare's canonical form, exact) and dard_sampled
    (sampled_metric: what `mamql evaluate` would report); with return_table the Q table itself."""
    from mamql.learner.reward_compare import tabular_dard_correlation

    game = random_game(seed)
    policy = expert_policy(game, expert, alpha)
    table = fit_critic(expert_rows(game, policy, rows, seed), alpha, chi2_alpha, steps, value_term, game, seed)
    r_hat = implied_reward(game, table.numpy(), alpha)
    out: dict = {"raw": float(np.corrcoef(r_hat.ravel(), game.reward.ravel())[0, 1]),
                 "shaping_invariant": shaping_projected_correlation(r_hat, game.reward, game.transition, GAMMA)}
    if metric:
        out["dard_exact"] = tabular_dard_correlation(game.reward, table.numpy(), game.transition, GAMMA, alpha)
        out["dard_sampled"] = sampled_metric(game, policy, table.numpy(), alpha, seed=seed)
    if return_table:
        out["table"] = table.numpy()
    return out


def grid_world(n: int = 7, sparse: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(transition [S, 5, S], reward [S, 5]) of an n x n grid with Gems' moves (stay, up, down, left,
    right; walls stop): deterministic LOCAL dynamics, unlike random_game's, which mix in one step.
    sparse: +1 for stepping onto one goal cell; else N(0, 1) per (s, a)."""
    rng = np.random.default_rng(seed)
    moves = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
    transition = np.zeros((n * n, len(moves), n * n))
    for s in range(n * n):
        r, c = divmod(s, n)
        for a, (dr, dc) in enumerate(moves):
            transition[s, a, min(max(r + dr, 0), n - 1) * n + min(max(c + dc, 0), n - 1)] = 1.0
    if sparse:
        return transition, transition[:, :, int(rng.integers(n * n))].copy()
    return transition, rng.normal(size=(n * n, len(moves)))


def grid_ceiling(gamma: float, sparse: bool, alpha: float = 1.0) -> dict[str, float]:
    """What a soft-OPTIMAL critic of a grid_world scores: the exact projection reads 1 (its log-policy
    is the reward shaped by V*), DARD less, since it removes only two steps of V*'s lookahead; with
    local dynamics V* varies over those steps, with random_game's it does not."""
    from mamql.learner.reward_compare import soft_value_np, tabular_dard_correlation, tabular_projected_correlation

    transition, reward = grid_world(sparse=sparse)
    v = np.zeros(len(reward))
    for _ in range(int(20 / (1 - gamma))):
        q = reward + gamma * transition @ v
        v = soft_value_np(q, alpha)
    r_hat = q - gamma * transition @ soft_value_np(q, alpha)
    return {"projection": tabular_projected_correlation(r_hat, reward, transition, gamma),
            "dard_exact": tabular_dard_correlation(reward, q, transition, gamma, alpha)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=["recovery", "metric", "versus"], default=None,
                        help="recovery: the chi^2 table only; metric: the evaluate figure vs the exact one only; "
                             "versus: MAMQL against IQL-MA only")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    torch.set_num_threads(1)
    result = {}
    for expert in ("soft", "argmax") if args.only in (None, "recovery") else ():
        for chi2 in (math.inf, 1.0, 0.25):
            runs = [recovery(seed, expert, chi2_alpha=chi2) for seed in range(args.seeds)]
            result[f"{expert}/chi2_alpha={chi2}"] = {k: round(float(np.mean([r[k] for r in runs])), 3) for k in runs[0]}
    metric = {}  # the evaluate figure (sampled DARD) next to the exact one, both objectives, default chi^2
    for expert in ("soft", "argmax") if args.only in (None, "metric") else ():
        for value_term in ("online", "expert"):
            runs = [recovery(seed, expert, value_term=value_term, metric=True) for seed in range(args.seeds)]
            metric[f"{expert}/value_term={value_term}"] = {
                **{k: round(float(np.mean([r[k] for r in runs])), 3) for k in runs[0]},
                "max_abs_sampled_minus_exact": round(max(abs(r["dard_sampled"] - r["shaping_invariant"]) for r in runs), 3)}
    if metric:  # the limit of the same figure where dynamics are local (a soft-optimal critic, exact)
        metric["grid_ceiling"] = {f"7x7 {'sparse' if sparse else 'dense'} gamma={g}": {
            k: round(v, 3) for k, v in grid_ceiling(g, sparse).items()} for sparse in (True, False) for g in (0.9, 0.99)}
    versus = {}  # MAMQL's marginal critic against IQL-MA's conditioned one, the same soft expert's rows
    if args.only in (None, "versus"):
        runs = [versus_iqlma(seed) for seed in range(args.seeds)]
        versus = {name: {k: [round(float(r[name][k]), 3) for r in runs] for k in runs[0][name]} for name in runs[0]}
    print(json.dumps({"experiment": "tabular_recovery", "seeds": args.seeds, "states": STATES, "actions": ACTIONS,
                      "partner_actions": PARTNER_ACTIONS, "gamma": GAMMA, "alpha": 1.0,
                      **({"recovery": result} if result else {}), **({"metric": metric} if metric else {}),
                      **({"versus_iqlma": versus} if versus else {})}))


if __name__ == "__main__":
    main()
