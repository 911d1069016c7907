"""What a learner of the reported size can reach from the soft expert's Gems states (issue 19's 90 % bar).

The Gems bar asks MAMQL's sampled return to reach 90 % of the soft expert's, from 20k expert
transitions, with the reported critic (a 256-unit head over the conv trunk) and 3,000 updates. Every
learner from these demos shares two limits that no objective removes: the demonstrations carry ONE
sampled action per state (label noise), and they cover only the states the expert visited in 457
episodes. This controlled experiment takes BC's network, augmentation, weight decay, batch and
updates exactly as the gems-20k-aug BC cell has them and changes only what it is fitted to:

    targets actions  the dataset's sampled expert actions (BC itself; on 20k, the BC cell again)
    targets probs    the expert's own action probabilities at the same states (no label noise)
    demos 20k | 200k the reported 20k set, or 200k transitions of the same expert (ten times the states)
    demos 1k         the reported 1k set (23 episodes; gems-1k's settings are the same as the cell's)

The `probs` fit on 20k is what the best imitation of those states can do with this network and
budget; 200k shows how much of the rest is the number of states; 1k what the 1k set's states allow
any imitator (the 1k bar). Returns are scored like the cells
(64 episodes per mode on REPORT_EVAL_SEED, the expert on the same episodes in experts/gems-20k.json).

    # once (50 s), as the 20k set was made: mamql collect --env gems --transitions 200000 --actors 2
    #   --expert checkpoint:runs/soft-expert-gems-guided-s0-30k/checkpoints/learner_00030000.pt --out data/gems-soft30k-200k
    python -m mamql.experiments.imitation_ceiling run --demos 20k 200k --targets actions probs --seeds 0
    python -m mamql.experiments.imitation_ceiling summarize

Each run writes docs/results/soft/ceiling/<demos>-<targets>[-<name>]-s<seed>.json (the `mamql evaluate`
JSON plus "fit": command, settings, curve) and keeps its checkpoint under runs/imitation-ceiling/.
`--name N --steps S --set KEY=VALUE` makes a variant of the cell's settings (e.g. the expert's own
256 x 256 head and more updates: what the budget, not the data, allows).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mamql.experiments.soft_results import DATASETS, GEMS_EXPERT, OUT, SHARED, evaluate_checkpoint_command, mean_over_agents

DEMOS = {"1k": "data/gems-soft30k-1k", "20k": "data/gems-soft30k-20k", "200k": "data/gems-soft30k-200k"}
TARGETS = ("actions", "probs")
CELL = "gems-20k-aug"  # the BC cell whose settings every run copies
CURVE_EVERY, CURVE_EPISODES = 500, 16


def bc_config(seed: int, extra: tuple[str, ...] = ()):
    """The BC cell's Config (SHARED + the dataset's overrides, algo bc, the run's seed; then `extra`)."""
    from mamql.config import load_config

    d = DATASETS[CELL]
    return load_config(None, [*SHARED, *d.overrides, f"env.name={d.env}", "learner.algo=bc", f"learner.steps={d.steps}",
                              f"run.seed={seed}", *extra])


def teacher_probs(demos: dict[str, np.ndarray], agents: list[str], teacher: str = GEMS_EXPERT,
                  chunk: int = 4096) -> dict[str, np.ndarray]:
    """The soft expert's Boltzmann probabilities (at its own alpha) at every demo state, per agent."""
    from mamql.learner.evaluate import acting_q_function, load_expert_updater
    from mamql.learner.losses import boltzmann_probs

    expert, record = load_expert_updater(teacher, DATASETS[CELL].env)
    out = {}
    for agent in agents:
        q_fn = acting_q_function(expert, agent)
        obs = demos[f"obs/{agent}"]
        q = np.concatenate([q_fn(obs[i:i + chunk]) for i in range(0, len(obs), chunk)])
        out[agent] = boltzmann_probs(torch.as_tensor(q), float(record["alpha"])).numpy().astype(np.float32)
    return out


