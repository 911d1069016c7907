"""Learner checkpoints as experts (`--expert checkpoint:PATH`): real `mamql` subprocesses on a tiny
MAMQL checkpoint trained by `mamql train --steps 2`, and the sampling temperature in process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mamql.config import ConfigError, InputError, load_config, validate, with_updates
from mamql.envs.experts import describe_expert, make_expert
from mamql.envs.vector import VectorEnv
from mamql.learner.checkpoint import CheckpointError
from mamql.learner.demos import load_demos
from mamql.learner.policy import CheckpointExpert


def mamql(cwd: Path, *argv: str, timeout: float = 240.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mamql.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mamql {command}: error: "), output
    for fragment in fragments:
        assert fragment in lines[0], output
    assert "weights_only" not in output, output
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A 2-update MAMQL checkpoint on Gems with a small MLP critic."""
    root = tmp_path_factory.mktemp("expert")
    out = ok(mamql(root, "train", "--env", "gems", "--steps", "2", "--expert-transitions", "100", "--run-name", "e",
                   "--no-progress", "--set", "learner.network=mlp", "--set", "learner.hidden=[16]",
                   "--set", "learner.seed_transitions=32", "--set", "learner.batch_size=16",
                   "--set", "learner.eval_episodes=1", "--set", "learner.gamma=0.9"))
    path = root / json.loads(out.strip().splitlines()[-1])["checkpoint"]
    assert path.is_file()
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demos_collect_records_the_expert_and_evaluate_scores_its_implied_reward(ckpt, tmp_path):
    out = json.loads(ok(mamql(tmp_path, "demos", "collect", "--expert", f"checkpoint:{ckpt}", "--temperature", "0.5",
                              "--transitions", "90", "--num-envs", "2", "--out", "d.npz")))
    _, meta = load_demos(tmp_path / "d.npz")
    for summary in (out, meta):
        expert = summary["expert"]
        assert expert["kind"] == "checkpoint" and expert["checkpoint"] == str(ckpt)
        assert expert["sha256"] == sha256(ckpt) and expert["alpha"] == 0.5 and expert["gamma"] == pytest.approx(0.9)
        assert summary["gamma"] == pytest.approx(0.9)  # the demos are for the checkpoint's discount
    # the expert scored against itself: the yardstick equals the learned figures, row for row
    rep = json.loads(ok(mamql(tmp_path, "evaluate", "--checkpoint", str(ckpt), "--expert-checkpoint", str(ckpt),
                              "--demos", "d.npz", "--episodes", "1", "--recovery-rows", "64")))
    assert rep["expert_checkpoint"]["sha256"] == sha256(ckpt)
    assert set(rep["expert_reward_recovery"]) == {"agent_0", "agent_1"}
    assert json.dumps(rep["expert_reward_recovery"]) == json.dumps(rep["reward_recovery"])  # NaN-safe equality


def test_collect_and_envs_play_with_a_checkpoint_expert(ckpt, tmp_path):
    ok(mamql(tmp_path, "collect", "--expert", f"checkpoint:{ckpt}", "--temperature", "0.5", "--episodes", "2",
             "--actors", "1", "--num-envs", "2", "--out", "ds", "--no-progress"))
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    expert = manifest["expert"]
    assert expert["kind"] == "checkpoint" and expert["mode"] == "expert" and expert["policy_version"] == -1
    assert expert["sha256"] == sha256(ckpt) and expert["alpha"] == 0.5 and expert["learner_alpha"] == 1.0
    assert expert["gamma"] == pytest.approx(0.9) and manifest["gamma"] == pytest.approx(0.9)
    assert manifest["counts"]["episodes"] == 2
    info = ok(mamql(tmp_path, "dataset", "info", "ds"))
    assert f"expert: checkpoint {ckpt}" in info and sha256(ckpt)[:12] in info and "alpha 0.5" in info
    # one dataset, one expert: resuming at another temperature is refused before anything starts
    one_line_error(mamql(tmp_path, "collect", "--expert", f"checkpoint:{ckpt}", "--temperature", "0.7",
                         "--episodes", "4", "--out", "ds", "--resume"), "collect", "one dataset holds one expert")

    play = ok(mamql(tmp_path, "envs", "play", "--expert", f"checkpoint:{ckpt}", "--episodes", "2", "--quiet"))
    assert f"expert: checkpoint {ckpt} (mamql step 2, sample at alpha 1" in play and "mean over 2 episodes" in play


