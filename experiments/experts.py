"""`mamql experts train --env gems`: train and save an env's reference soft-optimal expert.

The expert is a `learner.algo=soft-q` checkpoint (forward soft-Q learning on each agent's own env
reward, acting by Boltzmann(Q/alpha)), trained by the single-process Trainer from a config committed
next to this file (experiments/experts/<env>.yaml, `/` in the env name as `-`): the config and seed
regenerate the same expert (on CPU a run is deterministic given its seed). Progress lines go to
stderr; stdout gets ONE JSON line at the end: checkpoint, wall time, final greedy and sampled return
per agent, and the mean entropy of the Boltzmann policy on the states the sampled policy visited in
its evaluation episodes.

`mamql experts export CHECKPOINT --out PATH` writes the checkpoint's acting weights only (no optimizer
moments, no target critics: a third of the size). The Gems expert, whose regeneration takes 1.5 hours
on 2 CPU cores, is committed that way as experiments/experts/gems.pt.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

CONFIG_DIR = Path(__file__).resolve().parent / "experts"
MAX_ENTROPY_STATES = 50_000  # bounds the memory of the recorded eval states


def committed_config(env: str) -> Path:
    """experiments/experts/<env>.yaml, or an InputError naming the envs that have one."""
    from mamql.config import InputError

    path = CONFIG_DIR / f"{env.replace('/', '-')}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise InputError(f"no committed expert config for env {env!r} ({path}); have: {', '.join(have)}; "
                         "pass --config FILE")
    return path


class _Recorder:
    """Wraps a BoltzmannPolicy: acts exactly like it and keeps (up to a bound) the Q-values of the
    states it acted on, so the entropy is measured on the states the policy itself visits."""

    def __init__(self, policy: Any, limit: int = MAX_ENTROPY_STATES):
        self.policy, self.limit, self.q, self.rows = policy, limit, {}, 0

    def act(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.rows < self.limit:
            for agent, q in self.policy.action_values(obs).items():
                self.q.setdefault(agent, []).append(q)
            self.rows += len(next(iter(obs.values())))
        return self.policy.act(obs)


def boltzmann_entropy(q: np.ndarray, alpha: float) -> np.ndarray:
    """H(softmax(q / alpha)) in nats, per row of q [N, A]."""
    z = q / alpha
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -(np.exp(logp) * logp).sum(axis=1)


def final_evaluation(updater: Any, config: Any, episodes: int) -> dict[str, Any]:
    """Greedy and sampled returns over `episodes` fixed-seed episodes, and the policy's entropy."""
    from mamql.learner.evaluate import policy_from, run_episodes

    alpha = updater.alpha
    out: dict[str, Any] = {}
    for mode in ("greedy", "sample"):
        policy = policy_from(updater, mode)
        recorder = _Recorder(policy) if mode == "sample" else policy
        res = run_episodes(recorder, config.env.name, episodes, env_kwargs=config.env.kwargs)
        out[mode] = {"mean_return": res["mean_return"], "std_return": res["std_return"],
                     "mean_return_all_agents": float(np.mean(list(res["mean_return"].values()))),
                     "mean_length": res["mean_length"], "episodes": res["episodes"]}
    # the yardstick beside them: uniform random play over the same fixed-seed episodes
    from mamql.envs.experts import make_expert

    res = run_episodes(make_expert(config.env.name, kind="random", seed=config.run.seed, **config.env.kwargs),
                       config.env.name, episodes, env_kwargs=config.env.kwargs)
    out["random"] = {"mean_return": res["mean_return"], "mean_return_all_agents": float(np.mean(list(res["mean_return"].values())))}
    per_agent = {a: float(boltzmann_entropy(np.concatenate(qs), alpha).mean()) for a, qs in recorder.q.items()}
    num_actions = next(iter(recorder.q.values()))[0].shape[1]
    out["entropy"] = {
        "per_agent": per_agent,
        "mean": float(np.mean(list(per_agent.values()))),
        "max": math.log(num_actions),
        "states": recorder.rows,
        "how": f"nats; mean over the states the sampled policy acted on in its {episodes} evaluation episodes "
               f"(every vector-env step until each copy finished its first episode, at most "
               f"{MAX_ENTROPY_STATES} states) of H(softmax(Q_i(s, .) / alpha)), alpha = learner.alpha = {alpha}",
    }
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _shown(path: str) -> str:
    """A path relative to the working directory where it is under it (the committed config's, from the repo)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _progress_trainer(config: Any, run_dir: Path, resume: bool = False):
    """A Trainer that also prints each metrics record as one progress line on stderr."""
    from mamql.learner.trainer import Trainer

    class ProgressTrainer(Trainer):
        def _log(self, record: dict) -> None:
            super()._log(record)
            step = record.get("step")
            if record.get("event") == "eval":
                parts = [f"{mode} " + "/".join(f"{record[f'eval/{mode}/{a}']:.2f}" for a in self.agents)
                         for mode in ("greedy", "sample")]
                print(f"step {step}: eval return per agent: {', '.join(parts)}", file=sys.stderr, flush=True)
            elif "rollout_return" in record:
                rets = [record.get(f"rollout_return/{a}") for a in self.agents]
                shown = "/".join(f"{r:.2f}" for r in rets) if None not in rets else "-"
                print(f"step {step}: rollout return per agent {shown}, {record['updates_per_s']:.1f} updates/s",
                      file=sys.stderr, flush=True)

    return ProgressTrainer(config, None, run_dir, resume=resume, progress=False)


def train_expert(args: argparse.Namespace) -> int:
    from mamql.cli import config_from_args, make_run_dir
    from mamql.config import InputError

    if args.eval_episodes < 1:
        raise InputError(f"--eval-episodes must be >= 1, got {args.eval_episodes}")
    if args.resume and not args.config:  # continue with the run's own config (its --set overrides included)
        if not args.run_name:
            raise InputError("--resume needs the name of the run to continue (--run-name)")
        from mamql.config import Config

        saved = Path(args.out or Config().run.root) / args.run_name / "config.yaml"
        if saved.is_file():
            args.config = str(saved)
    if not args.config:
        if not args.env:
            raise InputError("give --env (its committed config is used) or --config FILE")
        args.config = str(committed_config(args.env))
    flags = {"env": "env.name", "steps": "learner.steps", "run_name": "run.name", "seed": "run.seed", "out": "run.root"}
    config = config_from_args(args, flags)
    if config.learner.algo != "soft-q":
        raise InputError(f"an expert is trained with learner.algo=soft-q, the config says {config.learner.algo!r}")
    if config.learner.steps < 1:  # no update, no checkpoint: nothing to call an expert
        raise InputError(f"learner.steps must be >= 1 for an expert, got {config.learner.steps}")
    config, run_dir = make_run_dir(config, "expert", resume=args.resume)
    print(f"mamql experts train: {config.env.name}, config {args.config}, run directory {run_dir}",
          file=sys.stderr, flush=True)
    t0 = time.monotonic()
    trainer = _progress_trainer(config, run_dir, resume=args.resume)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer's own eval lines: stdout is the JSON's
            result = trainer.train()
        train_s = time.monotonic() - t0
        final = final_evaluation(trainer.updater, config, args.eval_episodes)
    finally:
        trainer.close()
    ckpt = Path(result["checkpoint"])
    record = {
        "env": config.env.name, "config": _shown(args.config), "overrides": list(args.overrides), "seed": config.run.seed,
        "steps": result["step"], "checkpoint": str(ckpt), "sha256": _sha256(ckpt),
        "expert": f"checkpoint:{ckpt}", "alpha": config.learner.alpha, "gamma": config.learner.gamma,
        "train_wall_s": round(train_s, 1), "wall_s": round(time.monotonic() - t0, 1),
        "eval_episodes": args.eval_episodes, **final,
    }
    (run_dir / "expert.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record), flush=True)
    return 0


def export_expert(args: argparse.Namespace) -> int:
    """Prints one JSON line: the exported file, its size and sha256, and the source's."""
    from mamql.learner.checkpoint import export_acting_checkpoint
    from mamql.learner.policy import CheckpointExpert

    if Path(args.out).resolve() == Path(args.checkpoint).resolve():
        from mamql.config import InputError

        raise InputError("--out must differ from the checkpoint: the export never overwrites its source")
    source = CheckpointExpert(args.checkpoint)  # one CheckpointError line for a file that is not an expert
    record = export_acting_checkpoint(args.checkpoint, args.out)
    exported = CheckpointExpert(args.out)
    record.update(env=exported.env, alpha=exported.alpha, gamma=exported.gamma, expert=f"checkpoint:{args.out}")
    if source.env != exported.env or source.step != exported.step:
        raise RuntimeError(f"{args.out} does not read back as {args.checkpoint}")
    print(json.dumps(record), flush=True)
    return 0