def fit(demos_key: str, targets: str, seed: int, episodes: int, runs: Path, progress=print,
        demos_path: str | None = None, teacher: str = GEMS_EXPERT, steps: int | None = None,
        extra: tuple[str, ...] = (), variant: str = "") -> dict:
    """Train the BC cell's network on (demos_key, targets) for its number of updates (or `steps`);
    score it. demos_path and teacher default to DEMOS[demos_key] and the Gems soft expert; `extra`
    overrides the cell's settings, `variant` names that change."""
    from mamql.config import to_dict
    from mamql.envs import env_spec
    from mamql.envs.symmetry import augment_batch, permute_action_probs
    from mamql.learner.checkpoint import step_checkpoint
    from mamql.learner.demos import load_demos
    from mamql.learner.evaluate import policy_from, run_episodes
    from mamql.learner.losses import bc_loss, distill_loss
    from mamql.learner.updater import make_updater, save_checkpoint, set_torch_threads

    config = bc_config(seed, extra)
    lc = config.learner
    set_torch_threads(lc.torch_threads)
    spec = env_spec(config.env.name)
    agents = list(spec.agents)
    updater = make_updater(spec, lc, "cpu", seed=seed)  # the BC cell's initial weights for this seed
    demos_path = demos_path or DEMOS[demos_key]
    demos, _ = load_demos(demos_path)
    probs = teacher_probs(demos, agents, teacher) if targets == "probs" else None
    n = len(demos["done"])
    rng = np.random.default_rng(seed)
    name = run_name(demos_key, targets, seed, variant)
    started = time.time()
    curve = []
    for step in range(1, (steps or lc.steps) + 1):
        rows = rng.integers(0, n, lc.batch_size)
        batch = {f"{k}/{a}": torch.as_tensor(demos[f"{k}/{a}"][rows]) for a in agents for k in ("obs", "action")}
        choice = torch.as_tensor(rng.integers(0, 8, lc.batch_size))
        batch = augment_batch(batch, agents, updater.perms, choice)
        for agent in agents:
            logits = updater.critics[agent](batch[f"obs/{agent}"])
            if probs is None:
                loss = bc_loss(logits, batch[f"action/{agent}"])
            else:
                loss = distill_loss(logits, permute_action_probs(torch.as_tensor(probs[agent][rows]), updater.perms, choice))
            opt = updater.optimizers[agent]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        updater.step = step
        if step % CURVE_EVERY == 0:  # the learning curve, on the trainer's default eval episodes
            sampled = run_episodes(policy_from(updater, "sample"), spec.name, CURVE_EPISODES)["mean_return"]
            curve.append({"step": step, "sample": float(np.mean(list(sampled.values()))), "loss": float(loss.detach())})
            progress(f"{name}: step {step} sampled {curve[-1]['sample']:.2f} "
                     f"({time.time() - started:.0f}s)")
    train_wall = time.time() - started
    extra_record = {"config_json": json.dumps(to_dict(config)), "env": spec.name, "algo": "bc", "step": updater.step,
                    "time": time.time(), "targets": targets, "demos": demos_path}
    ckpt = save_checkpoint(step_checkpoint(runs / name / "checkpoints", updater.step), updater, extra_record)
    # scored as the cells are (returns on REPORT_EVAL_SEED, reward recovery on the cell's 20k demos): the
    # fitted logits' log-policy is its implied reward, as it is BC's
    cmd = evaluate_checkpoint_command(ckpt, CELL, episodes)
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    result["fit"] = {"demos": demos_path, "demos_key": demos_key, "transitions": n, "targets": targets, "seed": seed,
                     "variant": variant,
                     "settings_of": f"soft_results {CELL} bc", "overrides": [*SHARED, *DATASETS[CELL].overrides, *extra],
                     "steps": updater.step, "teacher": teacher if targets == "probs" else None, "curve": curve,
                     "train_wall_s": round(train_wall, 1), "evaluate_command": "mamql " + shlex.join(cmd[3:])}
    return result


def run_name(demos_key: str, targets: str, seed: int, variant: str = "") -> str:
    return f"{demos_key}-{targets}{'-' + variant if variant else ''}-s{seed}"


