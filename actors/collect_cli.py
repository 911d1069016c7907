"""`mamql collect`: expert actors -> a fifo replay table -> a sharded dataset of whole episodes.

Without `--replay` it starts, like `mamql local`, a replay process holding one fifo table and N
`mamql actor --mode expert` processes on 127.0.0.1; with `--replay HOST:PORT` it only reads that
service's table, fed by actors started elsewhere. The run directory (runs/<name>/) holds the
resolved config.yaml, logs/ and processes.json. Children get SIGKILL if this process dies (Linux
PR_SET_PDEATHSIG), so a killed collector leaves no actors behind; `--resume` then continues the
dataset with fresh actor ids (hence fresh episode ids and seeds).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

COLLECT_TABLE = "collect"


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args
    from mamql.envs.experts import expert_arg

    p = sub.add_parser(
        "collect", help="collect expert demonstrations into a sharded dataset",
        description="Expert actor processes feed a fifo replay table; whole episodes from it are written to a "
                    "sharded, checksummed dataset directory (mamql dataset info|verify reads it). Give exactly "
                    "one of --transitions and --episodes.",
        epilog="examples:\n  mamql collect --env gems --transitions 20000 --actors 4 --out data/gems-20k\n"
               "  mamql collect --env gems --transitions 20000 --actors 4 --out data/gems-20k --resume\n"
               "  mamql collect --env kitchen --episodes 100 --replay 127.0.0.1:7100 --out data/kitchen-100")
    add_config_args(p)
    p.add_argument("--env", default=None,
                   help="env.name: a name from `mamql envs list`, or package.module:ClassOrFactory")
    p.add_argument("--expert", type=expert_arg, default=None,
                   help="who plays: scripted | random | checkpoint:PATH (a learner checkpoint of this env) "
                        "(default: actor.expert, scripted)")
    p.add_argument("--temperature", type=float, default=None, metavar="ALPHA", help="a checkpoint expert samples "
                   "Boltzmann(Q/ALPHA) (actor.expert_temperature; default: the checkpoint's learner.alpha)")
    p.add_argument("--gamma", type=float, default=None, help="the discount these demos are for, recorded in the "
                   "manifest (the learner warns when its learner.gamma differs)")
    p.add_argument("--transitions", type=int, default=None,
                   help="stop at the first episode boundary at or past this many transitions in the dataset")
    p.add_argument("--episodes", type=int, default=None, help="stop when the dataset holds exactly this many episodes")
    p.add_argument("--actors", type=int, default=2, help="local expert actor processes (none with --replay)")
    p.add_argument("--num-envs", type=int, default=None, help="env copies per actor (actor.num_envs)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="dataset directory (new, or the one to continue with --resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the dataset in --out (stopped, or to a larger target) with fresh actor ids")
    p.add_argument("--replay", default=None, metavar="HOST:PORT",
                   help="read the table of a replay service fed by actors started elsewhere; start no processes")
    p.add_argument("--table", default=COLLECT_TABLE, help="fifo table to read (and to create, locally)")
    p.add_argument("--shard-transitions", type=int, default=10_000,
                   help="rows per shard file (shards hold whole episodes)")
    p.add_argument("--buffer", type=int, default=16_384, help="capacity of the local fifo table, in transitions")
    p.add_argument("--run-name", default=None,
                   help="run directory under run.root for config, logs, processes.json (default: a new one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.set_defaults(func=run)


def _resolve(args):
    from pathlib import Path

    from mamql.cli import config_from_args, default_run_name
    from mamql.config import validate, with_updates
    from mamql.envs.experts import CHECKPOINT, checkpoint_path

    config = config_from_args(args, {"env": "env.name", "expert": "actor.expert", "num_envs": "actor.num_envs",
                                     "run_name": "run.name", "temperature": "actor.expert_temperature"})
    actor = {"mode": "expert", "table": args.table}
    path = checkpoint_path(config.actor.expert)
    if path and path.strip():  # also from --config/--set: the actors and the manifest get the absolute path
        actor["expert"] = CHECKPOINT + str(Path(path).resolve())
    return validate(with_updates(config, actor=actor,  # expert mode: checks actor.expert
                                 run={"name": default_run_name(config, "collect")}))


def _collect_table(args):
    from mamql.config import TableConfig

    margin = 4096  # actor insert batches may overshoot the limiter by one batch each
    capacity = max(args.buffer, 2 * margin)
    return TableConfig(name=args.table, capacity=capacity, sampler="fifo", min_size_to_sample=1,
                       samples_per_insert=1.0, error_buffer=float(capacity - margin))


CONNECT_TIMEOUT_S = 60.0  # a remote replay that is still starting gets this long to answer


def wait_for_replay(client, address: str, timeout: float, stop) -> dict:
    """The replay's table info, retrying while it is not up yet (UNAVAILABLE) for at most `timeout`
    seconds: collectors and replays are often launched together, in any order."""
    from mamql.replay.errors import Unavailable

    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.info(timeout=5.0)
        except Unavailable:
            if time.monotonic() > deadline or stop.is_set():
                raise
            logging.getLogger("mamql.collect").info("waiting for the replay at %s to answer", address)
            stop.wait(0.5)


def run(args: argparse.Namespace) -> int:
    import signal
    import threading
    import time
    from pathlib import Path

    from mamql.actors.collect import Target
    from mamql.envs.experts import describe_expert
    from mamql.envs.registry import env_spec
    from mamql.config import InputError, dump_config, with_updates
    from mamql.log import setup_logging
    from mamql.supervisor import Supervisor, grpc_serving
    from mamql.protos.rpc import Security
    from mamql.replay.dataset import DatasetError, DatasetWriter, expert_summary, spec_to_dict

    if (args.transitions is None) == (args.episodes is None):
        print("mamql collect: give exactly one of --transitions and --episodes", file=sys.stderr)
        return 2
    config = _resolve(args)
    log = setup_logging("collect", config.run.log_level)
    spec = env_spec(config.env.name, **config.env.kwargs)
    target = Target(args.transitions, args.episodes)
    # a checkpoint expert is read here, once: a wrong env or a bad file is one line before any process starts
    expert = describe_expert(config.env.name, config.actor.expert, config.env.kwargs,
                             config.actor.expert_temperature or None)
    info = {
        "expert": {"mode": "expert", **expert, "epsilon": config.actor.epsilon, "policy_version": -1},
        "collection": {"target": {"transitions": args.transitions, "episodes": args.episodes},
                       "env_seed": config.env.seed, "num_envs": config.actor.num_envs,
                       "seed_rule": "actor VectorEnv seed = env.seed + 100003 * actor_id; copy k is reset "
                                    "with that + k, later episodes continue the copy's rng",
                       "shard_transitions": args.shard_transitions, "runs": []},
        "next_actor_id": 0,
        # the discount the demos are for: --gamma, else a checkpoint expert's own
        **({"gamma": args.gamma} if args.gamma is not None else {"gamma": expert["gamma"]} if "gamma" in expert else {}),
    }
    env = {"name": spec.name, "kwargs": dict(config.env.kwargs), "spec": spec_to_dict(spec)}
    try:
        writer = DatasetWriter.open(args.out, env, resume=args.resume, shard_transitions=args.shard_transitions,
                                    info=info)
    except DatasetError as exc:
        print(f"mamql collect: {exc}", file=sys.stderr)
        return 2
    writer.shard_transitions = args.shard_transitions
    before = writer.manifest.get("expert", {})  # kept from the dataset's first run
    if args.resume and (before.get("kind"), before.get("sha256"), before.get("alpha")) != (
            info["expert"]["kind"], info["expert"].get("sha256"), info["expert"].get("alpha")):
        raise InputError(f"{args.out} was collected with expert {expert_summary(before)}, not "
                         f"{expert_summary(info['expert'])}; one dataset holds one expert")
    collection = dict(writer.manifest.get("collection", info["collection"]))
    collection["target"] = {"transitions": args.transitions, "episodes": args.episodes}
    if target.reached(writer):
        writer.update(complete=True, collection=collection)
        _print_summary(writer.manifest, args.out)
        return 0

    run_dir = Path(config.run.root) / config.run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    first_id = int(writer.manifest.get("next_actor_id", 0))
    n_actors = 0 if args.replay else args.actors
    collection["runs"] = [*collection.get("runs", []), {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_dir": str(run_dir),
        "replay": args.replay or "local", "actor_ids": list(range(first_id, first_id + n_actors)),
        "start_transitions": writer.transitions}]
    # Reserve the actor ids before any actor runs: a resumed collection never reuses them.
    writer.update(collection=collection, next_actor_id=first_id + n_actors)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sup, address, actor_names = None, args.replay, []
    if not args.replay:
        config = with_updates(config, replay={"host": "127.0.0.1", "port": 0, "checkpoint_on_exit": False,
                                              "tables": [_to_dict(_collect_table(args))]})
        config_path = run_dir / "config.yaml"
        config_path.write_text(dump_config(config))
        # children die with us: a collection is long and unattended, and with the collector gone
        # nothing they hold in memory can reach the dataset
        sup = Supervisor(run_dir / "logs", die_with_parent=True)
        try:  # the replay binds port 0 and reports it: no port is handed out before it is bound
            replay = sup.start("replay", ["replay", "--config", str(config_path)], port_file=True)
            sup.wait_ready(replay, grpc_serving(Security.from_config(config.auth)))
            port = replay.grpc_port
            address = f"127.0.0.1:{port}"
            for i in range(first_id, first_id + n_actors):
                actor_names.append(f"actor-{i}")
                sup.start(actor_names[-1], ["actor", "--config", str(config_path), "--replay", address,
                                            "--actor-id", str(i), "--set", "metrics.enabled=false"])
        except RuntimeError as exc:
            print(f"mamql collect: {exc}", file=sys.stderr)
            sup.stop(list(reversed(sup.children)))
            return 1
        _write_processes(sup, run_dir / "processes.json", port)
    print(f"mamql collect: {spec.name} -> {args.out} via {address} ({n_actors or 'remote'} actors), "
          f"run directory {run_dir}", flush=True)

    try:
        code = _collect(args, config, writer, target, address, sup, actor_names, stop, log)
    finally:
        if sup:
            _stop_children(sup, actor_names)
    return code


def _stop_children(sup, actor_names) -> None:
    """SIGKILL the actors (nothing they still hold can reach the dataset, and their final flush
    would wait on a full table), then stop the replay cleanly."""
    import os
    import signal

    for name in actor_names:
        child = sup.children[name]
        if child.alive():
            os.killpg(child.popen.pid, signal.SIGKILL)
        child.popen.wait()
    sup.stop(["replay"], grace=10)


def _to_dict(table) -> dict:
    from mamql.config import to_dict

    return to_dict(table)


def _write_processes(sup, path, port: int) -> None:
    import json

    table = {n: {"pid": c.popen.pid, "log": str(c.log_path), "grpc_port": port if n == "replay" else 0}
             for n, c in sup.children.items()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1))
    tmp.replace(path)


def _collect(args, config, writer, target, address, sup, actor_names, stop, log) -> int:
    import time

    from tqdm import tqdm

    from mamql.actors.collect import Collector
    from mamql.protos.rpc import Security
    from mamql.replay.client import ReplayClient
    from mamql.replay.errors import ReplayError

    client = ReplayClient(address, Security.from_config(config.auth), config.replay.max_message_mb)
    total = target.transitions if target.transitions is not None else target.episodes
    bar = tqdm(total=total, initial=writer.transitions if target.transitions is not None else writer.episodes,
               unit="tr" if target.transitions is not None else "ep", unit_scale=True, smoothing=0.1,
               mininterval=0.5, disable=args.no_progress, dynamic_ncols=True, file=sys.stderr)

    def progress(rows: int) -> None:
        bar.update(rows if target.transitions is not None else 1)

    def check() -> None:
        if sup is None:
            return
        if not sup.children["replay"].alive():
            raise RuntimeError(f"replay died:\n{sup.tail(sup.children['replay'])}")
        dead = [n for n in actor_names if not sup.children[n].alive()]
        if dead and len(dead) == len(actor_names):
            raise RuntimeError(f"every actor exited; last log of {dead[0]}:\n{sup.tail(sup.children[dead[0]])}")

    collector = Collector(client, args.table, writer, target, env_seed=config.env.seed, on_progress=progress)
    started, start_rows = time.monotonic(), writer.transitions
    code = 0
    try:
        if args.replay:
            table = wait_for_replay(client, address, CONNECT_TIMEOUT_S, stop).get(args.table)
            if table is None:
                raise RuntimeError(f"replay {address} has no table {args.table!r}")
        finished = collector.run(stop, check)
        if not finished:
            code = 130
    except (RuntimeError, ReplayError) as exc:
        print(f"\nmamql collect: {exc}", file=sys.stderr)
        code = 1
    finally:
        bar.close()
        manifest = writer.close(complete=(code == 0 and target.reached(writer)))
        client.close()
    elapsed = time.monotonic() - started
    log.info("read %d transitions, %d duplicates dropped, %d episodes skipped, %d rows left in partial "
             "episodes", collector.read_rows, collector.assembler.duplicates, collector.skipped_episodes,
             collector.assembler.pending_rows)
    _print_summary(manifest, args.out, elapsed, manifest["counts"]["transitions"] - start_rows)
    if code == 130:
        print("interrupted: the dataset holds only complete shards; continue with --resume", flush=True)
    return code


def _print_summary(manifest: dict, out, elapsed: float | None = None, added: int = 0) -> None:
    c = manifest["counts"]
    rate = f"; this run wrote {added} in {elapsed:.1f}s ({added / max(elapsed, 1e-9):.0f}/s)" if elapsed else ""
    print(f"dataset {out}: {c['transitions']} transitions, {c['episodes']} episodes, {c['shards']} shards"
          f"{rate}; complete: {manifest['complete']}", flush=True)
    for agent, r in manifest["returns"].items():
        if r["episodes"]:
            print(f"  {agent}: return {r['mean']:.2f} ± {r['std']:.2f} (min {r['min']:.2f}, max {r['max']:.2f}, "
                  f"{r['episodes']} episodes)", flush=True)
