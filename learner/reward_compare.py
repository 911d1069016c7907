"""Shaping-invariant comparison of per-agent rewards, for any env that can restore a visited state.

Why. Inverse soft-Q learning identifies a reward only up to potential-based shaping
gamma Phi(s') - Phi(s), a positive scale and a shift; a raw per-transition correlation can score a
correct reward low and a wrong one high. Rewards are therefore compared through a CANONICAL FORM that
every shaping of a reward shares, and the figure is the Pearson correlation of the two canonical forms.

The learned reward of a critic is r^(s, a, s') = Q(s, a) - gamma (1 - d) V(s'), V = alpha logsumexp(Q / alpha).
Since Q(s, a) = alpha log pi(a | s) + V(s) for its Boltzmann policy pi,

    r^(s, a, s') = alpha log pi(a | s) + V(s) - gamma (1 - d) V(s'),

alpha log pi plus the shaping with Phi = -V. Under ANY shaping-invariant comparison a critic therefore
scores exactly what its policy's log-probabilities score: BC's log-policy (its logits read as Q,
alpha 1) is the same computation, which makes it a fair yardstick. A soft-optimal expert's own critic
is the ceiling: alpha log pi* = r + gamma E[V*(s')] - V*(s) is the true reward shaped (per (s, a), in
expectation), which the exact projection below removes fully and DARD only up to a gamma^2-order
remainder (see Limit).

Marginal game. Agent i's critic sees only its own action; the other agents act by the
demonstrators' policy, given as probabilities (`Demonstrator`), and are part of the dynamics, exactly
as MAMQL's marginal critic assumes. The true reward of agent i is what the env returns in
PettingZoo's `rewards[agent]` for the joint action, averaged over the others' actions.

Canonical form (DARD, Wulfe et al. 2022: EPIC's canonicalisation with successors drawn from the
dynamics, so rewards are only queried on transitions the env can make):

    C(R)(s, a, s') = R(s, a, s') + E[gamma R(s', A, S'') - R(s, A, S') - gamma R(S', A, S'')],
    A ~ uniform over the agent's actions, S' ~ T(s, A), S'' ~ T(s', A).

Every shaping cancels, sample by sample. DARD needs R on (S', A, S''), which is not a transition:
an env answers only for transitions it makes, so the env's reward is read as a function of the state
and the agent's action, r(s, a) = E[reward | s, a] (it depends on the state and the joint action, g = 0
below), and the critic's as Q(s, a) - gamma V(s') (f = Q, g = -gamma V). For rewards of the form
R = f(s, a) + g(s') (those two, and either one plus any shaping) the S'' terms cancel too, and
averaging over s' given (s, a) leaves

    C(s, a) = centre_a[ f(s, a) + E_{s' ~ T(s, a)} h(s') ],   h(s') = g(s') + gamma mean_A f(s', A),

centre_a subtracting the mean over the agent's actions. So one layer of successors is drawn from
each coverage state with the env's own simulator (Simulator: the env's get_state/set_state, else a
deep copy); the true reward needs mean_A f(s', A) at each successor (one more simulator step per
action), the learned one only the critic at s and s'. States with a terminal successor are left out
(sample_agent says why: with Phi(terminal) = 0, the convention of the (1 - d) in r^, "ending the
episode" is a feature of every critic's reward, a random one's included).

So the figure is exactly invariant to any shaping of the critic's reward (tested to 1e-9), and to
shaping of the true reward given per transition; a shaping baked INTO an env's reward, which arrives
as r(s, a) = r + gamma E[Phi(s')] - Phi(s), is removed only up to a gamma^2-order remainder, the price
of never querying the env off its dynamics (the exact projection below removes it fully).

Coverage: states visited by the demonstrators (coverage_states), every action of the agent at each,
so the figure also judges the actions the expert did not take. Figure: Pearson correlation of the
two C(s, a) over (coverage state, action); its distance sqrt((1 - rho) / 2) as in EPIC/DARD. C looks
two steps ahead, so with a sparse reward only states within two steps of one carry it
(evaluate reports how many: informative_states), and sampled successors add noise that biases the
figure slightly low (by about 0.01 on the tabular game).

Limit. Exact invariance to every shaping with finitely many simulator steps needs R on pairs that are
not transitions (DARD's R(S', A, S'')); there the critic's reward Q(S', A) - gamma V(S'') and the env's
r(S', A) may differ although they agree on every transition the env makes. So a soft-optimal critic
reads 1 only where V* hardly varies over two steps: ~1.00 on the random tabular game, whose dynamics
mix in one step, but 0.72 (gamma 0.9) and 0.39 (gamma 0.99) on a 7x7 grid with a sparse goal, 0.96 /
0.78 with dense rewards (experiments.tabular_recovery.grid_ceiling). Local dynamics, like Gems' and
MPE's, put the ceiling below 1: read a method's figure against the expert's (the expert_implied
yardstick, the same metric on the same samples). Removing all of V* needs its full horizon: the
projection (tabular only) or an advantage under a reference policy from rollouts to the episode end.

Exact references, tabular game (`tabular_*`): with known marginal dynamics P[s, a, s'] the same
canonical form has a closed form (tabular_dard_correlation), and the projection the issue asks for:
both (s, a) rewards projected off the span of {gamma P Phi - Phi} and constants by weighted least
squares, residuals correlated (tabular_projected_correlation, a partial correlation). They are
different shaping-invariant statistics; tests/learner/test_reward_compare.py pins how far the
sampled DARD figure may be from the exact projection (AGREEMENT_TOLERANCE).
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# |sampled DARD figure - exact projected (partial) correlation| on the random tabular game, for the
# critics tests/learner/test_reward_compare.py trains (MAMQL's default objective included): the exact
# DARD form differs from the projection by <= 0.02 there, sampling adds the rest (observed <= 0.01).
# Not a bound for local dynamics (module docstring, Limit).
AGREEMENT_TOLERANCE = 0.05

MIN_PROB = 1e-3  # a demonstrator's action less likely than this is not simulated (_combos)

# every agent's obs [B, *obs_shape] -> every agent's action probabilities [B, A] under the demonstrators
Demonstrator = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
# one agent's obs [B, *obs_shape] -> Q [B, A]: a critic's action values (for BC: its logits). A critic
# conditioned on the other agents' actions (IQL-MA) is a QFunction with `others_num_actions` (their
# action counts, in agent order) that takes their one-hots as a second argument [B, sum of those].
QFunction = Callable[..., np.ndarray]


# --------------------------------------------------------------------------- the math (pure)


def pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Weighted Pearson correlation in float64; NaN when either side is constant."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if not (x.shape == y.shape == w.shape):
        raise ValueError(f"pearson: shapes differ: {x.shape}, {y.shape}, {w.shape}")
    w = w / w.sum()
    xc, yc = x - (w * x).sum(), y - (w * y).sum()
    sxx, syy = (w * xc * xc).sum(), (w * yc * yc).sum()
    if sxx <= 1e-24 * max(1.0, (w * x * x).sum()) or syy <= 1e-24 * max(1.0, (w * y * y).sum()):
        return float("nan")
    return float((w * xc * yc).sum() / math.sqrt(sxx * syy))


def pearson_distance(rho: float) -> float:
    """EPIC's/DARD's distance sqrt((1 - rho) / 2): 0 for the same reward up to shaping and scale, 1 for its negation."""
    return float("nan") if not np.isfinite(rho) else math.sqrt(max(0.0, (1.0 - rho) / 2.0))


def canonical_from_parts(f: np.ndarray, h_next: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """C(s, a) = centre_a[f(s, a) + sum_k w_k h(s'_k)] from sampled parts, all [N, A, K]: f the
    reward's (s, a) part on each sampled transition, h_next its successor part at the transition's
    s', weight the probability of each of the K sampled successors (sums to 1 over K)."""
    q = (weight * (f + h_next)).sum(-1)
    return q - q.mean(-1, keepdims=True)


def soft_value_np(q: np.ndarray, alpha: float) -> np.ndarray:
    """alpha logsumexp(Q / alpha) over the last axis, in float64."""
    z = np.asarray(q, dtype=np.float64) / alpha
    m = z.max(-1, keepdims=True)
    return alpha * (m[..., 0] + np.log(np.exp(z - m).sum(-1)))


def tabular_dard_canonical(f: np.ndarray, g: np.ndarray, transition: np.ndarray, gamma: float) -> np.ndarray:
    """Exact C(s, a) = centre_a[f(s, a) + sum_s' P(s'|s, a) (g(s') + gamma mean_A f(s', A))] of a reward
    f(s, a) + g(s') [S, A], [S] on a tabular MDP with marginal dynamics `transition` [S, A, S']."""
    h = np.asarray(g, dtype=np.float64) + gamma * np.asarray(f, dtype=np.float64).mean(1)
    q = f + transition @ h
    return q - q.mean(1, keepdims=True)


def tabular_dard_correlation(r_true: np.ndarray, q: np.ndarray, transition: np.ndarray, gamma: float,
                             alpha: float = 1.0, state_weights: np.ndarray | None = None) -> float:
    """The exact value the sampled estimator (compare_rewards) converges to on a tabular game: Pearson of
    the canonical forms of the true reward r_true(s, a) [S, A] and of the critic Q [S, A]'s implied
    reward, over (s, a) with s weighted by `state_weights` (uniform if None) and a uniform."""
    s_n, a_n = r_true.shape
    ct = tabular_dard_canonical(r_true, np.zeros(s_n), transition, gamma)
    cl = tabular_dard_canonical(q, -gamma * soft_value_np(q, alpha), transition, gamma)
    w = np.ones(s_n) if state_weights is None else np.asarray(state_weights, dtype=np.float64)
    return pearson(cl, ct, np.repeat(w[:, None], a_n, axis=1))


def tabular_projected_correlation(r_a: np.ndarray, r_b: np.ndarray, transition: np.ndarray, gamma: float,
                                  weights: np.ndarray | None = None) -> float:
    """The exact shaping-invariant comparison of two rewards r(s, a) [S, A] on a tabular MDP with marginal
    dynamics `transition` [S, A, S']: project both off the span of the shapings gamma E[Phi(s')] - Phi(s)
    (one basis vector per state) and constants by least squares weighted by `weights` [S, A] (the
    coverage; uniform if None), then the weighted Pearson correlation of the residuals (a partial
    correlation). For a critic pass r^(s, a) = Q - gamma P V (its expectation over s')."""
    s_n, a_n = r_a.shape
    w = np.ones((s_n, a_n)) if weights is None else np.asarray(weights, dtype=np.float64)
    eye = np.eye(s_n)
    basis = np.stack([np.ones(s_n * a_n)] + [(gamma * transition[:, :, k] - eye[:, k][:, None]).reshape(-1)
                                            for k in range(s_n)], 1)
    sw = np.sqrt(w.reshape(-1))

    def residual(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        coef = np.linalg.lstsq(basis * sw[:, None], x * sw, rcond=None)[0]
        return x - basis @ coef

    return pearson(residual(r_a), residual(r_b), w)


# --------------------------------------------------------------------------- the simulator


_UNCOPYABLE: dict[type, bool] = {}  # leaf types copy.deepcopy cannot copy (pygame fonts): shared, not copied


def _uncopyable(obj: Any) -> bool:
    kind = type(obj)
    root = kind.__module__.split(".")[0]
    if root in ("builtins", "numpy"):
        return False
    if root == "pygame":  # render surfaces and fonts: no part of the dynamics, and slow or impossible to copy
        return True
    if kind not in _UNCOPYABLE:
        try:
            copy.deepcopy(obj)
            _UNCOPYABLE[kind] = False
        except Exception:  # noqa: BLE001 - whatever the type raises, it cannot be copied
            _UNCOPYABLE[kind] = True
    return _UNCOPYABLE[kind]


def clone_env(env: Any) -> Any:
    """copy.deepcopy of an env and everything it holds (rng included), except that objects pickled
    by constructor arguments (gymnasium's EzPickle: MPE's envs) are copied field by field, since their
    pickle rebuilds a FRESH env rather than this state, and leaves that cannot be copied at all
    (MPE's pygame font and surface, only used to render) are shared."""
    import types

    from gymnasium.utils.ezpickle import EzPickle

    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    memo: dict[int, Any] = {}
    pending: list[tuple[Any, Any]] = []
    stack, seen = [env], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(getattr(obj, "__dict__", None), dict):
            if isinstance(obj, EzPickle):
                blank = object.__new__(type(obj))
                memo[id(obj)] = blank
                pending.append((obj, blank))
            stack.extend(vars(obj).values())
        elif _uncopyable(obj):
            memo[id(obj)] = obj
    for obj, blank in pending:
        blank.__dict__.update(copy.deepcopy(vars(obj), memo))
    return copy.deepcopy(env, memo)


class Simulator:
    """Restores any state an env has visited: the env's own get_state()/set_state() when its class
    has them (Gems, Kitchen; cheap and exact), else a deep copy of the whole env (clone_env, rng
    included), which works for pure-Python envs (MPE) at the cost of a copy per restore. `mode` says
    which; simulator_for checks that a restored state reproduces its step before anything relies on it."""

    def __init__(self, env: Any):
        self.env = env
        own = callable(getattr(type(env), "get_state", None)) and callable(getattr(type(env), "set_state", None))
        self.mode = "get_state" if own else "deepcopy"

    def snapshot(self, env: Any | None = None) -> Any:
        """A token for the current state of `env` (default: the simulator's env). In deepcopy mode an
        env object the caller will not step again may be kept as its own token (see after_step)."""
        env = self.env if env is None else env
        return env.get_state() if self.mode == "get_state" else clone_env(env)

    def after_step(self, env: Any) -> Any:
        """The token of the state a just-restored env reached: in deepcopy mode the env copy itself."""
        return env.get_state() if self.mode == "get_state" else env

    def restore(self, token: Any) -> Any:
        """An env in the token's state, ready to step (the same object in get_state mode, a copy otherwise)."""
        if self.mode == "get_state":
            self.env.set_state(token)
            return self.env
        return clone_env(token)

    def consume(self, token: Any) -> Any:
        """Like restore, for a token's LAST use: deepcopy mode hands over the token itself (no copy)."""
        return self.restore(token) if self.mode == "get_state" else token

    def reproduces(self, token: Any, actions: Mapping[str, int]) -> bool:
        """Whether two steps from the same restored state give the same observations and rewards."""
        results = []
        for _ in range(2):
            obs, rewards, *_ = self.restore(token).step(dict(actions))
            results.append((obs, rewards))
        (o1, r1), (o2, r2) = results
        return set(o1) == set(o2) and all(np.array_equal(np.asarray(o1[a]), np.asarray(o2[a])) for a in o1) \
            and r1 == r2


def simulator_for(env: Any, seed: int = 0) -> tuple[Simulator | None, str]:
    """(Simulator, how) if `env` can restore a state exactly (checked: one snapshot after reset, two
    identical steps from it), else (None, why not)."""
    try:
        env.reset(seed=seed)
        sim = Simulator(env)
        token = sim.snapshot()
        actions = {a: 0 for a in env.agents}
        if not sim.reproduces(token, actions):
            return None, f"{sim.mode}: a restored state does not reproduce its step"
        return sim, sim.mode
    except Exception as exc:  # noqa: BLE001 - any env: an uncopyable one is a fallback, not a crash
        return None, f"cannot restore a state ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"


@dataclass
class CoverageState:
    token: Any  # Simulator token of the state
    obs: dict[str, np.ndarray]  # every agent's observation there
    step: int  # steps since reset


def _draw(rng: np.random.Generator, probs: np.ndarray) -> int:
    p = np.asarray(probs, dtype=np.float64)
    return int(min(np.searchsorted(np.cumsum(p / p.sum()), rng.random(), side="right"), len(p) - 1))


def coverage_states(sim: Simulator, demonstrator: Demonstrator, n_states: int, seed: int = 0,
                    max_steps: int = 0, per_episode: int = 4, make_env: Callable[[], Any] | None = None,
                    parallel: int = 16, max_episode_steps: int = 10_000) -> list[CoverageState]:
    """n_states states the demonstrators visit: episodes from reset(seed + k), played by sampling the
    demonstrators' probabilities; up to `per_episode` states drawn from each (many episodes, few
    states each, so the states are not one trajectory). With a known time limit `max_steps` only
    states at least two steps before it are kept, so that their successors can be stepped from.
    make_env (a factory of envs like sim.env) plays `parallel` episodes in lockstep, so that the
    demonstrators act on batches; without it sim.env plays them one by one."""
    if n_states < 1:
        raise ValueError(f"n_states must be >= 1, got {n_states}")
    rng = np.random.default_rng(seed)
    envs = [sim.env] + ([make_env() for _ in range(parallel - 1)] if make_env is not None else [])
    agents = list(sim.env.possible_agents)
    out: list[CoverageState] = []
    episode = 0
    try:
        while len(out) < n_states:
            if episode > 100 * n_states:
                raise RuntimeError(f"no coverage states after {episode} episodes (every episode shorter than 2 steps?)")
            obs = [env.reset(seed=seed + episode + j)[0] for j, env in enumerate(envs)]
            episode += len(envs)
            visited: list[list[CoverageState]] = [[] for _ in envs]
            running = list(range(len(envs)))
            for t in range(max_episode_steps):
                running = [j for j in running if envs[j].agents and set(envs[j].agents) == set(agents)]
                if not running:
                    break
                for j in running:
                    if max_steps <= 0 or t <= max_steps - 2:
                        here = {a: np.asarray(o) for a, o in obs[j].items()}
                        visited[j].append(CoverageState(sim.snapshot(envs[j]), here, t))
                probs = demonstrator({a: np.stack([np.asarray(obs[j][a]) for j in running]) for a in agents})
                for i, j in enumerate(running):
                    obs[j] = envs[j].step({a: _draw(rng, probs[a][i]) for a in agents})[0]
            for states in visited:
                take = min(per_episode, len(states), n_states - len(out))
                out += [states[k] for k in sorted(rng.choice(len(states), size=take, replace=False))]
    finally:
        for env in envs[1:]:
            env.close()
    return out


def _combos(rng: np.random.Generator, probs: Sequence[np.ndarray],
            max_combos: int) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The other agents' joint actions with their probabilities: every combination when there are at
    most max_combos of them (exact), else max_combos iid draws of equal weight (unbiased). Actions an
    agent takes with probability below MIN_PROB count as never taken (a near-greedy demonstrator then
    costs one combination, not all of them; the probability mass moved is below MIN_PROB per action)."""
    probs = [np.where(np.asarray(p) >= MIN_PROB, p, 0.0) for p in probs]
    probs = [p / p.sum() for p in probs]
    supports = [np.flatnonzero(p > 0) for p in probs]
    if math.prod(len(s) for s in supports) <= max_combos:
        combos = list(itertools.product(*supports))
        w = np.array([math.prod(float(probs[j][c[j]]) for j in range(len(c))) for c in combos])
        return [tuple(int(x) for x in c) for c in combos], w / w.sum()
    combos = [tuple(_draw(rng, p) for p in probs) for _ in range(max_combos)]
    return combos, np.full(max_combos, 1.0 / max_combos)


@dataclass
class AgentSamples:
    """One agent's sampled transitions, for N coverage states x A own actions x K successors each."""

    agent: str
    obs: np.ndarray  # [N, *obs] the agent's observation at s
    next_obs: np.ndarray  # [N, A, K, *obs] at s' (never terminal)
    reward: np.ndarray  # [N, A, K] the env's reward of the agent on (s, a, others' actions)
    weight: np.ndarray  # [N, A, K] probability of each successor given (s, a); 0 = padding
    next_mean_reward: np.ndarray  # [N, A, K] estimate of mean_A f(s', A), the reward from s'
    dropped: dict[str, int]  # coverage states left out, by reason (terminal, time_limit, agents_gone)
    others_actions: np.ndarray | None = None  # [N, K, O] the other agents' actions on each sampled transition
    next_others_probs: np.ndarray | None = None  # [N, A, K, O, max A] the demonstrators' probabilities of them at s'

    def true_canonical(self, gamma: float) -> np.ndarray:
        """C(s, a) of the env's reward: f = reward, g = 0."""
        return canonical_from_parts(self.reward, gamma * self.next_mean_reward, self.weight)

    def learned_canonical(self, q_fn: QFunction, gamma: float, alpha: float, chunk: int = 4096,
                          reward_gamma: float | None = None) -> np.ndarray:
        """C(s, a) under discount `gamma` of the critic's implied reward Q(s, a) - gamma_r V(s'), gamma_r
        the critic's own discount (reward_gamma, default gamma): f = Q, g = -gamma_r V. DARD's
        successor terms of g cancel, so h(s') = gamma mean_A Q(s', A) - gamma_r V(s'). A critic
        conditioned on the others' actions (IQL-MA's reward Q(s, a, a_-i) - gamma_r V(s', a'_-i)) reads
        the others' sampled actions at s and the demonstrators' expectation over theirs at s'."""
        gamma_r = gamma if reward_gamma is None else float(reward_gamma)
        if getattr(q_fn, "others_num_actions", None) is not None:
            return self._conditioned_canonical(q_fn, gamma, gamma_r, alpha, chunk)
        n, a, k = self.reward.shape
        q_s = _batched(q_fn, self.obs, chunk).astype(np.float64)
        q_n = _batched(q_fn, self.next_obs.reshape(n * a * k, *self.next_obs.shape[3:]), chunk).astype(np.float64)
        q_n = q_n.reshape(n, a, k, -1)
        h = gamma * q_n.mean(-1) - gamma_r * soft_value_np(q_n, alpha)
        return canonical_from_parts(np.broadcast_to(q_s[:, :, None], (n, a, k)), h, self.weight)

    def _conditioned_canonical(self, q_fn: QFunction, gamma: float, gamma_r: float, alpha: float,
                               chunk: int) -> np.ndarray:
        if self.others_actions is None or self.next_others_probs is None:
            raise ValueError("a critic conditioned on the others' actions needs samples that record them (sample_agent)")
        dims = [int(d) for d in q_fn.others_num_actions]
        n, a, k = self.reward.shape
        obs_k = np.repeat(self.obs, k, axis=0)  # [N * K]: s once per sampled joint action of the others
        f = _batched(q_fn, obs_k, chunk, _one_hots(self.others_actions.reshape(n * k, -1), dims))
        f = f.astype(np.float64).reshape(n, k, a).transpose(0, 2, 1)  # [N, A, K]: Q(s, a, a_-i of successor k)
        nxt = self.next_obs.reshape(n * a * k, *self.next_obs.shape[3:])
        probs = self.next_others_probs.reshape(n * a * k, len(dims), -1)
        mean_q, value = np.zeros(n * a * k), np.zeros(n * a * k)
        for combo in itertools.product(*(range(d) for d in dims)):  # E over the others' joint action at s'
            p = np.prod([probs[:, j, c] for j, c in enumerate(combo)], axis=0)
            live = np.flatnonzero(p > 0)
            if not len(live):
                continue
            q = _batched(q_fn, nxt[live], chunk, _one_hots(np.tile(combo, (len(live), 1)), dims)).astype(np.float64)
            mean_q[live] += p[live] * q.mean(-1)
            value[live] += p[live] * soft_value_np(q, alpha)
        h = (gamma * mean_q - gamma_r * value).reshape(n, a, k)
        return canonical_from_parts(f, h, self.weight)


def _one_hots(actions: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """[B, O] integer actions -> [B, sum(dims)] concatenated one-hots (networks.others_one_hot's layout)."""
    return np.concatenate([np.eye(d, dtype=np.float32)[actions[:, j]] for j, d in enumerate(dims)], axis=1)


def _batched(q_fn: QFunction, obs: np.ndarray, chunk: int, others: np.ndarray | None = None) -> np.ndarray:
    if others is None:
        return np.concatenate([np.asarray(q_fn(obs[i:i + chunk])) for i in range(0, len(obs), chunk)])
    return np.concatenate([np.asarray(q_fn(obs[i:i + chunk], others[i:i + chunk])) for i in range(0, len(obs), chunk)])


def sample_agent(sim: Simulator, coverage: Sequence[CoverageState], demonstrator: Demonstrator, agent: str,
                 num_actions: Mapping[str, int], seed: int = 0, max_combos: int = 4, draws: int = 1,
                 second_actions: int | None = None, second_combos: int = 1) -> AgentSamples:
    """For each coverage state s and each action a of `agent`: the others' joint actions (_combos of
    the demonstrators' probabilities, max_combos), each stepped `draws` times from the restored s (draws
    > 1 only helps when the env's randomness is not part of its restored state); then from each
    successor s', every own action (or `second_actions` drawn uniformly, for slow simulators) with
    `second_combos` sampled joint actions of the others: their mean reward estimates mean_A f(s', A)
    without bias.

    Dropped and counted: states with a successor the env will not step from (a time limit, agents
    gone), and states with a TERMINAL successor. In r^ such a transition lacks the -gamma V(s') term
    (Phi(terminal) = 0), so "terminating" is a feature of every critic's reward, even a random one's,
    that correlates with the true reward wherever episodes end on a reward (Gems' 7th gem): it would
    credit critics for the episode structure rather than for what they learned."""
    agents = list(num_actions)
    others = [b for b in agents if b != agent]
    n_act = int(num_actions[agent])
    a_max = max(int(n) for n in num_actions.values())
    k_max = max_combos * draws
    rng = np.random.default_rng(seed)
    rows: list[tuple] = []
    dropped = {"terminal": 0, "time_limit": 0, "agents_gone": 0}
    probs_s = demonstrator({b: np.stack([c.obs[b] for c in coverage]) for b in agents})
    for n, state in enumerate(coverage):
        combos, w = _combos(rng, [probs_s[b][n] for b in others], max_combos)
        combos, w = [c for c in combos for _ in range(draws)], np.repeat(w / draws, draws)
        reward = np.zeros((n_act, k_max))
        weight = np.zeros((n_act, k_max))
        others_actions = np.zeros((k_max, len(others)), dtype=np.int64)
        others_actions[:len(combos)] = np.asarray(combos, dtype=np.int64).reshape(len(combos), len(others))
        next_obs = np.zeros((n_act, k_max, *state.obs[agent].shape), dtype=state.obs[agent].dtype)
        live: list[tuple[int, int, Any, dict]] = []
        why = None
        for a, (k, combo) in itertools.product(range(n_act), enumerate(combos)):
            env = sim.restore(state.token)
            obs2, rew, term, trunc, _ = env.step({agent: a, **dict(zip(others, combo))})
            reward[a, k], weight[a, k], next_obs[a, k] = float(rew[agent]), w[k], obs2[agent]
            if any(term.values()):
                why = "terminal"
                break
            if any(trunc.values()) or set(env.agents) != set(agents):
                why = "time_limit" if any(trunc.values()) else "agents_gone"
                break
            live.append((a, k, sim.after_step(env), {b: np.asarray(obs2[b]) for b in agents}))
        if why is not None:
            dropped[why] += 1
            continue
        next_mean = np.zeros((n_act, k_max))
        probs_n = demonstrator({b: np.stack([x[3][b] for x in live]) for b in agents})
        next_probs = np.zeros((n_act, k_max, len(others), a_max))
        for j, (a, k, _, _) in enumerate(live):
            for o, b in enumerate(others):
                next_probs[a, k, o, :num_actions[b]] = probs_n[b][j]
        for j, (a, k, token, _) in enumerate(live):
            own = range(n_act) if second_actions is None else rng.integers(0, n_act, second_actions)
            steps = [(int(a2), [_draw(rng, probs_n[b][j]) for b in others]) for a2 in own for _ in range(second_combos)]
            total = 0.0
            for i, (a2, combo) in enumerate(steps):
                env = sim.consume(token) if i == len(steps) - 1 else sim.restore(token)
                _, rew2, *_ = env.step({agent: a2, **dict(zip(others, combo))})
                total += float(rew2[agent])
            next_mean[a, k] = total / len(steps)
        rows.append((state.obs[agent], next_obs, reward, weight, next_mean, others_actions, next_probs))
    if not rows:
        raise RuntimeError(f"all {len(coverage)} coverage states were dropped ({dropped}): a terminal or "
                           "time-limited successor from each")
    cols = [np.stack(c) for c in zip(*rows)]
    return AgentSamples(agent, *cols[:5], dropped, others_actions=cols[5], next_others_probs=cols[6])


def compare_rewards(samples: Mapping[str, AgentSamples], models: Mapping[str, Mapping[str, tuple]],
                    gamma: float) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {agent: {"pearson", "distance"}}}: each model's critics (agent -> (q_fn, alpha) or
    (q_fn, alpha, the critic's own discount)) against the env's reward, all canonicalised under
    `gamma`, on the SAME sampled transitions (so the figures of methods and yardsticks differ only by
    the critics). Agents a model has no critic for are left out."""
    true = {agent: s.true_canonical(gamma) for agent, s in samples.items()}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, critics in models.items():
        out[name] = {}
        for agent, (q_fn, alpha, *own_gamma) in critics.items():
            if agent not in samples:
                continue
            learned = samples[agent].learned_canonical(q_fn, gamma, alpha, reward_gamma=own_gamma[0] if own_gamma else None)
            rho = pearson(learned, true[agent])
            out[name][agent] = {"pearson": rho, "distance": pearson_distance(rho)}
    return out