def register(experts_sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args

    tr = experts_sub.add_parser(
        "train", help="train and save an env's reference soft-optimal expert (soft-q) from its committed config; "
        "prints one JSON line",
        epilog="examples:\n  mamql experts train --env gems\n"
               "  mamql experts train --env gems --steps 5000 --eval-episodes 16 --run-name gems-expert-short\n"
               "  mamql experts train --run-name gems-expert-short --steps 30000 --resume")
    add_config_args(tr)  # default --config: experiments/experts/<env>.yaml
    tr.add_argument("--env", default=None, help="env.name; its config is experiments/experts/<env>.yaml "
                    "(mpe/x as mpe-x) unless --config is given")
    tr.add_argument("--steps", type=int, default=None, help="soft-q updates (learner.steps; default: the config's)")
    tr.add_argument("--seed", type=int, default=None, help="run.seed: networks, envs and sampling")
    tr.add_argument("--out", default=None, help="run.root: the run directory is OUT/<run name> (default runs/)")
    tr.add_argument("--run-name", default=None, help="run.name (default expert-<env>-<time>-<random>)")
    tr.add_argument("--resume", action="store_true",
                    help="continue run --run-name from its newest checkpoint up to --steps (the run's own config; "
                    "replay and rollout state start afresh)")
    tr.add_argument("--eval-episodes", type=int, default=64, help="final evaluation episodes per mode (greedy, sampled)")
    tr.set_defaults(func=train_expert)

    ex = experts_sub.add_parser(
        "export", help="write a checkpoint's acting weights only (no optimizer moments or target critics), "
        "to commit or ship an expert; prints one JSON line",
        epilog="example:\n  mamql experts export runs/soft-expert-gems-guided-s0-30k/checkpoints/learner_00030000.pt "
               "--out experiments/experts/gems.pt")
    ex.add_argument("checkpoint", help="a learner checkpoint (runs/NAME/checkpoints/learner_<step>.pt)")
    ex.add_argument("--out", required=True, help="the file to write (it acts as `--expert checkpoint:OUT`)")
    ex.set_defaults(func=export_expert)
