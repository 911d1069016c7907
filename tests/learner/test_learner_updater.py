"""Updater: the train step of every algo on Gems and a vector env, loss decrease, exact checkpoints."""

import math
import shutil

import numpy as np
import pytest
import torch

from mamql.envs import env_spec
from mamql.learner.demos import collect_demos
from mamql.learner.policy import BoltzmannPolicy
from mamql.learner.networks import build_algo_critics
from mamql.learner.updater import Updater, load_checkpoint, make_updater, read_checkpoint, save_checkpoint
from mamql.config import LearnerConfig

TINY = (32,)
torch.set_num_threads(1)  # tiny nets: threads only contend with other test processes


def random_batch(spec, n, rng):
    """Online-like rows: observations from the env's own dtype/shape, random actions."""
    b = {}
    for a in spec.agents:
        shape = (n, *spec.obs_shape[a])
        if spec.obs_dtype[a] == "uint8":
            b[f"obs/{a}"] = (rng.random(shape) < 0.05).astype(np.uint8)
            b[f"next_obs/{a}"] = (rng.random(shape) < 0.05).astype(np.uint8)
        else:
            b[f"obs/{a}"] = rng.standard_normal(shape).astype(np.float32)
            b[f"next_obs/{a}"] = rng.standard_normal(shape).astype(np.float32)
        b[f"action/{a}"] = rng.integers(0, spec.num_actions[a], n)
        b[f"reward/{a}"] = np.zeros(n, np.float32)
    b["done"] = rng.random(n) < 0.05
    b["truncated"] = np.zeros(n, bool)
    return b


@pytest.fixture(scope="module")
def gems_demos():
    batch, _ = collect_demos("gems", 256, seed=3, num_envs=8)
    return batch


def cfg(algo="mamql", **kw):
    return LearnerConfig(algo=algo, hidden=TINY, device="cpu", **kw)


@pytest.mark.parametrize("env_name", ["gems", "mpe/simple_spread"])
@pytest.mark.parametrize("algo", ["mamql", "iqlma", "iqlma-joint", "bc"])
def test_every_algo_updates_and_actors_can_load_its_weights(env_name, algo):
    spec = env_spec(env_name)
    rng = np.random.default_rng(0)
    u = make_updater(spec, cfg(algo), "cpu")
    before = {k: v.clone() for k, v in u.policy_weights().items()}
    logs = u.update(random_batch(spec, 16, rng), random_batch(spec, 16, rng))
    assert u.step == 1
    for a in spec.agents:
        assert math.isfinite(logs[f"{a}/loss"])
        if algo != "bc":
            assert f"{a}/q_gap" in logs
    after = u.policy_weights()
    assert set(after) == set(before) and all(k.split("/", 1)[0] in spec.agents for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in after)
    assert all(t.device.type == "cpu" for t in after.values())
    policy = BoltzmannPolicy(build_algo_critics(spec, algo, TINY), mode="greedy")
    policy.load_flat(after)
    acts = policy.act({a: random_batch(spec, 3, rng)[f"obs/{a}"] for a in spec.agents})
    assert all(acts[a].shape == (3,) and (acts[a] < spec.num_actions[a]).all() for a in spec.agents)


@pytest.mark.parametrize("algo", ["mamql", "iqlma", "iqlma-joint", "bc"])
def test_loss_decreases_on_a_fixed_batch(gems_demos, algo):
    spec = env_spec("gems")
    rng = np.random.default_rng(1)
    online = random_batch(spec, 64, rng)
    expert = {k: v[:64] for k, v in gems_demos.items()}
    u = make_updater(spec, cfg(algo), "cpu", seed=1)
    first = u.update(expert, online)
    for _ in range(15):
        last = u.update(expert, online)
    for a in spec.agents:
        assert last[f"{a}/loss"] < first[f"{a}/loss"] - 0.05, (a, first[f"{a}/loss"], last[f"{a}/loss"])
        if algo != "bc":  # the critic ranks the expert's actions above the replay's
            assert last[f"{a}/q_gap"] > first[f"{a}/q_gap"]


