"""`mamql dataset info|verify PATH`: inspect and check a demo dataset written by `mamql collect`;
`mamql dataset import IN.npz --env ENV --out OUT`: bring a user's own demonstration arrays in."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="inspect (info), check (verify) or import a demo dataset")
    cmds = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    info = cmds.add_parser("info", help="counts, returns and specs from the manifest",
                           epilog="examples:\n  mamql dataset info data/gems-20k\n"
                                  "  mamql dataset info data/gems-20k --json")
    info.add_argument("path", metavar="DIR", help="a dataset directory (mamql collect, mamql dataset import)")
    info.add_argument("--json", action="store_true", help="print the manifest without the shard list as JSON")
    info.set_defaults(func=run_info)
    verify = cmds.add_parser("verify", help="checksums, schema and episode integrity of every shard",
                             description="Read every shard and check its checksum, schema and episodes; exit "
                                         "status 0 when all are sound.",
                             epilog="examples:\n  mamql dataset verify data/gems-20k")
    verify.add_argument("path", metavar="DIR", help="a dataset directory (mamql collect, mamql dataset import)")
    verify.set_defaults(func=run_verify)
    imp = cmds.add_parser("import", help="validate a plain .npz of your own demos and write mamql demos "
                          "(per agent obs/, action/, next_obs/, optional reward/; done, truncated: docs/datasets.md)",
                          epilog="examples:\n  mamql dataset import my-demos.npz --env gems --out gems-demos.npz\n"
                                 "  mamql dataset import my-demos.npz --env kitchen --out data/kitchen-mine --gamma 0.99")
    imp.add_argument("input", metavar="IN.npz", help="your demos: arrays named as in docs/datasets.md")
    imp.add_argument("--env", required=True, help="the env the demos were played in (checked against its spaces)")
    imp.add_argument("--out", required=True, metavar="PATH", help="a new .npz file (demos) or a new dataset directory")
    imp.add_argument("--gamma", type=float, default=None, help="the discount the demos were made for (recorded; "
                     "the learner warns when its learner.gamma differs)")
    imp.set_defaults(func=run_import)


def run_info(args: argparse.Namespace) -> int:
    from mamql.replay.dataset import DatasetError, expert_summary, read_manifest

    try:
        m = read_manifest(args.path)
    except DatasetError as exc:
        print(f"mamql dataset: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v for k, v in m.items() if k != "shards"}, indent=1))
        return 0
    c, spec = m["counts"], m["env"]["spec"]
    print(f"{args.path}: {m['format']} v{m['format_version']}, complete: {m['complete']}")
    print(f"env {m['env']['name']} {m['env']['kwargs'] or ''}: agents {', '.join(spec['agents'])}, "
          f"max_steps {spec['max_steps']}")
    for a in spec["agents"]:
        print(f"  {a}: obs {spec['obs_dtype'][a]}{list(spec['obs_shape'][a])}, {spec['num_actions'][a]} actions")
    mean_len = c["transitions"] / c["episodes"] if c["episodes"] else 0.0
    print(f"{c['transitions']} transitions, {c['episodes']} episodes (mean length {mean_len:.1f}), "
          f"{c['shards']} shards, {sum(s['bytes'] for s in m['shards']) / 2**20:.1f} MiB")
    print(f"expert: {expert_summary(m.get('expert', {}))}")
    for a, r in m["returns"].items():
        if r["episodes"]:
            print(f"  return {a}: {r['mean']:.3f} ± {r['std']:.3f} [{r['min']:.2f}, {r['max']:.2f}]")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from mamql.replay.dataset import verify_dataset

    report = verify_dataset(args.path)
    for error in report.errors:
        print(f"FAIL {error}", file=sys.stderr)
    if report.ok:
        print(f"OK {args.path}: {report.shards} shards, {report.transitions} transitions, "
              f"{report.episodes} episodes; checksums, schema and episodes verified")
        return 0
    print(f"verify failed: {len(report.errors)} problem(s) in {args.path}", file=sys.stderr)
    return 1


def run_import(args: argparse.Namespace) -> int:
    """Every problem is one line on stderr, exit 2, nothing written; else one JSON line."""
    from pathlib import Path

    from mamql.envs import env_spec
    from mamql.learner.demos import save_demos
    from mamql.replay.dataset_import import normalise, output_problem, read_npz, validate, write_dataset

    out = Path(args.out)
    problems = [p for p in [output_problem(out)] if p]
    if args.gamma is not None and not 0.0 < args.gamma <= 1.0:
        problems.append(f"--gamma must be in (0, 1], got {args.gamma}")
    arrays, read_problems = read_npz(args.input)
    problems += read_problems
    spec = env_spec(args.env)
    if arrays:
        problems += validate(arrays, spec, contiguous=out.suffix != ".npz")
    if problems:
        for p in problems:
            print(f"mamql dataset import: {args.input}: {p}", file=sys.stderr)
        return 2
    batch = normalise(arrays, spec)
    info = {"source": {"import": str(Path(args.input).resolve())}, "expert": {"kind": "imported"},
            **({"gamma": args.gamma} if args.gamma is not None else {})}
    if out.suffix == ".npz":
        save_demos(out, batch, {"env": spec.name, "env_kwargs": {}, "transitions": len(batch["done"]), **info})
        episodes = int((batch["done"] | batch["truncated"]).sum())
    else:
        episodes = write_dataset(out, batch, spec, {}, info)["counts"]["episodes"]
    rewards = all(f"reward/{a}" in batch for a in spec.agents)
    print(json.dumps({"out": str(out), "env": spec.name, "transitions": len(batch["done"]), "episodes": episodes,
                      "rewards": rewards, "gamma": args.gamma}))
    return 0
