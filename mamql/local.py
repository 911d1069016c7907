"""`mamql local`: the whole system on one machine, as real separate processes on 127.0.0.1.

Order of events: resolve the config and create the run directory (a new one, or with `--resume`
an existing run's); collect expert demonstrations (unless given; `--algo soft-q` learns from the
env's rewards and needs none); start replay, then the learner
(which hosts the weight service), then the actors: each binds port 0, reports its ports in a port
file and is waited for (the servers until gRPC health answers SERVING); print one status line per
interval from the processes' own /metrics endpoints; when the learner has done its steps, or on
Ctrl-C/SIGTERM/SIGHUP, let the replay admit inserts past its rate limiter (SIGUSR1) and stop
actors → learner → replay, each with SIGTERM: the actors' queued transitions drain into the
replay, the learner and replay write their final checkpoints. A dead actor is restarted (it
rejoins with the next weight version) up to --max-actor-restarts times, then the run fails; a dead
learner or replay ends the run with an error. The children die with this process
(PR_SET_PDEATHSIG), so even `kill -9` of it leaves none running.
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

from mamql.config import ALGOS, Config, InputError, dump_config, with_updates
from mamql.supervisor import Supervisor, grpc_serving, scrape, total

MAX_ACTOR_RESTARTS = 5
ACTOR_GRACE_S = 30.0  # a stopping actor's drain (<= 10 s for its last batch, <= 10 s for acks) and exit


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args
    from mamql.envs.experts import expert_arg

    p = sub.add_parser("local", help="run replay, learner and actors as local processes (the main job)")
    add_config_args(p)
    p.add_argument("--env", default=None, help="shortcut for --set env.name=...")
    p.add_argument("--actors", type=int, default=None, help="actor processes (default 2, or the resumed run's)")
    p.add_argument("--num-envs", type=int, default=None, help="env copies per actor (actor.num_envs)")
    p.add_argument("--steps", type=int, default=None, help="learner updates (learner.steps)")
    p.add_argument("--algo", default=None, choices=list(ALGOS),
                   help="learner.algo (soft-q: forward soft-Q learning from the env's rewards, no demos)")
    p.add_argument("--gamma", type=float, default=None, help="the discount (learner.gamma)")
    p.add_argument("--demos", default=None, metavar="PATH", help="expert demos; default: collect them first")
    p.add_argument("--expert-transitions", type=int, default=20_000, help="demos to collect when --demos is absent")
    p.add_argument("--expert", type=expert_arg, default="scripted",
                   help="who plays the demos collected when --demos is absent (scripted: envs that have one; "
                        "random; checkpoint:PATH, a learner checkpoint of this env)")
    p.add_argument("--run-name", default=None, help="run directory name under run.root (default: a new unique one)")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue run RUN (a name under run.root, or its directory) with its config.yaml and "
                        "demos: the learner from its latest checkpoint, the replay from its exit checkpoint")
    p.add_argument("--max-actor-restarts", type=int, default=MAX_ACTOR_RESTARTS,
                   help="restarts per actor before the run fails")
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


def write_process_table(sup: Supervisor, path: Path) -> None:
    """pids and ports of the children, for users (and tests) who want to look at one process."""
    table = {
        name: {"pid": c.popen.pid, "metrics_port": c.metrics_port, "grpc_port": c.grpc_port,
               "log": str(c.log_path), "restarts": c.restarts}
        for name, c in sup.children.items() if c.popen is not None
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1))
    tmp.replace(path)


FLAGS = {"env": "env.name", "num_envs": "actor.num_envs", "steps": "learner.steps", "algo": "learner.algo",
         "run_name": "run.name", "gamma": "learner.gamma"}


def resolve(args: argparse.Namespace) -> tuple[Config, Path]:
    """The config and the run directory: a new directory, or with --resume the named run's (its
    config.yaml, with any --set and flags given now on top)."""
    from mamql.cli import config_from_args, make_run_dir

    if not args.resume:
        config = check_demos_wanted(config_from_args(args, FLAGS), args.demos)
        if not args.demos and config.learner.algo != "soft-q":  # demos will be collected: can the expert?
            from mamql.envs.experts import check_expert

            check_expert(config.env.name, args.expert)  # also matches a checkpoint:PATH expert to the env
        return make_run_dir(config, "local")
    if args.config or args.run_name:
        raise InputError("--resume RUN continues that run with its own config.yaml: drop --config and --run-name")
    path = Path(config_from_args(args).run.root) / args.resume
    if not (path / "config.yaml").is_file():
        path = Path(args.resume)
    if not (path / "config.yaml").is_file():
        raise InputError(f"--resume: no run directory with a config.yaml at {args.resume} or under run.root")
    config = config_from_args(argparse.Namespace(**{**vars(args), "config": str(path / "config.yaml")}), FLAGS)
    check_demos_wanted(config, args.demos)
    if Path(config.run.root).resolve() != path.parent.resolve():  # given as a directory elsewhere
        config = with_updates(config, run={"root": str(path.parent.resolve())})
    return with_updates(config, run={"name": path.name}), path


def check_demos_wanted(config: Config, demos: str | None) -> Config:
    """soft-q learns from the env's rewards: demos given to it are a mistake, refused in one line."""
    if demos and config.learner.algo == "soft-q":
        raise InputError("--algo soft-q learns from the env's rewards and takes no --demos")
    return config