def test_weight_decay_defaults_follow_the_paper():
    assert make_updater(env_spec("gems"), cfg(), "cpu").weight_decay == 1e-5
    assert make_updater(env_spec("kitchen"), cfg(), "cpu").weight_decay == 1e-4
    assert make_updater(env_spec("gems"), cfg(weight_decay=0.0), "cpu").weight_decay == 0.0


def test_bad_algo_is_refused():
    with pytest.raises(ValueError, match="algo"):
        make_updater(env_spec("gems"), cfg("sac"), "cpu")


@pytest.mark.parametrize("algo,extra_cfg", [("mamql", {}), ("iqlma", {}), ("iqlma-joint", {}), ("mamql", {"target_tau": 0.1}),
                                            ("bc", {"augment": "symmetry"})])
def test_checkpoint_resume_is_exact(tmp_path, gems_demos, algo, extra_cfg):
    """Train N, save, load into a FRESH updater (other seed), train N more: identical to 2N straight
    (target critics included when learner.target_tau > 0)."""
    spec = env_spec("gems")
    rng = np.random.default_rng(2)
    batches = [({k: v[i * 32:(i + 1) * 32] for k, v in gems_demos.items()}, random_batch(spec, 32, rng)) for i in range(6)]
    straight = make_updater(spec, cfg(algo, **extra_cfg), "cpu", seed=5)
    for e, o in batches[:3]:
        straight.update(e, o)
    path = save_checkpoint(tmp_path / "c.pt", straight, {"note": "x", "step": straight.step})
    assert not list(tmp_path.glob("*.tmp"))
    resumed = make_updater(spec, cfg(algo, **extra_cfg), "cpu", seed=99)
    extra = load_checkpoint(path, resumed)
    assert extra == {"note": "x", "step": 3} and resumed.step == 3
    for k, v in straight.policy_weights().items():
        assert torch.equal(v, resumed.policy_weights()[k])
    for e, o in batches[3:]:
        log_a, log_b = straight.update(e, o), resumed.update(e, o)
        assert log_a == log_b  # same agent order (rng restored), same numbers
    assert resumed.step == straight.step == 6
    for k, v in straight.policy_weights().items():
        assert torch.equal(v, resumed.policy_weights()[k]), k


def test_checkpoint_loads_with_weights_only_and_refuses_other_algo(tmp_path):
    spec = env_spec("gems")
    u = make_updater(spec, cfg("mamql"), "cpu")
    save_checkpoint(tmp_path / "c.pt", u, {"config_json": "{}"})
    raw = torch.load(tmp_path / "c.pt", weights_only=True)  # no pickled objects inside
    assert raw["updater"]["algo"] == "mamql" and raw["extra"]["config_json"] == "{}"
    assert read_checkpoint(tmp_path / "c.pt")["updater"]["step"] == 0
    with pytest.raises(ValueError, match="algo"):
        load_checkpoint(tmp_path / "c.pt", make_updater(spec, cfg("iqlma"), "cpu"))


def test_update_accepts_torch_tensors(gems_demos):
    spec = env_spec("gems")
    u = make_updater(spec, cfg(), "cpu")
    e = {k: torch.as_tensor(v[:16]) for k, v in gems_demos.items()}
    assert isinstance(u, Updater)
    logs = u.update(e, {k: v.clone() for k, v in e.items()})
    assert math.isfinite(logs["agent_0/loss"])


