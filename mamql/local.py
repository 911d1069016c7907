"""`mamql local`: the whole system on one machine, as real separate processes on 127.0.0.1.

Order of events: resolve the config (a CPU learner's image critic gets a smaller head:
first_run_critic) and create the run directory (a new one, or with `--resume` an existing run's); collect expert demonstrations (unless given; `--algo soft-q` learns from the
env's rewards and needs none); start replay, then the learner
(which hosts the weight service), then the actors: each binds port 0, reports its ports in a port
file and is waited for (the servers until gRPC health answers SERVING); print a legend, then one
status line per interval from the processes' own /metrics endpoints (StatusLine); when the learner has done its steps, or on
Ctrl-C/SIGTERM/SIGHUP, let the replay admit inserts past its rate limiter (SIGUSR1) and stop
actors → learner → replay, each with SIGTERM: the actors' queued transitions drain into the
replay, the learner and replay write their final checkpoints. A dead actor is restarted (it
rejoins with the next weight version) up to --max-actor-restarts times, then the run fails; a dead
learner or replay ends the run with an error. The children die with this process
(PR_SET_PDEATHSIG), so even `kill -9` of it leaves none running. At the end it prints what the
run did and the commands to evaluate, plot and continue it (summary).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from mamql.config import ALGOS, Config, InputError, dump_config, with_updates
from mamql.phases import PhaseWindow, bottleneck
from mamql.supervisor import Supervisor, grpc_serving, scrape, total

MAX_ACTOR_RESTARTS = 5
DEFAULT_ACTORS = 1  # on 2 cores a second actor takes CPU from the learner: 0.5 vs 1.4 updates/s (issue 20)
ACTOR_GRACE_S = 30.0  # a stopping actor's drain (<= 10 s for its last batch, <= 10 s for acks) and exit


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args
    from mamql.envs.experts import expert_arg

    p = sub.add_parser(
        "local", help="run replay, learner and actors as local processes (the main job)",
        description="The whole system on this machine: collect expert demos (unless --demos), start replay, "
                    "learner and actors as separate processes on 127.0.0.1, print a status line until the "
                    "learner has done its updates, then the commands to evaluate, plot and continue the run.",
        epilog="examples:\n  mamql local --env gems --steps 300\n"
               "  mamql local --env kitchen --actors 2 --steps 1000 --run-name kitchen-1\n"
               "  mamql local --resume runs/NAME --steps 600")
    add_config_args(p)
    p.add_argument("--env", default=None,
                   help="env.name: a name from `mamql envs list`, or package.module:ClassOrFactory")
    p.add_argument("--actors", type=int, default=None,
                   help=f"actor processes (default {DEFAULT_ACTORS}, or the resumed run's)")
    p.add_argument("--num-envs", type=int, default=None, help="env copies per actor (actor.num_envs)")
    p.add_argument("--steps", type=int, default=None, help="learner updates, resume included (learner.steps)")
    p.add_argument("--algo", default=None, choices=list(ALGOS),
                   help="learner.algo (soft-q: forward soft-Q learning from the env's rewards, no demos)")
    p.add_argument("--gamma", type=float, default=None, help="the discount (learner.gamma)")
    p.add_argument("--demos", default=None, metavar="PATH",
                   help="expert demos, a .npz or a dataset directory (default: collect --expert-transitions first)")
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


RATE_WINDOW_S = 20.0  # rates in the status line: per second over this many seconds
RATE_HISTORY_S = 120.0  # ... or back to the last change within this, when work comes in bursts
RECENT_EPISODES = 20  # returns in the status line: mean over at least this many latest episodes
LEGEND = (
    f"status every {{every:g}} s; rates per second over the last {RATE_WINDOW_S:.0f} s:",
    "  updates done/target (learner updates/s, ETA) | return: mean training-episode return per agent, "
    f"latest {RECENT_EPISODES} episodes (Boltzmann sampling)",
    "  env: env steps/s, all actors | replay in/out: online transitions inserted/sampled per s | "
    "vN: weights version N published | lag: versions the acting policy was behind (sampled rows)",
)


class RateWindow:
    """Cumulative counters sampled over time -> per-second rates over the last `window_s`.

    Actors held back by the replay's rate limiter step in bursts, often longer apart than a status
    interval, so a plain per-interval rate reads 0 most of the time while work is going on. When a
    counter did not move within the window, its rate is taken back to its last change (at most
    `history_s` ago): it reads 0 only after `history_s` without any work.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S, history_s: float = RATE_HISTORY_S):
        self.window_s, self.history_s = window_s, history_s
        self.points: collections.deque[tuple[float, dict[str, float]]] = collections.deque()

    def add(self, now: float, totals: dict[str, float]) -> None:
        self.points.append((now, dict(totals)))
        while len(self.points) > 2 and self.points[1][0] <= now - self.history_s:
            self.points.popleft()

    def delta(self, key: str) -> tuple[float, float]:
        """(counter increase, seconds) over the window, or back to the counter's last change."""
        if len(self.points) < 2:
            return 0.0, 0.0
        now, latest = self.points[-1]
        start = 0
        for i, (t, _) in enumerate(self.points):
            if t <= now - self.window_s:
                start = i
        value = latest.get(key, 0.0)
        if self.points[start][1].get(key, 0.0) == value:
            moved = [i for i, (_, c) in enumerate(self.points) if c.get(key, 0.0) != value]
            if moved:
                start = moved[-1]
        t0, first = self.points[start]
        return value - first.get(key, 0.0), now - t0

    def rate(self, key: str) -> float:
        change, seconds = self.delta(key)
        return change / seconds if seconds > 0 else 0.0