def run(args: argparse.Namespace) -> int:
    from mamql.log import setup_logging

    config, run_dir = resolve(args)
    setup_logging("local", config.run.log_level)
    stop = threading.Event()
    # SIGHUP (the terminal closed) stops the run in order too; kill -9 is covered by PR_SET_PDEATHSIG
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    saved = read_run_info(run_dir) if args.resume else {}
    actors = args.actors if args.actors is not None else saved.get("actors", 2)
    return run_system(config, actors, args.demos or saved.get("demos"), args.expert_transitions, stop,
                      args.status_every, resume=bool(args.resume), max_actor_restarts=args.max_actor_restarts,
                      expert=args.expert)


def read_run_info(run_dir: Path) -> dict:
    """What `--resume` takes over from a run besides config.yaml: its actor count and demos path."""
    try:
        return json.loads((run_dir / "local.json").read_text())
    except (OSError, ValueError):
        return {}


def say(text: str, file=None) -> None:
    """print that survives a closed terminal (SIGHUP): the shutdown must go on without a stdout."""
    try:
        print(text, file=file or sys.stdout, flush=True)
    except OSError:
        pass


def collect_demos_process(sup: Supervisor, config_path: Path, transitions: int, out: str, stop: threading.Event,
                          seed: int = 0, expert: str = "scripted") -> int:
    """`mamql demos collect` as a child process, on the run's config (env name and kwargs); returns
    its exit code (130 when stopped)."""
    say(f"collecting {transitions} expert transitions -> {out}")
    child = sup.start("collect", ["demos", "collect", "--config", str(config_path), "--transitions", str(transitions),
                                  "--out", out, "--seed", str(seed), "--expert", expert])
    while child.popen.poll() is None:
        if stop.wait(0.2):
            sup.stop(["collect"])
            return 130
    if child.popen.returncode != 0:
        say(f"demo collection failed:\n{sup.tail(child)}", sys.stderr)
    return child.popen.returncode


def last_env_steps(status_path: Path) -> float:
    """The env-step count a resumed run's status lines continue from (a monotone x axis)."""
    try:
        return float(json.loads(status_path.read_text().splitlines()[-1])["env_steps"])
    except (OSError, ValueError, IndexError, KeyError):
        return 0.0


