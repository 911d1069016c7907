"""A user's own PettingZoo ParallelEnv (tests/envs/corridor_env.py), given only as
`--env corridor_env:CorridorEnv`, through every command as a real subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pettingzoo.test import parallel_api_test

from corridor_env import CorridorEnv

from mamql import envs
from mamql.cli import main
from mamql.learner.demos import load_demos
from mamql.learner.networks import build_critics

SPEC = "corridor_env:CorridorEnv"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_corridor_is_a_plain_parallel_env_and_mamql_describes_it():
    parallel_api_test(CorridorEnv(), num_cycles=40)
    assert not hasattr(CorridorEnv(), "max_steps")  # before: env_spec failed with AttributeError
    spec = envs.env_spec(SPEC, max_cycles=6)
    assert spec.name == SPEC and spec.agents == ("agent_0", "agent_1")
    assert spec.obs_shape == {"agent_0": (10,), "agent_1": (10,)} and spec.obs_dtype["agent_0"] == "float32"
    assert spec.num_actions == {"agent_0": 3, "agent_1": 3} and spec.max_steps == 0


def test_linear_critic_is_a_q_table():
    spec = envs.env_spec(SPEC)
    critic = build_critics(spec, network="linear")["agent_0"]
    assert sum(p.numel() for p in critic.parameters()) == 10 * 3 + 3
    default = build_critics(spec)["agent_0"]  # learner.hidden=() still means the default MLP
    assert sum(p.numel() for p in default.parameters()) > 10 * 256


@pytest.mark.parametrize("argv, message", [
    (["envs", "play", "--env", "corridor_env:NoSuchEnv"], "module 'corridor_env' has no attribute 'NoSuchEnv'"),
    (["envs", "play", "--env", "no_such_module:Env"], "cannot import module 'no_such_module'"),
    (["envs", "play", "--env", SPEC], "has no scripted expert (envs with one: gems, kitchen); use --expert random"),
    (["envs", "play", "--env", "mpe/simple_spread"], "has no scripted expert"),
    (["local", "--env", SPEC], "has no scripted expert"),
    (["local", "--set", f"env.name={SPEC}"], "has no scripted expert"),  # env from the config, not --env
    (["train", "--env", SPEC, "--steps", "1"], "has no scripted expert"),
    (["train", "--env", SPEC, "--set", "learner.network=conv"], "learner.network must be one of default, mlp, linear"),
])
def test_bad_env_or_expert_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # refused before any run directory


def mamql(*args, cwd):
    env = {"PYTHONPATH": f"{HERE}{':'}{ROOT}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "mamql.cli", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=240, env=env)
    assert p.returncode == 0, f"mamql {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


def test_every_command_runs_the_custom_env(tmp_path):
    env_set = ["--set", "env.kwargs={max_cycles: 6}"]
    demos = tmp_path / "demos.npz"
    p = mamql("demos", "collect", "--env", SPEC, "--expert", "random", "--transitions", "120", "--num-envs", "4",
              "--out", str(demos), cwd=tmp_path)
    assert json.loads(p.stdout)["transitions"] == 120

    mamql("collect", "--env", SPEC, "--expert", "random", "--episodes", "6", "--actors", "1", "--num-envs", "2",
          "--out", str(tmp_path / "dataset"), "--no-progress", *env_set, "--set", f"run.root={tmp_path}", cwd=tmp_path)
    assert list((tmp_path / "dataset").iterdir())

    learner = ["--set", "learner.network=linear", "--set", "learner.batch_size=16", "--set", "learner.torch_threads=1",
               "--set", "learner.seed_transitions=32", "--set", "learner.eval_episodes=2", "--set", "learner.log_every=2",
               "--set", "learner.checkpoint_every=2", "--set", "actor.num_envs=2", "--set", f"run.root={tmp_path}"]
    p = mamql("train", "--env", SPEC, "--demos", str(demos), "--steps", "4", "--run-name", "t", "--no-progress",
              *learner, *env_set, cwd=tmp_path)
    assert json.loads(p.stdout.strip().splitlines()[-1])["step"] == 4
    ckpt = tmp_path / "t" / "checkpoints" / "learner_00000004.pt"
    p = mamql("evaluate", "--checkpoint", str(ckpt), "--episodes", "2", "--demos", str(demos),
              "--recovery-rows", "100", cwd=tmp_path)
    ev = json.loads(p.stdout)
    assert ev["env"] == SPEC and set(ev["greedy"]["mean_return"]) == {"agent_0", "agent_1"}
    assert ev["greedy"]["mean_length"] == 6  # the env's own truncation (env.kwargs reached it) ends episodes

    # local collects its own random demos, on the run's env.kwargs: no limit of the env's own, mamql's instead
    limit_set = ["--set", "env.kwargs={max_cycles: 1000, max_episode_steps: 5}"]
    mamql("local", "--env", SPEC, "--expert", "random", "--expert-transitions", "120", "--actors", "1", "--steps", "6",
          "--run-name", "l", "--status-every", "1", *learner, "--set", "weights.publish_every=2",
          "--set", "actor.send_batch_size=16", "--set", "replay.tables=[{name: online, capacity: 2000, min_size_to_sample: 32}]",
          *limit_set, cwd=tmp_path)
    local_demos, _ = load_demos(tmp_path / "l" / "demos.npz")
    assert local_demos["truncated"].any()  # 120 rows over 16 envs: only max_episode_steps=5 can truncate
    steps = [json.loads(line).get("step") for line in (tmp_path / "l" / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 6  # the learner finished its updates
    status = [json.loads(line) for line in (tmp_path / "l" / "status.jsonl").read_text().splitlines()]
    assert status[-1]["episodes"] > 0  # the actor played the corridor


def test_soft_q_needs_no_expert_so_an_env_without_one_is_accepted(tmp_path):
    from mamql.cli import build_parser, check_args
    from mamql.local import resolve

    args = build_parser().parse_args(["local", "--algo", "soft-q", "--env", SPEC, "--set", f"run.root={tmp_path}"])
    check_args(args)  # no "has no scripted expert"
    config, run_dir = resolve(args)
    assert config.learner.algo == "soft-q" and run_dir.is_dir()