class StatusLine:
    """One status record per interval from successive /metrics scrapes of every process.

    Counters are differenced per process, and a counter that went down (a restarted actor) counts
    from zero, so a restart never shows as a negative rate. Env steps are summed over all actors
    ever started, so the learning curves in status.jsonl have a monotone x axis. Rates are over a
    window (RateWindow); `returns` are the episodes that ended in this interval (what
    experiments.plots draws), `returns_recent` the latest RECENT_EPISODES or more, carried across
    intervals without a finished episode (what the status line shows).
    """

    def __init__(self, target_updates: int = 0, min_online: int = 0, env_steps: float = 0.0,
                 window_s: float = RATE_WINDOW_S, recent_episodes: int = RECENT_EPISODES, now: float | None = None):
        self.target_updates = int(target_updates)  # updates this run does; 0 = until stopped
        self.min_online = int(min_online)  # online transitions the learner waits for before its first update
        self.scraped: dict[str, dict] = {}
        self.previous: dict[tuple[str, str], float] = {}
        self.totals = {"env_steps": float(env_steps), "inserted": 0.0, "sampled": 0.0, "updates": 0.0,
                       "lag_sum": 0.0, "lag_n": 0.0}
        self.start = time.monotonic() if now is None else now
        self.window = RateWindow(window_s)
        self.window.add(self.start, self.totals)
        self.phases = PhaseWindow(window_s)  # seconds per phase (mamql.phases), over the same window
        self.recent_episodes = int(recent_episodes)
        self.recent: collections.deque[dict[str, tuple[float, float]]] = collections.deque()  # per interval
        self.episodes = 0.0
        self.first_returns: dict[str, float] = {}  # returns_recent when it first covered enough episodes

    def _delta(self, process: str, key: str, value: float) -> float:
        old = self.previous.get((process, key), 0.0)
        self.previous[(process, key)] = value
        return value - old if value >= old else value

    def measure(self, sup: Supervisor) -> dict:
        for name, child in sup.children.items():
            if child.alive() and child.metrics_port:
                # a process between scrapes (starting, stopping) keeps its last numbers
                self.scraped[name] = scrape(child.metrics_url) or self.scraped.get(name, {})
        alive = sum(1 for n, c in sup.children.items() if n.startswith("actor") and c.alive())
        return self.observe(self.scraped, time.monotonic(), alive)

    def observe(self, scraped: dict[str, dict], now: float, actors_alive: int) -> dict:
        """The status record for the scrapes `scraped` ({process name: scrape()}) taken at `now`."""
        replay, learner = scraped.get("replay", {}), scraped.get("learner", {})
        interval: dict[str, list[float]] = {}  # agent -> [return sum, episodes] over actors, this interval
        for name, samples in scraped.items():
            if not name.startswith("actor"):
                continue
            self.totals["env_steps"] += self._delta(name, "steps", total(samples, "mamql_actor_env_steps_total"))
            for (metric, labels), value in samples.items():
                if metric in ("mamql_actor_episode_return_sum", "mamql_actor_episode_return_count"):
                    agent = dict(labels)["agent"]
                    slot = interval.setdefault(agent, [0.0, 0.0])
                    slot[metric.endswith("_count")] += self._delta(name, f"{metric}/{agent}", value)
        counters = (("inserted", "replay", "mamql_replay_inserted_transitions_total", {"table": "online"}),
                    ("sampled", "replay", "mamql_replay_sampled_transitions_total", {"table": "online"}),
                    ("updates", "learner", "mamql_learner_updates_total", {}),
                    ("lag_sum", "learner", "mamql_learner_policy_lag_sum", {}),
                    ("lag_n", "learner", "mamql_learner_policy_lag_count", {}))
        for key, process, metric, labels in counters:
            self.totals[key] += self._delta(process, key, total(scraped.get(process, {}), metric, **labels))
        self.window.add(now, self.totals)
        ended = {a: (s, n) for a, (s, n) in interval.items() if n > 0}
        self.episodes += max((n for _, n in ended.values()), default=0.0)
        recent = self._recent(ended)
        updates = total(learner, "mamql_learner_updates_total")
        updates_per_s = self.window.rate("updates")
        lag_sum, _ = self.window.delta("lag_sum")
        lag_n, _ = self.window.delta("lag_n")
        eta = None
        if self.target_updates and updates_per_s > 0:
            eta = max(self.target_updates - updates, 0.0) / updates_per_s
        return {
            "time": time.time(),
            "elapsed_s": now - self.start,
            "updates": updates,  # this learner process's; updates_target is what it will do
            "updates_target": self.target_updates,
            "eta_s": eta,
            "env_steps": self.totals["env_steps"],
            # per second over the last RATE_WINDOW_S (RateWindow: longer when work comes in bursts)
            "env_fps": self.window.rate("env_steps"),
            "insert_per_s": self.window.rate("inserted"),
            "sample_per_s": self.window.rate("sampled"),
            "updates_per_s": updates_per_s,
            "online_size": total(replay, "mamql_replay_table_size", table="online"),
            "min_online": self.min_online,
            "policy_lag": lag_sum / lag_n if lag_n > 0 else None,
            "weight_version": total(learner, "mamql_learner_weight_version"),
            # mean return per agent of the episodes that ended in this interval (Boltzmann sampling)
            "returns": {a: s / n for a, (s, n) in ended.items()},
            "returns_recent": recent,
            "episodes": self.episodes,  # ended so far, all actors
            "actors_alive": actors_alive,
            # one phrase naming where the time goes, from the phase counters (None until two scrapes)
            "bottleneck": bottleneck(self.phases.update(scraped, now)),
        }

    def _recent(self, ended: dict[str, tuple[float, float]]) -> dict[str, float]:
        """Mean return per agent over the fewest latest intervals that hold recent_episodes episodes
        (all of them until there are that many)."""
        if ended:
            self.recent.append(ended)
        count = lambda chunk: max(n for _, n in chunk.values())  # noqa: E731
        while len(self.recent) > 1 and sum(map(count, list(self.recent)[1:])) >= self.recent_episodes:
            self.recent.popleft()
        sums: dict[str, list[float]] = {}
        for chunk in self.recent:
            for agent, (s, n) in chunk.items():
                slot = sums.setdefault(agent, [0.0, 0.0])
                slot[0] += s
                slot[1] += n
        recent = {a: s / n for a, (s, n) in sums.items()}
        if not self.first_returns and self.recent and sum(map(count, self.recent)) >= self.recent_episodes:
            self.first_returns = dict(recent)
        return recent