def run_system(config: Config, actors: int, demos: str | None, expert_transitions: int,
               stop: threading.Event, status_every: float = 2.0, quiet: bool = False, resume: bool = False,
               max_actor_restarts: int = MAX_ACTOR_RESTARTS, expert: str = "scripted") -> int:
    """Replay + learner + `actors` actor processes until the learner finishes or `stop` is set.

    Writes runs/<name>/ (config.yaml, local.json, status.jsonl, processes.json, logs/; the learner
    adds metrics.jsonl and checkpoints/). `resume` continues the run in that directory. Returns 0
    when every process ended cleanly. Call it from a thread that lives until it returns: the
    children die with that thread (Supervisor).
    """
    from mamql.protos.rpc import Security
    from mamql.replay.server import default_checkpoint_dir

    log = logging.getLogger("mamql.local")
    run_dir = Path(config.run.root) / config.run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    config_path.write_text(dump_config(config))
    sup = Supervisor(run_dir / "logs", die_with_parent=True)
    say(f"mamql local: {'resuming' if resume else 'run directory'} {run_dir}")

    soft_q = config.learner.algo == "soft-q"  # learns from the env's rewards: no demos
    if not demos and not soft_q:
        demos = str(run_dir / "demos.npz")
        if not Path(demos).exists():
            code = collect_demos_process(sup, config_path, expert_transitions, demos, stop, config.run.seed, expert)
            if code != 0:
                return code if code == 130 else 1
    saved_demos = None if soft_q else str(Path(demos).resolve())
    (run_dir / "local.json").write_text(json.dumps({"actors": actors, "demos": saved_demos}))

    serving = grpc_serving(Security.from_config(config.auth))
    common = ["--config", str(config_path)]
    ports = ["--set", "metrics.port=0"]  # every server binds port 0 and reports it (--port-file)
    replay_args = ["replay", *common, *ports, "--set", "replay.host=127.0.0.1", "--set", "replay.port=0"]
    replay_checkpoint = Path(default_checkpoint_dir(config))
    if resume and (replay_checkpoint / "header.json").exists():
        replay_args += ["--restore", str(replay_checkpoint)]
    actor_names = [f"actor-{i}" for i in range(actors)]
    try:
        replay = sup.start("replay", replay_args, port_file=True)
        sup.wait_ready(replay, serving)
        replay_address = f"127.0.0.1:{replay.grpc_port}"
        learner = sup.start("learner", ["learner", *common, *ports, "--replay", replay_address,
                                        *([] if soft_q else ["--demos", demos]), "--run-dir", str(run_dir), "--set", "weights.host=127.0.0.1",
                                        "--set", "weights.port=0", *(["--resume"] if resume else [])],
                            port_file=True)
        sup.wait_ready(learner, serving)
        for i, name in enumerate(actor_names):
            sup.start(name, ["actor", *common, *ports, "--replay", replay_address,
                             "--weights", f"127.0.0.1:{learner.grpc_port}", "--actor-id", str(i)], port_file=True)
        for name in actor_names:
            sup.wait_ready(sup.children[name])
    except RuntimeError as exc:
        say(f"mamql local: {exc}", sys.stderr)
        sup.stop(list(reversed(sup.children)))
        return 1

    table_path = run_dir / "processes.json"
    write_process_table(sup, table_path)
    status = StatusLine()
    status.env_steps = last_env_steps(run_dir / "status.jsonl") if resume else 0.0
    exit_code = 0
    with (run_dir / "status.jsonl").open("a") as status_file:
        while not stop.wait(status_every):
            # a restarted actor reports its new metrics port once it is up
            if any(not c.metrics_port and c.alive() and c.read_ports() for c in sup.children.values()):
                write_process_table(sup, table_path)
            snapshot = status.measure(sup)
            status_file.write(json.dumps(snapshot) + "\n")
            status_file.flush()
            if not quiet:
                say(format_status(snapshot))
            if not learner.alive():
                if learner.popen.returncode != 0:
                    say(f"learner failed ({learner.popen.returncode}):\n{sup.tail(learner)}", sys.stderr)
                    exit_code = 1
                break
            if not replay.alive():
                say(f"replay died ({replay.popen.returncode}):\n{sup.tail(replay)}", sys.stderr)
                exit_code = 1
                break
            if restart_dead_actors(sup, actor_names, max_actor_restarts, log):
                write_process_table(sup, table_path)
            if any(not sup.children[n].alive() for n in actor_names):  # out of restarts
                exit_code = 1
                break
    sup.signal(["replay"], signal.SIGUSR1)  # admit the actors' last batches past the rate limiter
    codes = {}
    codes.update(sup.stop(actor_names, grace=ACTOR_GRACE_S))
    codes.update(sup.stop(["learner"], grace=60))
    codes.update(sup.stop(["replay"], grace=60))
    say("exit codes: " + ", ".join(f"{n}={c}" for n, c in codes.items()))
    say(f"run directory: {run_dir} (config.yaml, metrics.jsonl, status.jsonl, checkpoints/, logs/)")
    if exit_code == 0 and any(code != 0 for code in codes.values()):
        exit_code = 1
    return exit_code


def restart_dead_actors(sup: Supervisor, names: list[str], max_restarts: int, log: logging.Logger) -> bool:
    """Restart dead actors; one that has used up its restarts stays dead and is reported (the caller
    fails the run). True when any actor was restarted."""
    restarted = False
    for name in names:
        child = sup.children[name]
        if child.alive():
            continue
        if child.restarts >= max_restarts:
            say(f"mamql local: {name} exited with {child.popen.returncode} after {child.restarts} restarts "
                f"(--max-actor-restarts {max_restarts}); stopping the run. Its log ends:\n{sup.tail(child)}",
                sys.stderr)
            continue
        log.warning("%s exited with %s; restarting", name, child.popen.returncode)
        sup.restart(name)
        restarted = True
    return restarted
