"""The MAMQL math: soft values, Boltzmann policies, the inverse soft-Q loss and reward recovery.

Everything here is a plain function of tensors: no modules, no I/O, no state. Read top to bottom:

    V(s)       = alpha * logsumexp_a Q(s, a) / alpha                      (soft value)
    pi(a | s)  = exp((Q(s, a) - V(s)) / alpha)                            (Boltzmann policy)
    r^(s, a)   = Q(s, a) - gamma * (1 - done) * V(s')                     (implied reward)
    L          = E_rho[V(s) - gamma (1 - done) V(s')]                     (value term)
                 - E_expert[r^]                                           (expert reward term)
                 + 1/(4 alpha_chi) * E[r^^2]                              (chi^2 regulariser)

Forward soft-Q learning (`soft_q_loss`, algo soft-q) is the same soft Bellman equation read the
other way: the reward is given (each agent's own env reward) and Q is regressed onto
y = r + gamma (1 - done) V_target(s'); it trains soft-optimal experts for MAMQL to imitate.

MAMQL applies this single-agent loss (IQ-Learn, Garg et al. 2021) to every agent's MARGINAL critic
Q_i(s, a_i): marginalised over the other agents' current policies it is a single-agent soft-Q
function, so the single-agent objective is the right one. IQL-MA, the paper's baseline
(`iqlma_loss`, as the reference code's `iql_ma`), gives agent i's critic the other agents' observed
actions as input, Q_i(s, a_-i, a_i), and trains it on expert rows only:

    y = gamma (1 - done) V_i(s', a_-i)     (the same a_-i at s': the data hold no next actions)
    L = E_expert[V_i(s, a_-i) - y] - E_expert[Q_i(s, a_-i, a_i) - y] + 1/(4 alpha_chi) E_expert[(Q_i - y)^2]

`iqlma_joint_loss` (algo iqlma-joint) is another reading: mamql_loss on a critic over the JOINT action.

Batch layout. The loss takes the critic's outputs, not the critic, so that the trainer can run ONE
forward pass over every row it needs (expert + online, current + next states) and slice; on CPU that
halves the cost of an update compared with one small forward per group. Rows are a mix of expert and
online (replay) transitions, told apart by the `is_expert` mask. Masked means are written as
sums over a 0/1 weight rather than boolean indexing so that shapes stay static (no host sync on
CUDA, and the step can be captured in a CUDA graph).

`done` must be the TERMINAL flag only: a time-limit truncation is not an absorbing state, so
V(s') must still be bootstrapped there.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

VALUE_TERMS = ("value", "online", "expert", "v0")


# --------------------------------------------------------------------------- soft-Q basics


def soft_value(q: Tensor, alpha: float = 1.0) -> Tensor:
    """V(s) = alpha * logsumexp(Q(s, .) / alpha) over the last dim: the soft maximum of Q."""
    return alpha * torch.logsumexp(q / alpha, dim=-1)


def boltzmann_log_probs(q: Tensor, alpha: float = 1.0) -> Tensor:
    """log pi(a | s) = (Q(s, a) - V(s)) / alpha, computed stably with log_softmax."""
    return F.log_softmax(q / alpha, dim=-1)


def boltzmann_probs(q: Tensor, alpha: float = 1.0) -> Tensor:
    """pi(a | s) proportional to exp(Q(s, a) / alpha): the policy a soft-Q critic implies."""
    return F.softmax(q / alpha, dim=-1)


def implied_reward(q_sa: Tensor, v_next: Tensor, done: Tensor, gamma: float) -> Tensor:
    """r^(s, a) = Q(s, a) - gamma * (1 - done) * V(s'): the reward that makes Q a soft Bellman fixed
    point. This is how inverse soft-Q learning parameterises the reward by the critic."""
    return q_sa - gamma * (1.0 - done.to(q_sa.dtype)) * v_next


def gather_actions(q: Tensor, actions: Tensor) -> Tensor:
    """Q(s, a) for the taken action of each row: [N, A], [N] -> [N]."""
    return q.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def _masked_mean(x: Tensor, weight: Tensor) -> Tensor:
    """Mean of x over rows where weight is 1; static shapes (no boolean indexing)."""
    return (x * weight).sum() / weight.sum()


# --------------------------------------------------------------------------- the MAMQL loss


def mamql_loss(
    q: Tensor,
    q_next: Tensor,
    actions: Tensor,
    done: Tensor,
    is_expert: Tensor,
    *,
    gamma: float,
    alpha: float = 1.0,
    value_term: str = "online",
    chi2_on_policy: bool = False,
    chi2_alpha: float | None = None,
    q_init: Tensor | None = None,
    as_floats: bool = True,
) -> tuple[Tensor, dict]:
    """Chi^2-regularised inverse soft-Q loss of ONE agent's critic.

    q, q_next: [N, A] the agent's critic at s and s' (rows: expert and online, any order).
    actions:   [N] the agent's action in each row (expert action on expert rows, replay action on
               online rows). done: [N] terminal flag (0/1). is_expert: [N] bool/0-1 mask.

    value_term (the "E_rho[V(s) - gamma V(s')]" term; IQ-Learn's sampling strategies):
      "online" over online rows only: exactly what the MAMQL reference code (ma-mql
               `mamql_online`) does; the default.
      "value"  over expert AND online rows (IQ-Learn `value`).
      "expert" over expert rows only (IQ-Learn `value_expert`; works offline).
      "v0"     (1 - gamma) E[V(s0)] over initial states: pass their critic values as `q_init`
               [M, A]; without it the expert rows' states stand in, as IQ-Learn does.
    chi2_on_policy:
      False: chi^2 on expert rows only, 1/(4 alpha_chi) E_expert[r^^2], which together with the
             expert term is the reference code's -E_expert[r^ - r^^2/(4 alpha)]. The default: on
             Gems, True pulls the policy's implied rewards to zero and halves the returns.
      True:  IQ-Learn's `regularize` option: the squared implied reward averaged over ALL rows,
             where an online row uses the CURRENT policy's action rather than the replay action
             (IQ-Learn samples a ~ pi(.|s) there, `sampleQ`). We take the exact expectation over
             pi, sum_a pi(a|s) (Q(s,a) - y)^2 with pi detached: the same expected gradient as
             IQ-Learn's one-sample estimate, without its noise or an RNG. Because the mean runs
             over all rows, the expert rows' share is halved when half the batch is online,
             exactly as in IQ-Learn.
    chi2_alpha: alpha of the chi^2 divergence (IQ-Learn `method.alpha`); None = the Boltzmann
      temperature `alpha` (reference code: 1/(4*1) = 0.25); math.inf switches the regulariser off.

    Returns (loss, terms): terms holds the value term, the expert reward E_expert[r^], the chi^2
    term, mean expert Q(s, a_E), mean online Q(s, a) and their gap (a quick health signal: the gap
    should be positive and stay bounded). With as_floats=False the terms stay detached 0-d tensors
    (no host sync; needed inside CUDA-graph capture).
    """
    if value_term not in VALUE_TERMS:
        raise ValueError(f"value_term must be one of {VALUE_TERMS}, got {value_term!r}")
    w_exp = is_expert.to(q.dtype)
    w_pol = 1.0 - w_exp
    done = done.to(q.dtype)

    v = soft_value(q, alpha)  # V(s)
    y = gamma * (1.0 - done) * soft_value(q_next, alpha)  # gamma (1 - d) V(s')
    q_sa = gather_actions(q, actions)
    reward = q_sa - y  # r^(s, a), the implied reward

    # 1) expert term: raise the implied reward of what the expert did
    expert_reward = _masked_mean(reward, w_exp)

    # 2) value term: lower the soft value along the visited states (a soft-max over actions, so
    #    together with 1) this pushes the expert's actions above the alternatives)
    if value_term == "value":
        value = (v - y).mean()
    elif value_term == "online":
        value = _masked_mean(v - y, w_pol)
    elif value_term == "expert":
        value = _masked_mean(v - y, w_exp)
    else:  # "v0"
        v0 = soft_value(q_init, alpha).mean() if q_init is not None else _masked_mean(v, w_exp)
        value = (1.0 - gamma) * v0

    # 3) chi^2 regulariser: keeps the implied reward small, which bounds Q (the unregularised loss
    #    is flat along a per-state shift of Q) and stabilises training
    chi_alpha = alpha if chi2_alpha is None else chi2_alpha
    coef = 0.0 if math.isinf(chi_alpha) else 1.0 / (4.0 * chi_alpha)
    if chi2_on_policy:
        pi = boltzmann_probs(q, alpha).detach()
        policy_sq = (pi * (q - y.unsqueeze(-1)) ** 2).sum(-1)  # E_{a~pi}[(Q(s,a) - y)^2]
        chi2 = coef * torch.where(w_exp > 0, reward**2, policy_sq).mean()
    else:
        chi2 = coef * _masked_mean(reward**2, w_exp)

    loss = value - expert_reward + chi2

    with torch.no_grad():
        expert_q = _masked_mean(q_sa, w_exp)
        policy_q = _masked_mean(q_sa, w_pol)
        names = ("loss", "value", "expert_reward", "chi2", "expert_q", "policy_q", "q_gap")
        values = torch.stack([loss, value, expert_reward, chi2, expert_q, policy_q, expert_q - policy_q])
        values = values.detach()
        terms = dict(zip(names, values.tolist() if as_floats else values.unbind()))
    return loss, terms


# --------------------------------------------------------------------------- forward soft-Q learning


def soft_q_loss(
    q: Tensor,
    q_next_target: Tensor,
    actions: Tensor,
    rewards: Tensor,
    done: Tensor,
    *,
    gamma: float,
    alpha: float = 1.0,
    as_floats: bool = True,
) -> tuple[Tensor, dict]:
    """Soft Bellman regression of ONE agent's marginal critic on its own env reward:

        y = r + gamma (1 - done) V_target(s'),   V_target = alpha logsumexp(Q_target(s', .) / alpha)
        L = E[(Q(s, a) - y)^2]                   (y is a constant: no gradient through the target)

    q: [N, A] the critic at s; q_next_target: [N, A] the (Polyak-averaged) target critic at s';
    actions, rewards, done: [N]. `done` is the TERMINAL flag only (a truncated row bootstraps).
    The rows' partner actions come from the partners' current policies, so Q(s, a) converges to the
    marginal soft-Q function against them; every agent doing this at once has the logit (soft)
    equilibrium as its fixed point. Returns (loss, terms): loss, mean Q(s, a), mean target, mean
    reward and mean soft value V(s) (as floats, or detached 0-d tensors with as_floats=False).
    """
    with torch.no_grad():
        keep = 1.0 - done.to(q.dtype)
        y = rewards.to(q.dtype) + gamma * keep * soft_value(q_next_target.detach(), alpha)
    q_sa = gather_actions(q, actions)
    loss = ((q_sa - y) ** 2).mean()
    with torch.no_grad():
        names = ("loss", "q", "target", "reward", "soft_value")
        values = torch.stack([loss, q_sa.mean(), y.mean(), rewards.to(q.dtype).mean(), soft_value(q, alpha).mean()])
        values = values.detach()
        terms = dict(zip(names, values.tolist() if as_floats else values.unbind()))
    return loss, terms


# --------------------------------------------------------------------------- baselines


def bc_loss(logits: Tensor, actions: Tensor) -> Tensor:
    """Behaviour cloning: cross-entropy of the expert's actions under softmax(logits)."""
    return F.cross_entropy(logits, actions.long())