def duration(seconds: float) -> str:
    """45s, 3m05s, 1h02m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def legend(every: float) -> list[str]:
    """What the status line's fields mean, printed once before the first one."""
    return [LEGEND[0].format(every=every), *LEGEND[1:]]


def format_status(s: dict) -> str:
    """One status line from a StatusLine record (pure: tests feed it hand-made records)."""
    updates, target = s["updates"], s.get("updates_target", 0)
    progress = f"updates {updates:.0f}/{target}" if target else f"updates {updates:.0f}"
    if not updates and s.get("min_online") and s.get("online_size", 0) < s["min_online"]:
        progress += f" (waiting for {s['min_online']:,} online transitions in replay, {s['online_size']:,.0f} so far)"
    elif not updates:
        progress += " (starting)"
    else:
        eta = s.get("eta_s")
        progress += f" ({s['updates_per_s']:.1f}/s" + (f", ETA {duration(eta)})" if eta is not None else ")")
    recent = s.get("returns_recent", s["returns"])
    returns = " ".join(f"{a}={v:.1f}" for a, v in recent.items()) or "- (no episode ended yet)"
    lag = "-" if s["policy_lag"] is None else f"{s['policy_lag']:.1f}"
    parts = [
        duration(s["elapsed_s"]) if "elapsed_s" in s else None,
        progress,
        f"return {returns}",
        f"env {s['env_fps']:,.0f}/s",
        f"replay in {s['insert_per_s']:,.0f}/s out {s['sample_per_s']:,.0f}/s",
        f"v{s['weight_version']:.0f} lag {lag}",
        f"actors {s['actors_alive']}",
        s.get("bottleneck"),
    ]
    return " | ".join(p for p in parts if p)


