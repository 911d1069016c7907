"""The pure MAMQL math against numbers worked out by hand on tiny tensors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mamql.learner.losses import (
    affine_fit_metrics,
    bc_loss,
    distill_loss,
    boltzmann_log_probs,
    boltzmann_probs,
    implied_reward,
    iqlma_joint_loss,
    joint_action_index,
    mamql_loss,
    marginalize_joint_q,
    recover_reward,
    recover_reward_from_q,
    soft_q_loss,
    soft_value,
    split_joint_action_index,
)

L2, L3 = math.log(2.0), math.log(3.0)


def test_soft_value_by_hand():
    q = torch.tensor([[0.0, L3], [1.0, 1.0]])
    assert torch.allclose(soft_value(q, 1.0), torch.tensor([math.log(4.0), 1.0 + L2]))
    # alpha = 2: 2 * log(e^0 + e^(log 3)) = 2 log 4
    assert torch.allclose(soft_value(torch.tensor([0.0, 2 * L3]), 2.0), torch.tensor(2 * math.log(4.0)))
    # soft value >= max, and -> max as alpha -> 0
    assert float(soft_value(torch.tensor([1.0, 5.0]), 1e-3)) == pytest.approx(5.0, abs=1e-3)


def test_boltzmann_probs_by_hand():
    q = torch.tensor([0.0, L3])
    assert torch.allclose(boltzmann_probs(q, 1.0), torch.tensor([0.25, 0.75]))
    assert torch.allclose(boltzmann_log_probs(q, 1.0), torch.log(torch.tensor([0.25, 0.75])))
    # log pi = (Q - V) / alpha
    q = torch.randn(4, 5)
    assert torch.allclose(boltzmann_log_probs(q, 0.5), (q - soft_value(q, 0.5)[:, None]) / 0.5, atol=1e-6)
    # extreme values stay finite
    assert torch.isfinite(boltzmann_log_probs(torch.tensor([1e4, -1e4]), 1.0)).all()


def test_implied_reward_by_hand():
    q_sa = torch.tensor([2.0, 2.0])
    v_next = torch.tensor([math.log(4.0), math.log(4.0)])
    done = torch.tensor([0.0, 1.0])
    r = implied_reward(q_sa, v_next, done, gamma=0.5)
    assert torch.allclose(r, torch.tensor([2.0 - L2, 2.0]))
    assert torch.allclose(recover_reward(q_sa, v_next, done.bool(), 0.5), r)
    q = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    q_next = torch.tensor([[0.0, L3], [0.0, L3]])
    assert torch.allclose(recover_reward_from_q(q, q_next, torch.tensor([1, 0]), done, 0.5), r)


# Two rows, gamma = 0.5, alpha = 1. Row 0 expert (action 1), row 1 online (action 0, terminal).
#   V(s)  = [log 4, 1 + log 2];  V(s') = [log 2, log 4];  y = gamma (1-d) V(s') = [log2 / 2, 0]
#   Q(s,a) = [log 3, 1];  r^ = [log 3 - log2/2, 1]
def _two_rows():
    q = torch.tensor([[0.0, L3], [1.0, 1.0]], dtype=torch.float64)
    q_next = torch.tensor([[0.0, 0.0], [L3, 0.0]], dtype=torch.float64)
    actions = torch.tensor([1, 0])
    done = torch.tensor([0.0, 1.0], dtype=torch.float64)
    is_expert = torch.tensor([True, False])
    return q, q_next, actions, done, is_expert


R0 = L3 - 0.5 * L2  # expert implied reward
HAND_VALUE = {
    "value": ((2 * L2 - 0.5 * L2) + (1 + L2)) / 2,
    "online": 1 + L2,
    "expert": 2 * L2 - 0.5 * L2,
    "v0": 0.5 * 2 * L2,  # (1 - gamma) V(s0), expert state standing in for s0
}


@pytest.mark.parametrize("value_term", ["value", "online", "expert", "v0"])
def test_mamql_loss_terms_by_hand_reference_chi2(value_term):
    loss, terms = mamql_loss(*_two_rows(), gamma=0.5, alpha=1.0, value_term=value_term, chi2_on_policy=False)
    chi2 = 0.25 * R0**2  # reference code: -E_expert[r^ - r^2 / 4]
    assert terms["value"] == pytest.approx(HAND_VALUE[value_term])
    assert terms["expert_reward"] == pytest.approx(R0)
    assert terms["chi2"] == pytest.approx(chi2)
    assert float(loss) == pytest.approx(HAND_VALUE[value_term] - R0 + chi2)
    assert terms["loss"] == pytest.approx(float(loss))
    assert terms["expert_q"] == pytest.approx(L3)
    assert terms["policy_q"] == pytest.approx(1.0)
    assert terms["q_gap"] == pytest.approx(L3 - 1.0)


def test_mamql_loss_chi2_on_policy_by_hand():
    q, q_next, actions, done, is_expert = _two_rows()
    q = q.clone().requires_grad_(True)
    loss, terms = mamql_loss(q, q_next, actions, done, is_expert, gamma=0.5, value_term="value", chi2_on_policy=True)
    # online row: pi = [1/2, 1/2], y = 0, Q = [1, 1] -> E_pi[(Q - y)^2] = 1; mean over both rows
    assert terms["chi2"] == pytest.approx(0.25 * (R0**2 + 1.0) / 2)
    assert loss.item() == pytest.approx(HAND_VALUE["value"] - R0 + 0.25 * (R0**2 + 1.0) / 2)
    loss.backward()
    # d/dQ[1, a]: value term pi_a / 2 = 0.25; chi2 (pi detached) 0.25/2 * 2 pi_a (Q_a - y) = 0.125
    assert torch.allclose(q.grad[1], torch.tensor([0.375, 0.375], dtype=torch.float64))


def test_mamql_loss_chi2_off_and_alpha():
    args = _two_rows()
    _, off = mamql_loss(*args, gamma=0.5, chi2_alpha=math.inf)
    assert off["chi2"] == 0.0
    _, half = mamql_loss(*args, gamma=0.5, chi2_alpha=0.5, chi2_on_policy=False)
    assert half["chi2"] == pytest.approx(0.5 * R0**2)
    with pytest.raises(ValueError):
        mamql_loss(*args, gamma=0.5, value_term="nope")


def test_mamql_loss_v0_with_initial_states():
    q, q_next, actions, done, is_expert = _two_rows()
    q_init = torch.tensor([[0.0, 0.0], [L3, 0.0]], dtype=torch.float64)  # V = log2, log4
    _, terms = mamql_loss(q, q_next, actions, done, is_expert, gamma=0.5, value_term="v0", q_init=q_init)
    assert terms["value"] == pytest.approx(0.5 * (L2 + 2 * L2) / 2)


def test_mamql_loss_tensor_terms_and_row_order():
    q, q_next, actions, done, is_expert = _two_rows()
    _, t1 = mamql_loss(q, q_next, actions, done, is_expert, gamma=0.5, as_floats=False)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in t1.values())
    perm = torch.tensor([1, 0])  # online first: the mask, not the order, decides
    _, t2 = mamql_loss(q[perm], q_next[perm], actions[perm], done[perm], is_expert[perm].int(), gamma=0.5)
    assert {k: float(v) for k, v in t1.items()} == pytest.approx(t2)


@pytest.mark.parametrize("value_term", ["value", "online", "expert", "v0"])
@pytest.mark.parametrize("chi2_on_policy", [False, True])
def test_mamql_loss_gradcheck(value_term, chi2_on_policy):
    g = torch.Generator().manual_seed(0)
    n, a = 6, 3
    q = torch.randn(n, a, generator=g, dtype=torch.float64, requires_grad=True)
    q_next = torch.randn(n, a, generator=g, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(0, a, (n,), generator=g)
    done = torch.tensor([0, 1, 0, 0, 1, 0], dtype=torch.float64)
    is_expert = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool)

    if chi2_on_policy:
        # pi is detached by design (IQ-Learn samples a ~ pi there), so check the function whose
        # gradient autograd must reproduce: pi frozen at its current value.
        pi = boltzmann_probs(q.detach(), 1.0)

        def f(q, q_next):
            y = 0.9 * (1 - done) * soft_value(q_next)
            r = q.gather(1, actions[:, None]).squeeze(1) - y
            sq = torch.where(is_expert, r**2, (pi * (q - y[:, None]) ** 2).sum(1))
            return mamql_loss(q, q_next, actions, done, is_expert, gamma=0.9, value_term=value_term,
                              chi2_alpha=math.inf)[0] + 0.25 * sq.mean()

        got = torch.autograd.grad(mamql_loss(q, q_next, actions, done, is_expert, gamma=0.9,
                                             value_term=value_term, chi2_on_policy=True)[0], (q, q_next))
        want = torch.autograd.grad(f(q, q_next), (q, q_next))
        for g1, g2 in zip(got, want):
            assert torch.allclose(g1, g2)
        assert torch.autograd.gradcheck(f, (q, q_next))
    else:
        fn = lambda q, q_next: mamql_loss(q, q_next, actions, done, is_expert, gamma=0.9,
                                          value_term=value_term, chi2_on_policy=False)[0]
        assert torch.autograd.gradcheck(fn, (q, q_next))


def test_bc_loss_matches_cross_entropy():
    logits = torch.tensor([[0.0, L3]])
    assert float(bc_loss(logits, torch.tensor([1]))) == pytest.approx(-math.log(0.75))
    logits = torch.randn(7, 5)
    actions = torch.randint(0, 5, (7,))
    assert torch.allclose(bc_loss(logits, actions), F.cross_entropy(logits, actions))


def test_distill_loss_by_hand_and_one_hot_is_bc():
    logits = torch.tensor([[0.0, L3]])  # softmax = (1/4, 3/4)
    probs = torch.tensor([[0.5, 0.5]])
    assert float(distill_loss(logits, probs)) == pytest.approx(-0.5 * math.log(0.25) - 0.5 * math.log(0.75))
    logits = torch.randn(7, 5)
    actions = torch.randint(0, 5, (7,))
    assert torch.allclose(distill_loss(logits, F.one_hot(actions, 5).float()), bc_loss(logits, actions))


def test_joint_action_index_round_trip():
    n = (5, 6, 3)
    actions = torch.stack([torch.randint(0, k, (50,)) for k in n], dim=1)
    idx = joint_action_index(actions, n)
    assert idx.tolist() == np.ravel_multi_index(actions.numpy().T, n).tolist()
    assert torch.equal(split_joint_action_index(idx, n), actions)
    assert torch.equal(joint_action_index([actions[:, 0], actions[:, 1], actions[:, 2]], n), idx)
    assert int(joint_action_index(torch.tensor([[1, 2]]), (5, 5))) == 7


def test_marginalize_joint_q_is_the_marginal_policy():
    n = (3, 4)
    q = torch.randn(5, 12, dtype=torch.float64)
    joint = boltzmann_probs(q, 0.7).reshape(5, 3, 4)
    for i, other in ((0, 2), (1, 1)):
        marg = boltzmann_probs(marginalize_joint_q(q, n, i, 0.7), 0.7)
        assert torch.allclose(marg, joint.sum(dim=other))


def test_iqlma_joint_loss_is_mamql_on_joint_index():
    n = (2, 3)
    q = torch.randn(4, 6)
    q_next = torch.randn(4, 6)
    actions = torch.tensor([[0, 2], [1, 1], [1, 0], [0, 0]])
    done = torch.tensor([0.0, 0.0, 1.0, 0.0])
    is_exp = torch.tensor([1, 1, 0, 0])
    loss, terms = iqlma_joint_loss(q, q_next, actions, n, done, is_exp, gamma=0.9)
    ref, _ = mamql_loss(q, q_next, torch.tensor([2, 4, 3, 0]), done, is_exp, gamma=0.9)
    assert torch.allclose(loss, ref)
    # soft value over ALL joint actions: by hand for the expert rows' value
    assert terms["expert_q"] == pytest.approx(float((q[0, 2] + q[1, 4]) / 2), rel=1e-6)


def test_affine_fit_metrics():
    true = torch.tensor([0.0, 1.0, 2.0, 5.0])
    m = affine_fit_metrics(2 * true + 3, true)
    assert m["pearson"] == pytest.approx(1.0)
    assert m["mse"] == pytest.approx(0.0, abs=1e-12)
    assert m["scale"] == pytest.approx(0.5) and m["shift"] == pytest.approx(-1.5)
    assert m["mse_raw"] == pytest.approx(float(((true + 3) ** 2).mean()))
    # anti-correlated pair by hand: pred = [0, 1], true = [1, 0] -> r = -1, exact affine fit
    m = affine_fit_metrics(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    assert m["pearson"] == pytest.approx(-1.0) and m["mse"] == pytest.approx(0.0, abs=1e-12)
    # a constant prediction explains nothing: mse = var(true)
    m = affine_fit_metrics(torch.ones(4), true)
    assert math.isnan(m["pearson"]) and m["mse"] == pytest.approx(float(true.var(unbiased=False)))


def test_epic_canonical_correlation_ignores_shaping():
    from mamql.learner.losses import epic_canonical_correlation, epic_canonicalize

    g = torch.Generator().manual_seed(3)
    n_s, n_a, gamma = 6, 3, 0.9
    table = torch.randn(n_s, n_a, n_s, generator=g, dtype=torch.float64)
    phi = 3 * torch.randn(n_s, generator=g, dtype=torch.float64)
    true = lambda s, a, s2: table[s, a, s2]
    shaped = lambda s, a, s2: 2.0 * (table[s, a, s2] + gamma * phi[s2] - phi[s]) + 0.7
    other = torch.randn(n_s, n_a, n_s, generator=g, dtype=torch.float64)
    s = torch.randint(0, n_s, (200,), generator=g)
    a = torch.randint(0, n_a, (200,), generator=g)
    s2 = torch.randint(0, n_s, (200,), generator=g)
    pool_s, pool_a = torch.arange(n_s), torch.arange(n_a)
    # canonical forms agree exactly (up to the positive scale 2)
    c1 = epic_canonicalize(true, s, a, s2, pool_s, pool_a, gamma)
    c2 = epic_canonicalize(shaped, s, a, s2, pool_s, pool_a, gamma)
    assert torch.allclose(c2, 2.0 * c1)
    assert epic_canonical_correlation(true, shaped, s, a, s2, pool_s, pool_a, gamma) == pytest.approx(1.0)
    assert affine_fit_metrics(shaped(s, a, s2), true(s, a, s2))["pearson"] < 0.9  # raw one is fooled
    rho = epic_canonical_correlation(true, lambda s, a, s2: other[s, a, s2], s, a, s2, pool_s, pool_a, gamma)
    assert abs(rho) < 0.5


def test_soft_q_loss_by_hand():
    # Two rows, gamma 0.5, alpha 1. Target critic at s': [0, log 3] -> V = log 4 on both rows.
    #   row 0: not terminal, y = 1 + 0.5 log 4 = 1 + log 2; Q(s, a=1) = 2 -> error 1 - log 2
    #   row 1: terminal,     y = -1 (no bootstrap);          Q(s, a=0) = 0.5 -> error 1.5
    q = torch.tensor([[0.0, 2.0], [0.5, 3.0]], requires_grad=True)
    q_next = torch.tensor([[0.0, L3], [0.0, L3]])
    loss, terms = soft_q_loss(q, q_next, torch.tensor([1, 0]), torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0]),
                              gamma=0.5, alpha=1.0)
    e0, e1 = 1.0 - L2, 1.5
    assert float(loss) == pytest.approx((e0**2 + e1**2) / 2, abs=1e-6)
    assert terms["target"] == pytest.approx(((1 + L2) + -1) / 2, abs=1e-6)
    assert terms["q"] == pytest.approx(1.25) and terms["reward"] == pytest.approx(0.0)
    assert terms["soft_value"] == pytest.approx((math.log(1 + math.e**2) + math.log(math.e**0.5 + math.e**3)) / 2, abs=1e-6)
    loss.backward()
    # d/dQ(s,a) of the mean squared error: 2 (Q - y) / N on the taken action, 0 elsewhere; nothing flows
    # into the target (it is a constant of the regression)
    assert torch.allclose(q.grad, torch.tensor([[0.0, e0], [e1, 0.0]]), atol=1e-6)


def test_soft_q_loss_alpha_and_no_gradient_into_the_target():
    # alpha = 2: V(s') = 2 log(e^0 + e^(2 log 3 / 2)) = 2 log 4; y = 0 + 0.5 * 2 log 4 = 2 log 2
    q = torch.tensor([[2 * L2 + 1.0, 0.0]], requires_grad=True)
    q_next = torch.tensor([[0.0, 2 * L3]], requires_grad=True)
    loss, terms = soft_q_loss(q, q_next, torch.tensor([0]), torch.tensor([0.0]), torch.tensor([False]),
                              gamma=0.5, alpha=2.0, as_floats=False)
    assert float(loss) == pytest.approx(1.0, abs=1e-6) and float(terms["target"]) == pytest.approx(2 * L2)
    loss.backward()
    assert q_next.grad is None and torch.allclose(q.grad, torch.tensor([[2.0, 0.0]]))