def summarize(out: Path, experts: Path = OUT / "experts") -> Path:
    """table.md: mean ± std over seeds per (demos, targets): returns, their share of the expert's on the
    same episodes (soft_results' experts/<cell>.json), reward recovery (DARD) and its share of the
    expert-implied yardstick's."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*-s*.json"))]
    expert = mean_over_agents(json.loads((experts / f"{CELL}.json").read_text())["sample"])
    lines = ["| demos | targets | variant | updates | seeds | sampled | greedy | sampled / expert | DARD | DARD / expert-implied |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    groups = sorted({(r["fit"]["demos_key"], r["fit"]["targets"], r["fit"].get("variant", "")) for r in rows},
                    key=lambda g: (list(DEMOS).index(g[0]), TARGETS.index(g[1]), g[2]))
    for demos_key, targets, variant in groups:
        mine = [r for r in rows if (r["fit"]["demos_key"], r["fit"]["targets"], r["fit"].get("variant", ""))
                == (demos_key, targets, variant)]
        s = [mean_over_agents(r["sample"]) for r in mine]
        g = [mean_over_agents(r["greedy"]) for r in mine]
        dard = [r["reward_recovery_metric"]["mean_pearson"] for r in mine]
        ceiling = [r["reward_recovery_yardsticks"]["expert_implied"]["mean_pearson"] for r in mine]
        lines.append(f"| {demos_key} | {targets} | {variant or '(the cell)'} | {mine[0]['fit']['steps']} | "
                     f"{' '.join(str(r['fit']['seed']) for r in mine)} | "
                     f"{np.mean(s):.2f} ± {np.std(s):.2f} | {np.mean(g):.2f} ± {np.std(g):.2f} | "
                     f"{np.mean(s) / expert:.0%} | {np.mean(dard):.3f} ± {np.std(dard):.3f} | "
                     f"{np.mean(dard) / np.mean(ceiling):.2f} |")
    lines.append(f"\nSoft expert on the same episodes: {expert:.2f} sampled (experts/{CELL}.json). ± is the "
                 "population std over the seeds listed. Written by `python -m mamql.experiments.imitation_ceiling summarize`.")
    path = out / "table.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="fit and score each (demos, targets, seed) without a JSON yet")
    run.add_argument("--demos", nargs="+", choices=sorted(DEMOS), default=["20k"])
    run.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument("--episodes", type=int, default=64, help="evaluation episodes per mode")
    run.add_argument("--runs", default="runs/imitation-ceiling")
    run.add_argument("--name", default="", help="a variant's name (with --steps / --set); in its file names")
    run.add_argument("--steps", type=int, default=None, help="updates (default: the cell's)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="repeatable; on top of the cell's settings")
    summ = sub.add_parser("summarize", help="table.md from the runs' JSON")
    for p in (run, summ):
        p.add_argument("--out", default=str(OUT / "ceiling"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.command == "run":
        for seed in args.seeds:
            for demos_key in args.demos:
                for targets in args.targets:
                    path = out / f"{run_name(demos_key, targets, seed, args.name)}.json"
                    if path.exists():
                        print(f"{path}: done already", flush=True)
                        continue
                    result = fit(demos_key, targets, seed, args.episodes, Path(args.runs),
                                 progress=lambda m: print(m, flush=True), steps=args.steps,
                                 extra=tuple(args.overrides), variant=args.name)
                    variant = [*(["--name", args.name] if args.name else []), *(["--steps", str(args.steps)] if args.steps else []),
                               *[x for o in args.overrides for x in ("--set", o)]]
                    result["fit"]["command"] = shlex.join(
                        ["python", "-m", "mamql.experiments.imitation_ceiling", "run", "--demos", demos_key, "--targets", targets,
                         "--seeds", str(seed), "--episodes", str(args.episodes), *variant])
                    path.write_text(json.dumps(result, indent=1) + "\n")
                    print(f"{path}: sampled {mean_over_agents(result['sample']):.2f} "
                          f"DARD {result['reward_recovery_metric']['mean_pearson']}", flush=True)
    print(summarize(out))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """main, with a bad setting or a missing dataset as one line (exit 2), not a traceback."""
    from mamql.config import InputError

    try:
        return main(argv)
    except InputError as exc:
        print(f"imitation_ceiling: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())
