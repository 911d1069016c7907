"""`mamql local`: the whole system on one machine, as real separate processes on 127.0.0.1.

Order of events: resolve the config and write the run directory; collect expert demonstrations
(unless given); start replay, then the learner (which hosts the weight service), then the actors;
print one status line per interval from the processes' own /metrics endpoints; when the learner
has done its steps, or on Ctrl-C/SIGTERM, stop actors → learner → replay, each with SIGTERM, so
the learner and replay write their final checkpoints. A dead actor is restarted (it rejoins with
the next weight version); a dead learner or replay ends the run with an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from mamql.config import Config, dump_config, with_updates
from mamql.supervisor import Supervisor, free_port, scrape, total

MAX_ACTOR_RESTARTS = 5


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args

    p = sub.add_parser("local", help="run replay, learner and actors as local processes (the main job)")
    add_config_args(p)
    p.add_argument("--env", default=None, help="shortcut for --set env.name=...")
    p.add_argument("--actors", type=int, default=2, help="actor processes")
    p.add_argument("--num-envs", type=int, default=None, help="env copies per actor (actor.num_envs)")
    p.add_argument("--steps", type=int, default=None, help="learner updates (learner.steps)")
    p.add_argument("--algo", default=None, choices=["mamql", "iqlma", "bc"], help="learner.algo")
    p.add_argument("--demos", default=None, metavar="PATH", help="expert demos; default: collect them first")
    p.add_argument("--expert-transitions", type=int, default=20_000, help="demos to collect when --demos is absent")
    p.add_argument("--run-name", default=None, help="run directory name under run.root")
    p.add_argument("--status-every", type=float, default=2.0, help="seconds between status lines")
    p.set_defaults(func=run)


class StatusLine:
    """Rates and interval means from successive /metrics scrapes of every process.

    Counters are differenced per process, and a counter that went down (a restarted actor) counts
    from zero, so a restart never shows as a negative rate. Env steps are summed over all actors
    ever started, so the learning curves in status.jsonl have a monotone x axis.
    """

    def __init__(self):
        self.scraped: dict[str, dict] = {}
        self.previous: dict[tuple[str, str], float] = {}
        self.env_steps = 0.0
        self.last_time = time.monotonic()
        self.episodes: dict[str, tuple[float, float]] = {}  # agent -> (return sum, count) this interval

    def _delta(self, process: str, key: str, value: float) -> float:
        old = self.previous.get((process, key), 0.0)
        self.previous[(process, key)] = value
        return value - old if value >= old else value

    def measure(self, sup: Supervisor) -> dict:
        for name, child in sup.children.items():
            if child.alive() and child.metrics_port:
                # a process between scrapes (starting, stopping) keeps its last numbers
                self.scraped[name] = scrape(child.metrics_url) or self.scraped.get(name, {})
        now = time.monotonic()
        dt = max(now - self.last_time, 1e-6)
        self.last_time = now
        replay, learner = self.scraped.get("replay", {}), self.scraped.get("learner", {})
        steps = 0.0
        returns: dict[str, list[float]] = {}  # agent -> [sum, count] over actors, this interval
        for name, samples in self.scraped.items():
            if not name.startswith("actor"):
                continue
            steps += self._delta(name, "steps", total(samples, "mamql_actor_env_steps_total"))
            for (metric, labels), value in samples.items():
                if metric in ("mamql_actor_episode_return_sum", "mamql_actor_episode_return_count"):
                    agent = dict(labels)["agent"]
                    slot = returns.setdefault(agent, [0.0, 0.0])
                    slot[metric.endswith("_count")] += self._delta(name, f"{metric}/{agent}", value)
        self.env_steps += steps
        inserted = self._delta("replay", "inserted", total(replay, "mamql_replay_inserted_transitions_total", table="online"))
        sampled = self._delta("replay", "sampled", total(replay, "mamql_replay_sampled_transitions_total", table="online"))
        updates = self._delta("learner", "updates", total(learner, "mamql_learner_updates_total"))
        lag_sum = self._delta("learner", "lag_sum", total(learner, "mamql_learner_policy_lag_sum"))
        lag_n = self._delta("learner", "lag_n", total(learner, "mamql_learner_policy_lag_count"))
        return {
            "time": time.time(),
            "env_fps": steps / dt,
            "insert_per_s": inserted / dt,
            "sample_per_s": sampled / dt,
            "updates_per_s": updates / dt,
            "updates": total(learner, "mamql_learner_updates_total"),
            "env_steps": self.env_steps,
            "policy_lag": lag_sum / lag_n if lag_n > 0 else None,
            "weight_version": total(learner, "mamql_learner_weight_version"),
            # mean return per agent of the episodes that ended in this interval (Boltzmann sampling)
            "returns": {a: s / n for a, (s, n) in returns.items() if n > 0},
            "episodes": max((n for _, n in returns.values()), default=0.0),
            "actors_alive": sum(1 for n, c in sup.children.items() if n.startswith("actor") and c.alive()),
        }


def format_status(s: dict) -> str:
    lag = "-" if s["policy_lag"] is None else f"{s['policy_lag']:.1f}"
    returns = " ".join(f"{a}={v:.1f}" for a, v in s["returns"].items()) or "-"
    return (
        f"env {s['env_fps']:7.0f} fps | insert {s['insert_per_s']:7.0f}/s sample {s['sample_per_s']:7.0f}/s | "
        f"updates {s['updates']:.0f} ({s['updates_per_s']:.1f}/s) v{s['weight_version']:.0f} lag {lag} | "
        f"returns {returns} | actors {s['actors_alive']}"
    )


def write_process_table(sup: Supervisor, path: Path, grpc_ports: dict[str, int]) -> None:
    """pids and ports of the children, for users (and tests) who want to look at one process."""
    table = {
        name: {"pid": c.popen.pid, "metrics_port": c.metrics_port, "grpc_port": grpc_ports.get(name, 0),
               "log": str(c.log_path), "restarts": c.restarts}
        for name, c in sup.children.items() if c.popen is not None
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1))
    tmp.replace(path)


def resolve(args: argparse.Namespace) -> Config:
    from mamql.cli import config_from_args, default_run_name

    config = config_from_args(args, {"env": "env.name", "num_envs": "actor.num_envs", "steps": "learner.steps",
                                     "algo": "learner.algo", "run_name": "run.name"})
    return with_updates(config, run={"name": default_run_name(config, "local")})


def run(args: argparse.Namespace) -> int:
    from mamql.log import setup_logging

    config = resolve(args)
    setup_logging("local", config.run.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return run_system(config, args.actors, args.demos, args.expert_transitions, stop, args.status_every)


def collect_demos_process(sup: Supervisor, env: str, transitions: int, out: str, stop: threading.Event,
                          seed: int = 0) -> int:
    """`mamql demos collect` as a child process; returns its exit code (130 when stopped)."""
    print(f"collecting {transitions} expert transitions -> {out}", flush=True)
    child = sup.start("collect", ["demos", "collect", "--env", env, "--transitions", str(transitions),
                                  "--out", out, "--seed", str(seed)])
    while child.popen.poll() is None:
        if stop.wait(0.2):
            sup.stop(["collect"])
            return 130
    if child.popen.returncode != 0:
        print(f"demo collection failed:\n{sup.tail(child)}", file=sys.stderr)
    return child.popen.returncode


def run_system(config: Config, actors: int, demos: str | None, expert_transitions: int,
               stop: threading.Event, status_every: float = 2.0, quiet: bool = False) -> int:
    """Replay + learner + `actors` actor processes until the learner finishes or `stop` is set.

    Writes runs/<name>/ (config.yaml, status.jsonl, processes.json, logs/; the learner adds
    metrics.jsonl and checkpoints/). Returns 0 when every process ended cleanly.
    """
    log = logging.getLogger("mamql.local")
    run_dir = Path(config.run.root) / config.run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    config_path.write_text(dump_config(config))
    sup = Supervisor(run_dir / "logs")
    print(f"mamql local: run directory {run_dir}", flush=True)

    if not demos:
        demos = str(run_dir / "demos.npz")
        if not Path(demos).exists():
            code = collect_demos_process(sup, config.env.name, expert_transitions, demos, stop, config.run.seed)
            if code != 0:
                return code if code == 130 else 1

    common = ["--config", str(config_path)]
    replay_port, weights_port = free_port(), free_port()
    replay_metrics, learner_metrics = free_port(), free_port()
    replay = sup.start("replay", ["replay", *common, "--set", "replay.host=127.0.0.1", "--set", f"replay.port={replay_port}",
                                  "--set", f"metrics.port={replay_metrics}"], metrics_port=replay_metrics)
    try:
        sup.wait_ready(replay, replay_port)
        learner = sup.start("learner", ["learner", *common, "--replay", f"127.0.0.1:{replay_port}", "--demos", demos,
                                        "--run-dir", str(run_dir), "--set", "weights.host=127.0.0.1",
                                        "--set", f"weights.port={weights_port}",
                                        "--set", f"metrics.port={learner_metrics}"], metrics_port=learner_metrics)
        sup.wait_ready(learner, weights_port)
        actor_names = []
        for i in range(actors):
            port = free_port()
            name = f"actor-{i}"
            sup.start(name, ["actor", *common, "--replay", f"127.0.0.1:{replay_port}",
                             "--weights", f"127.0.0.1:{weights_port}", "--actor-id", str(i),
                             "--set", f"metrics.port={port}"], metrics_port=port)
            actor_names.append(name)
    except RuntimeError as exc:
        print(f"mamql local: {exc}", file=sys.stderr)
        sup.stop(list(reversed(sup.children)))
        return 1

    write_process_table(sup, run_dir / "processes.json", {"replay": replay_port, "learner": weights_port})
    status = StatusLine()
    exit_code = 0
    with (run_dir / "status.jsonl").open("a") as status_file:
        while not stop.wait(status_every):
            snapshot = status.measure(sup)
            status_file.write(json.dumps(snapshot) + "\n")
            status_file.flush()
            if not quiet:
                print(format_status(snapshot), flush=True)
            if not learner.alive():
                if learner.popen.returncode != 0:
                    print(f"learner failed ({learner.popen.returncode}):\n{sup.tail(learner)}", file=sys.stderr)
                    exit_code = 1
                break
            if not replay.alive():
                print(f"replay died ({replay.popen.returncode}):\n{sup.tail(replay)}", file=sys.stderr)
                exit_code = 1
                break
            for name in actor_names:
                child = sup.children[name]
                if not child.alive():
                    if child.restarts >= MAX_ACTOR_RESTARTS:
                        continue
                    log.warning("%s exited with %s; restarting", name, child.popen.returncode)
                    sup.restart(name)
                    write_process_table(sup, run_dir / "processes.json", {"replay": replay_port, "learner": weights_port})
    codes = {}
    codes.update(sup.stop(actor_names))
    codes.update(sup.stop(["learner"], grace=60))
    codes.update(sup.stop(["replay"], grace=60))
    print("exit codes: " + ", ".join(f"{n}={c}" for n, c in codes.items()), flush=True)
    print(f"run directory: {run_dir} (config.yaml, metrics.jsonl, status.jsonl, checkpoints/, logs/)", flush=True)
    if exit_code == 0 and any(code != 0 for name, code in codes.items() if name in ("learner", "replay")):
        exit_code = 1
    return exit_code
