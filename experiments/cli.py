"""`mamql experiment --suite NAME`, `mamql experts train` (experiments.experts) and `mamql plot DIR...`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.experiments.suites import SUITES
    from mamql.cli import add_config_args

    p = sub.add_parser("experiment", help="run a suite of MAMQL / IQL-MA / BC runs through the distributed system")
    p.add_argument("--suite", required=True, choices=sorted(SUITES))
    p.add_argument("--out", default=None, help="results directory (default results/<suite>)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per (dataset, algo); default: the suite's")
    p.add_argument("--algos", default=None, help="comma-separated subset, e.g. mamql,iqlma")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra config override for every run (repeatable)")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=run_experiment)

    ab = sub.add_parser("ablate", help="learner variants side by side on the same demos (one process each, JSON lines)")
    add_config_args(ab)  # --config and --set: the base every variant starts from
    ab.add_argument("--variant", action="append", default=[], metavar="'NAME [SECTION.KEY=VALUE ...]'",
                    help="one variant (repeatable); e.g. --variant 'reference' --variant 'chi2pol learner.chi2_on_policy=true'")
    ab.add_argument("--env", default=None, help="env.name")
    ab.add_argument("--steps", type=int, default=None, help="learner.steps per variant")
    ab.add_argument("--demos", default=None, help="expert demos (.npz or dataset dir); default: collect learner.expert_transitions")
    ab.add_argument("--held-out", type=int, default=3000, help="held-out expert transitions for the action-agreement figure")
    ab.add_argument("--out", default="results/ablation", help="writes OUT/ablation.jsonl and OUT/runs/<variant>/")
    ab.add_argument("--no-progress", action="store_true")
    ab.set_defaults(func=run_ablate)

    from mamql.experiments.experts import register as register_experts

    experts = sub.add_parser("experts", help="reference soft-optimal experts trained by mamql itself (soft-q)")
    register_experts(experts.add_subparsers(dest="experts_command", metavar="ACTION", required=True))

    plot = sub.add_parser("plot", help="PNG plots of experiment results or run directories")
    plot.add_argument("dirs", nargs="+", metavar="DIR", help="results/<suite> directories or run directories")
    plot.add_argument("--out", default=None, help="PNG for `mamql train` run directories, plotted together "
                      "(default: <first run>/plots/eval-curves.png)")
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

    from mamql.experiments.plots import is_trainer_run, plot_results, single_run, trainer_runs

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
    written = [p for d in suites for p in plot_results(d)] + [p for d in runs for p in single_run(d)]
    if trained:  # one figure for all of them, so they compare at a glance
        written += trainer_runs(trained, Path(args.out) if args.out else trained[0] / "plots" / "eval-curves.png")
    for path in written:
        print(path)
    return 0