def test_one_actor_collection_is_the_same_dataset_every_time(ckpt, tmp_path):
    """With --actors 1 the sampled expert's dataset is a function of env.seed and the checkpoint (what
    lets a lost dataset be collected again); several actors race to the target, so theirs is not."""
    from mamql.replay.dataset import load_dataset

    batches = []
    for out in ("a", "b"):
        ok(mamql(tmp_path, "collect", "--expert", f"checkpoint:{ckpt}", "--transitions", "120", "--actors", "1",
                 "--num-envs", "3", "--out", out, "--no-progress"))
        batches.append(load_dataset(tmp_path / out))
    assert set(batches[0]) == set(batches[1]) and len(batches[0]["done"]) >= 120
    for key, value in batches[0].items():
        np.testing.assert_array_equal(value, batches[1][key], err_msg=key)
    assert len(np.unique(batches[0]["action/agent_0"])) > 1  # it sampled: the equality is not a constant policy's


def test_wrong_env_and_bad_files_are_one_line(ckpt, tmp_path):
    one_line_error(mamql(tmp_path, "envs", "play", "--env", "kitchen", "--expert", f"checkpoint:{ckpt}"),
                   "envs play", "trained on env 'gems', not 'kitchen'")
    one_line_error(mamql(tmp_path, "collect", "--env", "kitchen", "--expert", f"checkpoint:{ckpt}", "--episodes",
                         "1", "--out", "ds"), "collect", "trained on env 'gems', not 'kitchen'")
    assert not (tmp_path / "ds").exists() and not (tmp_path / "runs").exists()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    one_line_error(mamql(tmp_path, "demos", "collect", "--expert", f"checkpoint:{cut}", "--out", "d.npz"),
                   "demos collect", f"{cut} is not a valid checkpoint")
    assert not (tmp_path / "d.npz").exists()
    one_line_error(mamql(tmp_path, "evaluate", "--checkpoint", str(ckpt), "--expert-checkpoint", str(cut),
                         "--demos", str(cut)), "evaluate")


def test_checkpoint_expert_in_process(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="does not fit env 'gems'"):  # same env, other shapes
        CheckpointExpert(str(ckpt), "gems", {"size": 9})
    with pytest.raises(CheckpointError, match="does not exist"):
        describe_expert("gems", f"checkpoint:{tmp_path / 'x.pt'}")
    with open(tmp_path / "arrays.pt", "wb") as f:  # a zip archive, but not torch.save's
        np.savez(f, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="arrays.pt is not a valid checkpoint"):
        describe_expert("gems", f"checkpoint:{tmp_path / 'arrays.pt'}")
    # config: a missing file is caught by validate (no torch), the temperature must not be negative
    config = load_config()
    with pytest.raises(ConfigError, match="actor.expert: expert checkpoint .* does not exist"):
        validate(with_updates(config, actor={"mode": "expert", "expert": f"checkpoint:{tmp_path / 'x.pt'}"}))
    with pytest.raises(InputError, match="expert_temperature"):
        validate(with_updates(config, actor={"expert": f"checkpoint:{ckpt}", "expert_temperature": -1.0}))
    validate(with_updates(config, actor={"mode": "expert", "expert": f"checkpoint:{ckpt}"}))


def _entropy(policy, obs: dict, repeats: int) -> float:
    """Mean per-state entropy (nats) of the actions sampled on the same states."""
    tiled = {a: np.repeat(o, repeats, axis=0) for a, o in obs.items()}
    acts = policy.act(tiled)["agent_0"].reshape(len(obs["agent_0"]), repeats)
    out = []
    for row in acts:
        p = np.bincount(row, minlength=5) / repeats
        out.append(-(p[p > 0] * np.log(p[p > 0])).sum())
    return float(np.mean(out))


def test_temperature_sets_the_sampling(ckpt):
    env = VectorEnv("gems", 4, seed=3)
    obs = env.reset()
    for _ in range(5):
        obs = env.step({a: np.zeros(4, np.int64) for a in env.agents}).obs
    env.close()
    default = make_expert("gems", f"checkpoint:{ckpt}", seed=0)
    assert default.alpha == 1.0 and default.mode == "sample"  # the checkpoint's learner.alpha
    q = default.action_values(obs)["agent_0"]
    top2 = np.sort(q, axis=1)[:, -2:]
    gap = float((top2[:, 1] - top2[:, 0]).min())
    assert gap > 0  # each state has one best action, or no temperature could make the policy greedy
    hot = _entropy(make_expert("gems", f"checkpoint:{ckpt}", seed=0, temperature=1.0), obs, 2000)
    cold_alpha = gap / 20  # the best action leads by >= 20 nats: all but greedy
    cold = _entropy(make_expert("gems", f"checkpoint:{ckpt}", seed=0, temperature=cold_alpha), obs, 2000)
    greedy = make_expert("gems", f"checkpoint:{ckpt}", seed=0, greedy=True)
    assert cold < 0.05 < hot - 0.1
    assert _entropy(greedy, obs, 10) == 0.0
    assert (greedy.act(obs)["agent_0"] == q.argmax(axis=1)).all()
