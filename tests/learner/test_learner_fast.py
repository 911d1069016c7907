"""Fast (batched all-agents) updater vs the plain per-agent Updater: numerics, checkpoints, fallback.

Tolerances (stated once, used below):
- fp64 (vector env): terms and parameters after 1 and 3 updates agree to 1e-9.
- fp32 (Gems CNN): loss terms to 1e-5, gradients to 1e-6. Parameters to 1e-5 on all but a
  1e-4 fraction of elements: Adam divides by sqrt(v) + 1e-8, so a gradient that is ~1e-10 (roundoff
  around a true 0) moves a weight by up to lr; we bound those by lr per update.
- CUDA (gpu marker): bf16 + CUDA graph vs plain fp32, terms at the initial weights rtol 2e-2, after
  3 updates rtol 5e-2; fp32 graph vs plain fp32 as the fp32 CPU tolerances (TF32 off).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_learner_updater import random_batch  # noqa: E402

from mamql.envs import env_spec  # noqa: E402
from mamql.learner.fast import DevicePrefetcher, FastUpdater, LazyTerms, fast_supported, replay_ratio  # noqa: E402
from mamql.learner.updater import Updater, load_checkpoint, make_updater, save_checkpoint  # noqa: E402
from mamql.config import LearnerConfig  # noqa: E402

torch.set_num_threads(1)
TINY = (32,)
LR = 1e-3


def cfg(algo="mamql", **kw):
    return LearnerConfig(algo=algo, hidden=TINY, device="cpu", fast=True, lr=LR, **kw)


def to_fp64(plain: Updater, fast: FastUpdater) -> None:
    """Both updaters in float64 (in place, so their optimizers keep the same parameter objects)."""
    for m in plain.critics.values():
        m.double()
    for p in fast.leaves.values():
        p.data = p.data.double()


def params_of(u) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in u.policy_weights().items()}


def grads_of(u) -> dict[str, torch.Tensor]:
    if isinstance(u, Updater):
        return {f"{a}/{n}": p.grad for a, m in u.critics.items() for n, p in m.named_parameters()}
    grads = u.grads()
    return {f"{a}/{n}": grads[n][i] for i, a in enumerate(u.agents) for n in u.param_names}


def assert_params_close_fp32(a: dict, b: dict, updates: int) -> None:
    assert list(a) == list(b)
    total = off = 0
    for k in a:
        diff = (a[k] - b[k]).abs()
        total += diff.numel()
        off += int((diff > 1e-5).sum())
        assert float(diff.max()) <= LR * updates * 1.01, k
    assert off <= max(1, total * 1e-4), (off, total)


@pytest.mark.parametrize("algo", ["mamql", "iqlma-joint"])
def test_fast_equals_plain_in_fp64(algo):
    spec = env_spec("mpe/simple_spread")  # three identical agents, vector observations
    plain, fast = Updater(spec, cfg(algo), "cpu", 0), FastUpdater(spec, cfg(algo), "cpu", 0)
    torch.testing.assert_close(params_of(plain), params_of(fast), rtol=0, atol=0)  # same initial weights
    to_fp64(plain, fast)
    rng = np.random.default_rng(1)
    for step in range(1, 4):
        e, o = random_batch(spec, 12, rng), random_batch(spec, 20, rng)
        e = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in e.items()}
        o = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in o.items()}
        lp, lf = plain.update(e, o), fast.update(e, o)
        assert set(lp) == set(lf)
        for k in lp:
            assert lf[k] == pytest.approx(lp[k], abs=1e-9), k
        if step in (1, 3):
            torch.testing.assert_close(params_of(fast), params_of(plain), rtol=0, atol=1e-9)
    assert fast.step == plain.step == 3


def test_fast_matches_plain_on_gems_in_fp32():
    spec = env_spec("gems")
    plain, fast = Updater(spec, cfg(), "cpu", 0), FastUpdater(spec, cfg(), "cpu", 0)
    rng = np.random.default_rng(0)
    for step in range(1, 4):
        e, o = random_batch(spec, 16, rng), random_batch(spec, 16, rng)
        lp, lf = plain.update(e, o), fast.update(e, o)
        for k in lp:
            assert lf[k] == pytest.approx(lp[k], abs=1e-5, rel=1e-5), k
        if step == 1:
            torch.testing.assert_close(grads_of(fast), grads_of(plain), rtol=0, atol=1e-6)
        if step in (1, 3):
            assert_params_close_fp32(params_of(fast), params_of(plain), step)


def assert_states_equal(a: dict, b: dict) -> None:
    assert a["format"] == b["format"] and a["algo"] == b["algo"] and a["step"] == b["step"]
    torch.testing.assert_close(a["critics"], b["critics"], rtol=0, atol=0)
    torch.testing.assert_close(a["rng"], b["rng"], rtol=0, atol=0)
    for agent in a["optimizers"]:
        oa, ob = a["optimizers"][agent], b["optimizers"][agent]
        assert oa["param_groups"] == ob["param_groups"]
        torch.testing.assert_close(oa["state"], ob["state"], rtol=0, atol=0)


def test_checkpoints_are_interchangeable(tmp_path):
    spec = env_spec("gems")
    rng = np.random.default_rng(2)
    batches = [(random_batch(spec, 8, rng), random_batch(spec, 8, rng)) for _ in range(4)]
    fast = FastUpdater(spec, cfg(), "cpu", 0)
    for e, o in batches[:2]:
        fast.update(e, o)
    # fast -> plain: bit-identical state, then both continue on the same batch
    save_checkpoint(tmp_path / "fast.pt", fast)
    plain = Updater(spec, cfg(), "cpu", 5)
    load_checkpoint(tmp_path / "fast.pt", plain)
    assert_states_equal(plain.state_dict(), fast.state_dict())
    lp, lf = plain.update(*batches[2]), fast.update(*batches[2])
    for k in lp:
        assert lf[k] == pytest.approx(lp[k], abs=1e-5, rel=1e-5), k
    assert_params_close_fp32(params_of(fast), params_of(plain), 3)
    # plain -> a fresh fast updater (its Adam state created from the checkpoint)
    save_checkpoint(tmp_path / "plain.pt", plain)
    fast2 = FastUpdater(spec, cfg(), "cpu", 7)
    load_checkpoint(tmp_path / "plain.pt", fast2)
    assert_states_equal(fast2.state_dict(), plain.state_dict())
    lp, lf = plain.update(*batches[3]), fast2.update(*batches[3])
    for k in lp:
        assert lf[k] == pytest.approx(lp[k], abs=1e-5, rel=1e-5), k
    # a step-0 checkpoint (no Adam state yet) also round-trips
    fresh = FastUpdater(spec, cfg(), "cpu", 0)
    Updater(spec, cfg(), "cpu", 1).load_state_dict(fresh.state_dict())
    fresh.load_state_dict(Updater(spec, cfg(), "cpu", 1).state_dict())
    assert fresh.step == 0 and not any(fresh.optimizer.state.get(p) for p in fresh.leaves.values())


def test_make_updater_falls_back_when_agents_differ():
    adversary = env_spec("mpe/simple_adversary")  # adversary_0 sees 8 numbers, the agents 10
    assert not fast_supported(adversary, cfg())[0]
    u = make_updater(adversary, cfg(), "cpu")
    assert type(u) is Updater
    rng = np.random.default_rng(0)
    logs = u.update(random_batch(adversary, 8, rng), random_batch(adversary, 8, rng))
    assert u.step == 1 and all(np.isfinite(v) for v in logs.values())
    assert type(make_updater(env_spec("gems"), cfg("bc"), "cpu")) is Updater  # bc: no fast path
    assert not fast_supported(env_spec("gems"), cfg("iqlma"))[0]  # conditioned critics: no fast path
    assert type(make_updater(env_spec("gems"), cfg("iqlma"), "cpu")) is Updater
    assert type(make_updater(env_spec("gems"), cfg(), "cpu")) is FastUpdater
    assert type(make_updater(env_spec("gems"), LearnerConfig(hidden=TINY, device="cpu"), "cpu")) is Updater


def test_bf16_autocast_runs_close_to_fp32_on_cpu():
    spec = env_spec("gems")
    rng = np.random.default_rng(3)
    e, o = random_batch(spec, 8, rng), random_batch(spec, 8, rng)
    l32 = FastUpdater(spec, cfg(), "cpu", 0).update(e, o)
    l16 = FastUpdater(spec, cfg(precision="bf16"), "cpu", 0).update(e, o)
    for k in l32:
        assert l16[k] == pytest.approx(l32[k], rel=5e-2, abs=5e-2), k
    with pytest.raises(ValueError):
        FastUpdater(spec, cfg(precision="fp8"), "cpu", 0)


def test_lazy_terms_and_replay_ratio():
    terms = LazyTerms(torch.arange(14.0).reshape(2, 7), ["a", "b"])
    assert len(terms) == 14 and terms["b/loss"] == 7.0 and dict(terms)["a/q_gap"] == 6.0
    assert replay_ratio(400, 100) == 4.0 and replay_ratio(5, 0) == 0.0


def test_device_prefetcher_keeps_order_and_surfaces_errors():
    items = iter([{"x": np.full(3, i)} for i in range(5)] + [None])
    pre = DevicePrefetcher(lambda: next(items), "cpu", depth=2)
    got = [pre.next(timeout=5) for _ in range(6)]
    assert [int(b["x"][0]) for b in got[:5]] == list(range(5)) and got[5] is None
    pre.close()

    def broken():
        raise RuntimeError("replay went away")

    pre = DevicePrefetcher(broken, "cpu")
    with pytest.raises(RuntimeError, match="replay went away"):
        pre.next(timeout=5)
    pre.close()


# --------------------------------------------------------------------------- CUDA only

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gpu_pair(**kw):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    spec = env_spec("gems")
    plain = Updater(spec, LearnerConfig(hidden=(256,), device="cuda", lr=LR), "cuda", 0)
    fast = FastUpdater(spec, LearnerConfig(hidden=(256,), device="cuda", lr=LR, fast=True, **kw), "cuda", 0)
    return spec, plain, fast


@pytest.mark.gpu
@needs_cuda
def test_gpu_fp32_graph_matches_plain():
    spec, plain, fast = gpu_pair(precision="fp32", cuda_graph=True)
    rng = np.random.default_rng(0)
    for step in range(1, 4):
        e, o = random_batch(spec, 64, rng), random_batch(spec, 64, rng)
        lp, lf = plain.update(e, o), dict(fast.update(e, o))
        for k in lp:
            assert lf[k] == pytest.approx(lp[k], abs=1e-4, rel=1e-4), k
        if step in (1, 3):
            assert_params_close_fp32(params_of(fast), params_of(plain), step)
    assert fast._graph is not None


@pytest.mark.gpu
@needs_cuda
def test_gpu_bf16_graph_close_to_plain_fp32():
    spec, plain, fast = gpu_pair(precision="bf16", cuda_graph=True)
    rng = np.random.default_rng(0)
    expert_device = {k: torch.as_tensor(v).cuda() for k, v in random_batch(spec, 64, rng).items()}  # as ExpertSampler
    for step in range(1, 4):
        o = random_batch(spec, 64, rng)
        lp, lf = plain.update(expert_device, o), dict(fast.update(expert_device, o))
        rel = 2e-2 if step == 1 else 5e-2
        for k in lp:
            assert lf[k] == pytest.approx(lp[k], abs=rel, rel=rel), k


@pytest.mark.gpu
@needs_cuda
def test_gpu_graph_survives_checkpoint_load(tmp_path):
    spec, plain, fast = gpu_pair(cuda_graph=True)
    rng = np.random.default_rng(4)
    batches = [(random_batch(spec, 32, rng), random_batch(spec, 32, rng)) for _ in range(3)]
    plain.update(*batches[0])
    save_checkpoint(tmp_path / "p.pt", plain)
    fast.update(*batches[1])  # captures a graph
    load_checkpoint(tmp_path / "p.pt", fast)
    lp, lf = plain.update(*batches[2]), dict(fast.update(*batches[2]))
    for k in lp:
        assert lf[k] == pytest.approx(lp[k], abs=1e-4, rel=1e-4), k
    assert fast.step == plain.step == 2


@pytest.mark.gpu
@needs_cuda
def test_gpu_prefetcher_delivers_device_batches():
    items = iter([{"x": np.full(4, i, np.uint8)} for i in range(3)] + [None])
    pre = DevicePrefetcher(lambda: next(items), "cuda", depth=2)
    for i in range(3):
        b = pre.next(timeout=10)
        assert b["x"].is_cuda and int(b["x"][0]) == i
    assert pre.next(timeout=10) is None
    pre.close()