def distill_loss(logits: Tensor, probs: Tensor) -> Tensor:
    """Behaviour cloning from a teacher's action probabilities instead of its sampled actions: the
    cross-entropy -sum_a p(a|s) log softmax(logits)(a), averaged over rows; bc_loss when p is one-hot."""
    return -(probs * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def joint_action_index(actions_per_agent: Tensor | Sequence[Tensor], num_actions_per_agent: Sequence[int]) -> Tensor:
    """Flat index of the joint action, row-major with the FIRST agent most significant (as
    numpy.ravel_multi_index). actions: [N, n_agents] or a sequence of n_agents [N] tensors."""
    if not isinstance(actions_per_agent, Tensor):
        actions_per_agent = torch.stack([torch.as_tensor(a) for a in actions_per_agent], dim=-1)
    actions_per_agent = actions_per_agent.long()
    index = torch.zeros(actions_per_agent.shape[:-1], dtype=torch.long, device=actions_per_agent.device)
    for k, n in enumerate(num_actions_per_agent):
        index = index * int(n) + actions_per_agent[..., k]
    return index


def split_joint_action_index(index: Tensor, num_actions_per_agent: Sequence[int]) -> Tensor:
    """Inverse of joint_action_index: [N] -> [N, n_agents]."""
    index = index.long()
    out = []
    for n in reversed(num_actions_per_agent):
        out.append(index % int(n))
        index = torch.div(index, int(n), rounding_mode="floor")
    return torch.stack(out[::-1], dim=-1)


def marginalize_joint_q(q_joint: Tensor, num_actions_per_agent: Sequence[int], agent_index: int, alpha: float = 1.0) -> Tensor:
    """alpha * logsumexp over the other agents' actions of Q(s, a_1..a_n) / alpha: [N, prod] -> [N, A_i].

    softmax of the result / alpha is exactly the marginal over a_i of the joint Boltzmann policy,
    which is how an IQL-MA agent acts when only its own action is executed."""
    shape = (q_joint.shape[0], *[int(n) for n in num_actions_per_agent])
    q = q_joint.reshape(shape).movedim(1 + agent_index, -1)
    q = q.reshape(q_joint.shape[0], -1, shape[1 + agent_index])
    return alpha * torch.logsumexp(q / alpha, dim=1)


def iqlma_loss(
    q: Tensor,
    q_next: Tensor,
    actions: Tensor,
    done: Tensor,
    *,
    gamma: float,
    alpha: float = 1.0,
    chi2_alpha: float | None = None,
    as_floats: bool = True,
) -> tuple[Tensor, dict]:
    """IQL-MA (the paper's baseline; ma-mql `iql_ma`): the inverse soft-Q loss of ONE agent whose
    critic sees the other agents' actions, on expert rows only.

    q, q_next: [N, A_i] the agent's ConditionedCritic at (s, a_-i) and at (s', a_-i), a_-i the
    others' actions in the row (plugged in at s' too, as the reference does). actions: [N] the
    agent's own expert action; done: [N] the terminal flag. With y = gamma (1 - done) V(s', a_-i)
    and r^ = Q(s, a_-i, a_i) - y:

        L = mean(V(s, a_-i) - y) - mean(r^) + 1/(4 chi2_alpha) mean(r^^2)

    i.e. mamql_loss with every row expert and value_term "expert"; no online rows, no target
    critic. chi2_alpha None = alpha (the reference's 1/(4 alpha)); math.inf switches it off.
    Returns (loss, terms): loss, value, expert_reward, chi2, expert_q (mean Q(s, a_-i, a_E)),
    mean_q (mean over rows and own actions) and q_gap = expert_q - mean_q, which grows as the
    critic ranks the expert's action above the alternatives (detached 0-d tensors with
    as_floats=False)."""
    done = done.to(q.dtype)
    v = soft_value(q, alpha)
    y = gamma * (1.0 - done) * soft_value(q_next, alpha)
    q_sa = gather_actions(q, actions)
    reward = q_sa - y
    value = (v - y).mean()
    expert_reward = reward.mean()
    chi_alpha = alpha if chi2_alpha is None else chi2_alpha
    chi2 = (0.0 if math.isinf(chi_alpha) else 1.0 / (4.0 * chi_alpha)) * (reward**2).mean()
    loss = value - expert_reward + chi2
    with torch.no_grad():
        expert_q, mean_q = q_sa.mean(), q.mean()
        names = ("loss", "value", "expert_reward", "chi2", "expert_q", "mean_q", "q_gap")
        values = torch.stack([loss, value, expert_reward, chi2, expert_q, mean_q, expert_q - mean_q]).detach()
        terms = dict(zip(names, values.tolist() if as_floats else values.unbind()))
    return loss, terms


def iqlma_joint_loss(
    q_joint: Tensor,
    q_joint_next: Tensor,
    actions_per_agent: Tensor | Sequence[Tensor],
    num_actions_per_agent: Sequence[int],
    done: Tensor,
    is_expert: Tensor,
    **kwargs,
) -> tuple[Tensor, dict]:
    """Joint-action IQL-MA (algo iqlma-joint; NOT the reference's iql_ma, see iqlma_loss): the
    MAMQL loss for agent i, but its critic Q_i(s, a_1..a_n) ranges over the JOINT action (flat
    index), and V is the soft maximum over all joint actions, as if agent i controlled everyone.
    No marginalisation over the others' policies; keyword options are those of mamql_loss."""
    index = joint_action_index(actions_per_agent, num_actions_per_agent).to(q_joint.device)
    return mamql_loss(q_joint, q_joint_next, index, done, is_expert, **kwargs)


# --------------------------------------------------------------------------- reward recovery and evaluation


@torch.no_grad()
def recover_reward(q_sa: Tensor, v_next: Tensor, done: Tensor, gamma: float) -> Tensor:
    """The learned reward r^(s, a) = Q(s, a) - gamma (1 - done) V(s'), detached. Identified only up
    to potential-based shaping Phi(s) - gamma (1 - done) Phi(s') (and, per state, to the chi^2
    regulariser's pull towards zero), so compare with the true reward shaping-invariantly too."""
    return implied_reward(q_sa, v_next, done, gamma).detach()


@torch.no_grad()
def recover_reward_from_q(q: Tensor, q_next: Tensor, actions: Tensor, done: Tensor, gamma: float, alpha: float = 1.0) -> Tensor:
    """recover_reward from the critic's raw outputs at s and s'."""
    return recover_reward(gather_actions(q, actions), soft_value(q_next, alpha), done, gamma)


@torch.no_grad()
def affine_fit_metrics(pred: Tensor, true: Tensor) -> dict[str, float]:
    """How well the recovered reward explains the true one up to scale and offset.

    Fits true ~ scale * pred + shift by least squares (the recovered reward has no fixed units or
    zero), then reports the Pearson correlation, the MSE after that map ("mse"), the raw MSE
    without it ("mse_raw"), and the fitted scale and shift. Computed in float64."""
    x = torch.as_tensor(pred).detach().reshape(-1).to(torch.float64).cpu()
    t = torch.as_tensor(true).detach().reshape(-1).to(torch.float64).cpu()
    xc, tc = x - x.mean(), t - t.mean()
    sxx, stt, sxt = (xc * xc).sum(), (tc * tc).sum(), (xc * tc).sum()
    scale = sxt / sxx if sxx > 0 else torch.zeros((), dtype=torch.float64)
    shift = t.mean() - scale * x.mean()
    mse = ((scale * x + shift - t) ** 2).mean()
    pearson = sxt / torch.sqrt(sxx * stt) if sxx > 0 and stt > 0 else torch.tensor(float("nan"))
    return {
        "pearson": float(pearson),
        "mse": float(mse),
        "mse_raw": float(((x - t) ** 2).mean()),
        "scale": float(scale),
        "shift": float(shift),
    }


def epic_canonicalize(
    reward_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    obs: Tensor,
    actions: Tensor,
    next_obs: Tensor,
    state_pool: Tensor,
    action_pool: Tensor,
    gamma: float,
) -> Tensor:
    """EPIC canonical form (Gleave et al. 2021) of a reward on a batch of transitions:

        C(R)(s,a,s') = R(s,a,s') + E[gamma R(s',A,S') - R(s,A,S') - gamma R(S,A,S')],

    S, S' drawn from `state_pool` and A from `action_pool`, independently (we average over the full
    product of the pools: reward_fn sees (2 len(obs) + len(state_pool)) * len(action_pool) *
    len(state_pool) rows, so keep pools small). Any potential shaping Phi(s) - gamma Phi(s') cancels exactly, so canonical forms
    compare rewards modulo shaping. reward_fn(obs [B,...], actions [B], next_obs [B,...]) -> [B].
    Terminal transitions: C uses pool states as successors, so shaping through a terminal s' (where
    Phi(s') counts as 0) is not removed; evaluate on non-terminal transitions or accept that."""
    m, k = state_pool.shape[0], action_pool.shape[0]

    def mean_from(origin: Tensor) -> Tensor:
        # E_{A, S'}[R(origin_i, A, S')] for each row i: [len(origin)]
        rows = origin.shape[0]
        o = origin.repeat_interleave(k * m, dim=0)
        a = action_pool.repeat_interleave(m, dim=0).repeat(rows)
        s2 = state_pool.repeat(rows * k, *([1] * (state_pool.ndim - 1)))
        return reward_fn(o, a, s2).reshape(rows, k * m).mean(1)

    r = reward_fn(obs, actions, next_obs)
    const = mean_from(state_pool).mean()  # E[R(S, A, S')]
    return r + gamma * mean_from(next_obs) - mean_from(obs) - gamma * const


@torch.no_grad()
def epic_canonical_correlation(
    reward_fn_a: Callable[[Tensor, Tensor, Tensor], Tensor],
    reward_fn_b: Callable[[Tensor, Tensor, Tensor], Tensor],
    obs: Tensor,
    actions: Tensor,
    next_obs: Tensor,
    state_pool: Tensor,
    action_pool: Tensor,
    gamma: float,
) -> float:
    """Pearson correlation of two rewards' EPIC canonical forms on the given transitions: a
    shaping-invariant comparison (1 = same reward up to shaping and positive scale). Report it next
    to the raw correlation, saying which is which. EPIC's distance is sqrt((1 - rho) / 2)."""
    ca = epic_canonicalize(reward_fn_a, obs, actions, next_obs, state_pool, action_pool, gamma)
    cb = epic_canonicalize(reward_fn_b, obs, actions, next_obs, state_pool, action_pool, gamma)
    return affine_fit_metrics(ca, cb)["pearson"]


def shaping_projected_correlation(r_hat: np.ndarray, r_true: np.ndarray, transition: np.ndarray, gamma: float) -> float:
    """Shaping-invariant comparison of two rewards r(s, a) [S, A] of a TABULAR MDP with known
    dynamics `transition` [S, A, S']: project both off the span of the potential-based shapings
    gamma E_{s'}[Phi(s')] - Phi(s) (one basis vector per state) and constants, then Pearson-correlate
    what is left. 1 = the same reward up to shaping, shift and positive scale, the most inverse
    soft-Q learning can identify. Unlike EPIC it respects the dynamics (no impossible transitions)."""
    n_states, n_actions = r_true.shape
    eye = np.eye(n_states)
    basis = [np.ones(n_states * n_actions)]
    basis += [(gamma * transition[:, :, k] - eye[:, k][:, None]).reshape(-1) for k in range(n_states)]
    b = np.stack(basis, 1)

    def residual(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return x - b @ np.linalg.lstsq(b, x, rcond=None)[0]

    return affine_fit_metrics(torch.from_numpy(residual(r_hat)), torch.from_numpy(residual(r_true)))["pearson"]