def summary(first: dict | None, last: dict | None, run_dir: Path, steps: int, learned: bool,
            wall_s: float, updates: float | None = None) -> list[str]:
    """What the run did and the commands to look at it, with this run's paths: printed at the end.
    `first`: returns_recent early in the run, `last`: the last status record, `updates`: the
    learner's count when known better than the last scrape (it finished its steps)."""
    lines = []
    if last is not None:
        done = last["updates"] if updates is None else updates
        text = (f"done in {duration(wall_s)}: {done:.0f} updates, "
                f"{last['env_steps']:,.0f} env steps, {last['episodes']:.0f} episodes")
        if last.get("returns_recent"):
            before = first or {}
            text += "; return per agent " + ", ".join(
                (f"{a} {before[a]:.1f} -> {v:.1f}" if a in before else f"{a} {v:.1f}")
                for a, v in last["returns_recent"].items())
            if before:
                text += f" (first vs latest {RECENT_EPISODES} episodes)"
        lines.append(text)
    if learned:
        run = shlex.quote(str(run_dir))
        more = f" --steps {2 * steps}" if steps else ""
        lines += [
            "next:",
            f"  mamql evaluate --run {run}   # returns per agent (greedy, sampled) and reward recovery, as JSON",
            f"  mamql plot {run}   # learning curve -> {run_dir / 'plots' / 'curve.png'}",
            f"  mamql local --resume {run}{more}   # train on",
        ]
    return lines


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
    from mamql.targets import write_targets

    write_targets(table, path.parent)  # Prometheus file_sd: <run.root>/prometheus-targets/<run>.json


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
        return make_run_dir(first_run_critic(config), "local")
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


def first_run_critic(config: Config) -> Config:
    """An empty learner.hidden (the env's default widths) made explicit for this run: on a CPU learner
    an image critic gets a smaller head (learner.networks.first_run_hidden), so the quick start ends
    in minutes. Written into config.yaml, so actors, --resume and `mamql evaluate` build the same."""
    lc = config.learner
    if lc.hidden or lc.network != "default":
        return config
    from mamql.envs.registry import env_spec
    from mamql.learner.networks import IMAGE_HIDDEN, first_run_hidden

    hidden = first_run_hidden(env_spec(config.env.name, **config.env.kwargs), lc.device)
    if not hidden:
        return config
    paper = ",".join(map(str, IMAGE_HIDDEN))
    say(f"mamql local: learner on CPU: critic head [{','.join(map(str, hidden))}] instead of the paper's [{paper}] "
        f"(about 2.5x less CPU per update; --set 'learner.hidden=[{paper}]' for the paper's)")
    return with_updates(config, learner={"hidden": hidden})


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
    actors = args.actors if args.actors is not None else saved.get("actors", DEFAULT_ACTORS)
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
    started = time.monotonic()
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

    start_step = resumed_step(run_dir) if resume else 0  # before the learner starts writing checkpoints
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
    online = [t for t in config.replay.tables if t.name == config.actor.table]
    status = StatusLine(target_updates=max(config.learner.steps - start_step, 0) if config.learner.steps else 0,
                        min_online=online[0].min_size_to_sample if online else 0,
                        env_steps=last_env_steps(run_dir / "status.jsonl") if resume else 0.0)
    snapshot = None
    if not quiet:
        for line in legend(status_every):
            say(line)
    exit_code = 0
    finished = False  # the learner did its steps and exited by itself
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
                finished = exit_code == 0
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
    if not quiet:
        learned = (run_dir / "checkpoints" / "learner" / "latest.pt").exists()
        # start vs end only when the two sets of episodes do not overlap
        first = status.first_returns if snapshot and snapshot["episodes"] >= 2 * status.recent_episodes else None
        for line in summary(first, snapshot, run_dir, config.learner.steps, learned, time.monotonic() - started,
                            status.target_updates if finished and not stop.is_set() and status.target_updates else None):
            say(line)
    return exit_code


def resumed_step(run_dir: Path) -> int:
    """The learner step a resumed run continues from (its latest checkpoint's; 0 when unreadable),
    so the status line counts the updates still to do."""
    path = run_dir / "checkpoints" / "learner" / "latest.pt"
    if not path.exists():
        return 0
    from mamql.learner.checkpoint import CheckpointError, read_torch_checkpoint

    try:
        return int(read_torch_checkpoint(path)["extra"].get("step", 0))
    except (CheckpointError, AttributeError, TypeError, ValueError):
        return 0


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
