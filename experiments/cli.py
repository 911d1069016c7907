"""`mamql experiment --suite NAME`, `mamql experts train` (experiments.experts) and `mamql plot DIR...`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.experiments.suites import SUITES
    from mamql.cli import add_config_args

    p = sub.add_parser(
        "experiment", help="run a suite of MAMQL / IQL-MA / BC runs through the distributed system",
        description="Every (dataset, algo, seed) run of a suite (docs/results.md), then summary.csv and plots "
                    "in --out; rerunning the same command continues where it stopped.",
        epilog="examples:\n  mamql experiment --suite quick\n"
               "  mamql experiment --suite paper-gems --seeds 1 --algos mamql,iqlma\n"
               "  mamql experiment --suite quick --out results/quick-cuda --set learner.device=cuda")
    p.add_argument("--suite", required=True, choices=sorted(SUITES),
                   help="which runs (docs/results.md): quick, 6 short Gems runs (~25 min on 2 CPU cores); "
                        "paper-gems and paper-kitchen, the paper's comparisons")
    p.add_argument("--out", default=None, help="results directory (default results/<suite>)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per (dataset, algo); default: the suite's")
    p.add_argument("--algos", default=None, help="comma-separated subset, e.g. mamql,iqlma")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra config override for every run (repeatable)")
    p.add_argument("--no-plots", action="store_true", help="write summary.csv only, no PNG plots")
    p.set_defaults(func=run_experiment)

    ab = sub.add_parser(
        "ablate", help="learner variants side by side on the same demos (one process each, JSON lines)",
        description="Train each --variant (a name and its config overrides) on the same demos, score returns "
                    "and agreement with held-out expert actions, and write one JSON line per variant.",
        epilog="examples:\n  mamql ablate --env gems --steps 500 --variant reference "
               "--variant 'chi2pol learner.chi2_on_policy=true'\n"
               "  mamql ablate --env gems --demos demos.npz --steps 1000 --variant reference "
               "--variant 'gamma95 learner.gamma=0.95' --out results/gamma")
    add_config_args(ab)  # --config and --set: the base every variant starts from
    ab.add_argument("--variant", action="append", default=[], metavar="'NAME [SECTION.KEY=VALUE ...]'",
                    help="one variant (repeatable); e.g. --variant 'reference' --variant 'chi2pol learner.chi2_on_policy=true'")
    ab.add_argument("--env", default=None,
                    help="env.name: a name from `mamql envs list`, or package.module:ClassOrFactory")
    ab.add_argument("--steps", type=int, default=None, help="learner.steps per variant")
    ab.add_argument("--demos", default=None, metavar="PATH", help="expert demos (.npz or dataset dir); default: collect learner.expert_transitions")
    ab.add_argument("--held-out", type=int, default=3000, help="held-out expert transitions for the action-agreement figure")
    ab.add_argument("--out", default="results/ablation", help="writes OUT/ablation.jsonl and OUT/runs/<variant>/")
    ab.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    ab.set_defaults(func=run_ablate)

    from mamql.experiments.experts import register as register_experts

    experts = sub.add_parser("experts", help="reference soft-optimal experts trained by mamql itself (soft-q)")
    register_experts(experts.add_subparsers(dest="experts_command", metavar="ACTION", required=True))

    plot = sub.add_parser(
        "plot", help="PNG plots of experiment results or run directories (several runs: one overlaid figure)",
        description="Learning curves of `mamql local` runs (training-episode returns vs env steps and wall "
                    "time) and evaluation curves of `mamql train` runs, several runs overlaid on one figure, "
                    "with an expert line (the demonstrator's mean return, from the runs' demos) and a random "
                    "line (uniformly random play in the runs' env, measured now); results/<suite> "
                    "directories get their suite plots.",
        epilog="examples:\n  mamql plot runs/my-run\n"
               "  mamql plot runs/a runs/b --out compare.png\n"
               "  mamql plot runs/a runs/b --expert-return 13.2 --random-return 0.3 --out plots/")
    plot.add_argument("dirs", nargs="+", metavar="DIR", help="results/<suite> directories or run directories")
    plot.add_argument("--out", default=None, metavar="PATH",
                      help="a .png file for the one figure the run directories make, or a folder for every "
                           "figure (default: <run>/plots/curve.png for one `mamql local` run, "
                           "<first run>/plots/compare.png for several, <first run>/plots/eval-curves.png for "
                           "`mamql train` runs, results/<suite>/plots/)")
    plot.add_argument("--expert-return", type=float, default=None, metavar="R",
                      help="draw the expert line at R (mean return per agent) instead of the runs' demos' value")
    plot.add_argument("--random-return", type=float, default=None, metavar="R",
                      help="draw the random line at R instead of measuring random play")
    plot.add_argument("--random-episodes", type=int, default=32, metavar="N",
                      help="episodes of random play measured for the random line (0: no random line)")
    plot.add_argument("--no-references", action="store_true", help="draw no expert and random lines")
    plot.set_defaults(func=run_plot)


def run_ablate(args: argparse.Namespace) -> int:
    from mamql.experiments.ablation import ablate

    return ablate(args)


def run_experiment(args: argparse.Namespace) -> int:
    import signal
    import threading
    from pathlib import Path

    from mamql.experiments.plots import plot_results
    from mamql.experiments.runner import run_suite, suite_by_name
    from mamql.log import setup_logging

    setup_logging("experiment")
    suite = suite_by_name(args.suite)
    out = Path(args.out or f"results/{suite.name}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"suite {suite.name}: {suite.notes}; expected time {suite.expected_minutes} min", flush=True)
    algos = tuple(args.algos.split(",")) if args.algos else None
    rows = run_suite(suite, out, seeds=args.seeds, extra=args.overrides, stop=stop, algos=algos)
    if stop.is_set():
        print("stopped; rerun the same command to continue where it stopped", flush=True)
        return 130
    if not args.no_plots:
        for path in plot_results(out):
            print(f"plot: {path}", flush=True)
    print(f"{len(rows)} runs; summary: {out / 'summary.csv'}", flush=True)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from mamql.config import InputError
    from mamql.experiments.plots import is_trainer_run, local_runs, plot_results, references, trainer_runs

    suites, runs, trained = [], [], []  # results/<suite> dirs, `mamql local` runs, `mamql train` runs
    for d in map(Path, args.dirs):
        if (d / "runs").is_dir():
            suites.append(d)
        elif (d / "status.jsonl").exists():
            runs.append(d)
        elif is_trainer_run(d):
            trained.append(d)
        else:
            print(f"mamql plot: {d} is neither a results directory (runs/), a run directory (status.jsonl) "
                  "nor a `mamql train` run with evaluations (metrics.jsonl)", file=sys.stderr)
            return 2
    if args.random_episodes < 0:
        raise InputError(f"--random-episodes must be >= 0, got {args.random_episodes}")
    out = Path(args.out) if args.out else None
    one_file = out is not None and out.suffix.lower() == ".png"
    if one_file and (suites or (runs and trained)):
        raise InputError(f"--out {out}: these directories make several figures (a results directory, or both "
                         "`mamql local` and `mamql train` runs): give a folder")
    if out is not None and not one_file and out.suffix:
        raise InputError(f"--out {out}: a .png file or a folder")
    written = []
    for d in suites:
        written += plot_results(d, out / d.name if out else None)
    for group, name, plot in ((runs, "compare.png", local_runs), (trained, "eval-curves.png", trainer_runs)):
        if not group:
            continue
        refs = {}
        if not args.no_references:
            refs, notes = references(group, args.expert_return, args.random_return, args.random_episodes)
            for note in notes:
                print(f"mamql plot: {note}", file=sys.stderr)
        if one_file:
            target = out
        elif out:
            target = out / ("curves.png" if plot is local_runs else name)
        else:
            target = group[0] / "plots" / ("curve.png" if plot is local_runs and len(group) == 1 else name)
        written += plot(group, target, refs)
    for path in written:
        print(path)
    return 0
