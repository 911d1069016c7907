"""`mamql train`, `mamql evaluate` and `mamql demos collect`: single-process training and its tools.

Every command takes `--config FILE` and `--set section.key=value`; the flags below are shortcuts
for the common config keys (a flag, when given, wins over the file and --set).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args
    from mamql.envs.experts import add_checkpoint_expert_args
    from mamql.config import ALGOS

    train = sub.add_parser(
        "train", help="train MAMQL / IQL-MA / BC from demos, or soft-Q from rewards, in one process "
        "(envs + replay + learner)",
        epilog="examples:\n  mamql train --env gems --steps 2000\n"
               "  mamql train --env gems --demos demos.npz --algo bc --steps 2000 --run-name gems-bc\n"
               "  mamql train --env gems --algo soft-q --steps 2000")
    add_config_args(train)
    train.add_argument("--env", default=None,
                       help="env.name: a name from `mamql envs list`, or package.module:ClassOrFactory")
    train.add_argument("--demos", default=None, metavar="PATH", help="expert demos .npz (mamql demos collect); "
                       "without it --expert-transitions are collected first and saved in the run dir")
    train.add_argument("--expert-transitions", type=int, default=None,
                       help="demos to collect when --demos is absent (learner.expert_transitions)")
    train.add_argument("--algo", choices=list(ALGOS), default=None,
                       help="learner.algo (soft-q: forward soft-Q learning from the env's rewards, no demos)")
    train.add_argument("--steps", type=int, default=None, help="total learner updates, resume included (learner.steps)")
    train.add_argument("--run-name", default=None, help="run.name: writes runs/<name>/ (default: a new unique name)")
    train.add_argument("--seed", type=int, default=None, help="run.seed: networks, sampling and demo collection")
    train.add_argument("--gamma", type=float, default=None,
                       help="learner.gamma, the discount (warned about when the demos say they were made for another)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run --run-name from runs/<name>/checkpoints' newest, with the run's own config "
                            "(its config.yaml; --set and flags still apply) and the demos it was given")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    train.set_defaults(func=_train)

    ev = sub.add_parser(
        "evaluate", help="returns and reward recovery of a learner checkpoint (JSON)",
        description="Mean returns per agent of a learner checkpoint, greedy and sampled, and how well its "
                    "recovered reward matches the env's on demo rows; prints one JSON object.",
        epilog="examples:\n  mamql evaluate --run runs/NAME\n"
               "  mamql evaluate --checkpoint runs/NAME/checkpoints/learner/latest.pt --demos demos.npz --episodes 64\n"
               "  mamql evaluate --run runs/NAME --expert-checkpoint runs/EXPERT/checkpoints/learner_00020000.pt")
    which = ev.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", default=None, metavar="DIR",
                       help="a run directory (mamql local or train): its newest learner checkpoint and its demos")
    which.add_argument("--checkpoint", default=None, metavar="PATH", help="a learner checkpoint (.pt)")
    ev.add_argument("--episodes", type=int, default=32, help="episodes per mode, greedy and sampled")
    ev.add_argument("--demos", default=None, metavar="PATH", help="demos for reward recovery (default: the run's own: the file "
                    "`mamql local --demos` was given, or demos.npz in the run directory)")
    ev.add_argument("--recovery-rows", type=int, default=4096,
                    help="demo rows of the secondary raw (not shaping-invariant) reward fit")
    ev.add_argument("--recovery-states", type=int, default=256,
                    help="states the demonstrators visit on which rewards are compared shaping-invariantly "
                         "(every action at each, successors from the env's simulator)")
    ev.add_argument("--recovery-method", choices=["auto", "dard", "epic"], default="auto",
                    help="the shaping-invariant comparison: dard (the env's simulator), epic (demo rows, Gems only); "
                         "auto: dard when the env can restore a state")
    ev.add_argument("--bc-checkpoint", default=None, metavar="PATH",
                    help="a BC checkpoint on the same demos: its log-policy is scored as a reward-recovery yardstick")
    ev.add_argument("--seed", type=int, default=None,
                    help="seed of the eval episodes (default: a fixed one no training env uses)")
    ev.add_argument("--expert-checkpoint", default=None, metavar="PATH", help="the checkpoint of the expert that "
                    "played the demos: its own implied reward Q_E - gamma V_E(s') is scored on the same rows "
                    "(expert_reward_recovery), the yardstick for the learned one")
    ev.set_defaults(func=_evaluate)

    demos = sub.add_parser("demos", help="expert demonstrations")
    demos_sub = demos.add_subparsers(dest="demos_command", metavar="ACTION", required=True)
    col = demos_sub.add_parser(
        "collect", help="collect expert transitions into one .npz",
        epilog="examples:\n  mamql demos collect --env gems --transitions 20000 --out demos.npz\n"
               "  mamql demos collect --env kitchen --expert checkpoint:runs/NAME/checkpoints/learner/latest.pt "
               "--temperature 0.1 --out kitchen-demos.npz\n"
               "  mamql demos collect --env gems --expert random --transitions 5000 --out random.npz")
    add_config_args(col)  # env.name and env.kwargs (e.g. max_episode_steps) come from the config too
    col.add_argument("--env", default=None,
                     help="env.name: a name from `mamql envs list`, or package.module:ClassOrFactory (default: gems)")
    add_checkpoint_expert_args(col)
    col.add_argument("--transitions", type=int, default=20_000,
                     help="rows written: whole episodes are played until there are this many, then cut to it")
    col.add_argument("--out", required=True, metavar="PATH", help="the .npz file to write (docs/datasets.md)")
    col.add_argument("--seed", type=int, default=0, help="seed of the envs and the expert")
    col.add_argument("--epsilon", type=float, default=0.0,
                     help="probability of a uniformly random action instead of the expert's, per agent and step")
    col.add_argument("--num-envs", type=int, default=16, help="env copies stepped together")
    col.set_defaults(func=_collect)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mamql.learner.demos import collect_demos, load_demos, save_demos
    from mamql.cli import config_from_args, make_run_dir
    from mamql.config import load_config
    from mamql.learner.evaluate import recorded_demos

    if args.resume and args.run_name and not args.config:  # continue with the run's own config (its --set included)
        saved = Path(load_config(None, args.overrides).run.root) / args.run_name / "config.yaml"
        if saved.is_file():
            args.config = str(saved)
    config = config_from_args(args, {"env": "env.name", "algo": "learner.algo", "steps": "learner.steps",
                                     "expert_transitions": "learner.expert_transitions", "run_name": "run.name",
                                     "seed": "run.seed", "gamma": "learner.gamma"})
    if config.learner.algo == "soft-q":
        return _train_soft_q(args, config)
    if args.demos:  # check the demos before a run directory exists
        demos, meta = load_demos(args.demos)
        if meta.get("env") and meta["env"] != config.env.name:
            print(f"mamql train: demos are for env {meta['env']!r}, training on {config.env.name!r}", file=sys.stderr)
            return 2
    elif not (args.resume and config.run.name != "default"):  # demos will be collected: a scripted expert?
        from mamql.envs.experts import check_expert

        check_expert(config.env.name, "scripted")
    config, run_dir = make_run_dir(config, "train", resume=args.resume)
    saved, record = run_dir / "demos.npz", run_dir / "train.json"
    recorded = recorded_demos(record) if args.resume and not args.demos else None
    if recorded is not None and not recorded.exists():
        recorded = None
    if args.demos:  # loaded and checked above; recorded so that `evaluate --run` and --resume find them
        record.write_text(json.dumps({"demos": str(Path(args.demos).resolve())}) + "\n")
    elif recorded is not None:  # --resume of a run given --demos: the same demos
        args.demos = str(recorded)
        demos, meta = load_demos(recorded)
    elif saved.exists():  # --resume: the run's own demos
        demos, meta = load_demos(saved)
    else:
        n = config.learner.expert_transitions
        print(f"collecting {n} expert transitions for {config.env.name} ...", file=sys.stderr)
        demos, meta = collect_demos(config.env.name, n, seed=config.run.seed, env_kwargs=config.env.kwargs)
        save_demos(saved, demos, meta)
        print(f"expert: {json.dumps(meta['mean_return'])} mean return per agent -> {saved}", file=sys.stderr)
    return _run_trainer(args, config, run_dir, demos, meta, demos_path=str(Path(args.demos) if args.demos else saved))


def _run_trainer(args: argparse.Namespace, config, run_dir, demos, meta=None, demos_path: str | None = None) -> int:
    """Train in `run_dir` and print the final JSON line (shared by the demo algos and soft-q)."""
    from mamql.learner.trainer import Trainer

    print(f"mamql train: run directory {run_dir}", file=sys.stderr)
    try:
        trainer = Trainer(config, demos, run_dir, resume=args.resume, progress=not args.no_progress, demos_meta=meta)
    except (FileNotFoundError, ValueError) as exc:  # --resume of a run without a checkpoint, or of another algo's
        print(f"mamql train: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = trainer.train()
    finally:
        trainer.close()
    if demos_path is not None:
        result["demos"] = demos_path
    print(json.dumps(result))
    return 0


def _train_soft_q(args: argparse.Namespace, config) -> int:
    """soft-q learns from the env's own rewards: no demos to load or collect."""
    from mamql.config import InputError
    from mamql.cli import make_run_dir

    if args.demos:
        raise InputError("--algo soft-q learns from the env's rewards and takes no --demos")
    config, run_dir = make_run_dir(config, "train", resume=args.resume)
    return _run_trainer(args, config, run_dir, None)


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mamql.learner.demos import load_demos
    from mamql.config import InputError
    from mamql.learner.evaluate import (EVAL_SEED, config_from_extra, load_bc_updater, load_expert_updater, load_updater,
                                        policy_from, recovery_report, run_checkpoint, run_demos, run_dir_of, run_episodes)

    checkpoint = run_checkpoint(args.run) if args.run else Path(args.checkpoint)
    updater, extra = load_updater(checkpoint)
    config = config_from_extra(extra)
    # a checkpoint outside any run directory: demos.npz two levels up, where `mamql train` keeps them
    run_dir = Path(args.run) if args.run else run_dir_of(checkpoint) or checkpoint.resolve().parent.parent
    demos_path = Path(args.demos) if args.demos else run_demos(run_dir)
    if args.demos and not demos_path.exists():
        raise InputError(f"--demos {args.demos} does not exist")
    expert = None
    if args.expert_checkpoint:  # checked before any episode runs
        if demos_path is None or not demos_path.exists():
            raise InputError("--expert-checkpoint scores reward recovery on demos: no --demos given and none "
                             f"found with the run ({run_dir})")
        expert = load_expert_updater(args.expert_checkpoint, config.env.name)
    bc = load_bc_updater(args.bc_checkpoint, config.env.name) if args.bc_checkpoint else None
    seed = EVAL_SEED if args.seed is None else args.seed
    out: dict = {"checkpoint": str(checkpoint), "env": config.env.name, "algo": updater.algo, "step": updater.step}
    for mode in ("greedy", "sample"):
        res = run_episodes(policy_from(updater, mode, seed=seed), config.env.name, args.episodes, seed, config.env.kwargs)
        out[mode] = res
    if demos_path is not None and demos_path.exists():
        demos, meta = load_demos(demos_path)
        out.update(recovery_report(updater, config.env.name, config.env.kwargs, demos, meta, expert=expert, bc=bc,
                                   expert_checkpoint=args.expert_checkpoint, states=args.recovery_states,
                                   raw_rows=args.recovery_rows, method=args.recovery_method))
        out["demos"] = str(demos_path)
        if expert is not None:
            out["expert_checkpoint"] = expert[1]
    else:
        out["reward_recovery_skipped"] = (f"no demos found with the run ({run_dir}): pass --demos PATH, the demos it "
                                          "learned from, for reward recovery")
        print(f"mamql evaluate: {out['reward_recovery_skipped']}", file=sys.stderr)
    print(json.dumps(out, indent=2))
    return 0


def _collect(args: argparse.Namespace) -> int:
    from mamql.learner.demos import collect_demos, save_demos

    from mamql.cli import config_from_args

    config = config_from_args(args, {"env": "env.name"})
    batch, summary = collect_demos(config.env.name, args.transitions, seed=args.seed, epsilon=args.epsilon,
                                   num_envs=args.num_envs, expert=args.expert, env_kwargs=config.env.kwargs,
                                   temperature=args.temperature, greedy=args.greedy)
    save_demos(args.out, batch, summary)
    print(json.dumps(summary))
    return 0