def test_target_critics_trail_the_critics_by_polyak_averaging(gems_demos):
    """target_tau > 0: V(s') comes from a copy that moves tau of the way to the critic per update."""
    spec = env_spec("gems")
    tau = 0.25
    u = make_updater(spec, cfg(target_tau=tau), "cpu", seed=1)
    before = {a: [p.detach().clone() for p in t.parameters()] for a, t in u.targets.items()}
    e = {k: v[:32] for k, v in gems_demos.items()}
    u.update(e, random_batch(spec, 32, np.random.default_rng(0)))
    for a, target in u.targets.items():
        assert all(not p.requires_grad for p in target.parameters())
        for old, t, p in zip(before[a], target.parameters(), u.critics[a].parameters()):
            assert torch.allclose(t, old + tau * (p.detach() - old), atol=1e-6)
            assert not torch.equal(t, p)  # trails, not copies
    assert not make_updater(spec, cfg(), "cpu").targets  # default: no target network (the reference)


def test_chi2_alpha_sets_the_regulariser_strength(gems_demos):
    """learner.chi2_alpha decouples the chi^2 coefficient 1/(4 chi2_alpha) from the temperature."""
    spec = env_spec("gems")
    e = {k: v[:32] for k, v in gems_demos.items()}
    o = random_batch(spec, 32, np.random.default_rng(0))
    tied = make_updater(spec, cfg(alpha=0.5), "cpu", seed=1).update(e, o)
    loose = make_updater(spec, cfg(alpha=0.5, chi2_alpha=1.0), "cpu", seed=1).update(e, o)
    for a in spec.agents:  # same weights and batch: the chi^2 term halves exactly when its alpha doubles
        assert loose[f"{a}/chi2"] == pytest.approx(tied[f"{a}/chi2"] / 2, rel=1e-5)


def test_symmetry_augmentation_changes_the_expert_rows_and_is_refused_where_undefined(gems_demos):
    spec = env_spec("gems")
    e = {k: v[:64] for k, v in gems_demos.items()}
    u = make_updater(spec, cfg(augment="symmetry"), "cpu", seed=1)
    aug = u._augmented(e)
    moved = [not torch.equal(aug["obs/agent_0"][i], torch.as_tensor(e["obs/agent_0"][i])) for i in range(64)]
    assert 30 < sum(moved) < 64  # ~7/8 of the rows get a non-identity transform (some images coincide)
    assert math.isfinite(u.update(e, random_batch(spec, 64, np.random.default_rng(0)))["agent_0/loss"])
    with pytest.raises(ValueError, match="no symmetries"):
        make_updater(env_spec("kitchen"), cfg(augment="symmetry"), "cpu")
    with pytest.raises(ValueError, match="augment"):
        make_updater(spec, cfg(augment="rotate"), "cpu")


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile (inductor) needs a C++ compiler on CPU")
def test_torch_compile_takes_the_same_steps_and_keeps_plain_checkpoints(tmp_path):
    """learner.torch_compile: same seed, same batches -> same losses and weights as eager (inductor on
    CPU); the checkpoint has the plain modules' keys, so it loads into an eager updater."""
    spec = env_spec("mpe/simple_spread")
    rng = np.random.default_rng(0)
    batches = [(random_batch(spec, 32, rng), random_batch(spec, 32, rng)) for _ in range(3)]
    eager = make_updater(spec, cfg(), "cpu", seed=2)
    compiled = make_updater(spec, cfg(torch_compile=True), "cpu", seed=2)
    assert compiled.forwards["agent_0"] is not compiled.critics["agent_0"]
    for e, o in batches:
        le, lc = eager.update(e, o), compiled.update(e, o)
        assert lc["agent_0/loss"] == pytest.approx(le["agent_0/loss"], rel=1e-4, abs=1e-5)
    for k, v in eager.policy_weights().items():
        assert torch.allclose(compiled.policy_weights()[k], v, atol=1e-5), k
    path = save_checkpoint(tmp_path / "c.pt", compiled)
    fresh = make_updater(spec, cfg(), "cpu", seed=9)
    load_checkpoint(path, fresh)
    assert fresh.step == 3 and all(torch.equal(fresh.policy_weights()[k], v) for k, v in compiled.policy_weights().items())
