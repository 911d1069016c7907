"""`mamql dataset info|verify PATH`: inspect and check a demo dataset written by `mamql collect`."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="inspect (info) or check (verify) a demo dataset directory")
    cmds = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    info = cmds.add_parser("info", help="counts, returns and specs from the manifest")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print the manifest without the shard list as JSON")
    info.set_defaults(func=run_info)
    verify = cmds.add_parser("verify", help="checksums, schema and episode integrity of every shard")
    verify.add_argument("path")
    verify.set_defaults(func=run_verify)


def run_info(args: argparse.Namespace) -> int:
    from replay.dataset import DatasetError, read_manifest

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
    print(f"expert: {m.get('expert', {})}")
    for a, r in m["returns"].items():
        if r["episodes"]:
            print(f"  return {a}: {r['mean']:.3f} ± {r['std']:.3f} [{r['min']:.2f}, {r['max']:.2f}]")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from replay.dataset import verify_dataset

    report = verify_dataset(args.path)
    for error in report.errors:
        print(f"FAIL {error}", file=sys.stderr)
    if report.ok:
        print(f"OK {args.path}: {report.shards} shards, {report.transitions} transitions, "
              f"{report.episodes} episodes; checksums, schema and episodes verified")
        return 0
    print(f"verify failed: {len(report.errors)} problem(s) in {args.path}", file=sys.stderr)
    return 1
