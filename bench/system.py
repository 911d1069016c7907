"""System benchmark: the distributed pieces measured side by side in one run; prints ONE JSON line.

    python bench/system.py [--seconds 6]

- actor_streaming_ratio: env steps/s of one actor streaming to a replay server (another process)
  divided by the same actor loop with a writer that drops batches (goal >= 0.9).
- learner_remote_ratio: updates/s sampling online data from a remote replay server divided by
  sampling the same data from an in-process table (goal >= 0.95).
- weight_push_ms: publish -> applied by all of 4 subscriber processes that poll between "env steps"
  every millisecond, p50/p99 over every published version (one a subscriber skipped for a newer one
  counts as applied when that newer one is) (goal p50 < 20 ms).
- actors_2_vs_1: transitions/s inserted with 2 actor processes divided by 1 (goal >= 1.7; the replay
  server shares the same 2 cores here).
- forward_training: env steps/s and updates/s of forward soft-Q training (`mamql local --algo soft-q`,
  1 actor), medians over its status records while the learner updates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from mamql.config import load_config  # noqa: E402
from mamql.portfile import read_port_file  # noqa: E402

TABLES = "replay.tables=[{name: online, capacity: 200000}]"


class NullWriter:
    def put(self, batch, timeout=None):
        return 0


def start_replay(tmp: str) -> tuple[subprocess.Popen, int]:
    port_file = Path(tmp) / f"replay-{time.monotonic_ns()}.ports.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mamql.cli", "replay", "--set", "replay.port=0", "--set", "metrics.enabled=false",
         "--set", TABLES, "--set", "replay.checkpoint_on_exit=false", "--set", f"run.root={tmp}",
         "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp,
    )
    deadline = time.time() + 60
    while (ports := read_port_file(port_file)) is None:  # written once the server is bound and serving
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError("replay server did not start")
        time.sleep(0.1)
    return proc, ports["grpc"]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_actor_streaming(tmp: str, seconds: float) -> dict:
    import torch

    from mamql.envs.registry import env_spec
    from mamql.learner.networks import build_critics
    from mamql.learner.policy import BoltzmannPolicy
    from mamql.replay.client import ReplayClient

    torch.set_num_threads(1)
    config = load_config(None, ["actor.mode=random", "actor.num_envs=8", TABLES])
    results = {}
    for mode in ("random", "learned"):
        # "learned" acts with the paper-size Gems critic from the first step (weights are random)
        policy = BoltzmannPolicy(build_critics(env_spec("gems")), seed=0) if mode == "learned" else None
        bare = _timed(_actor_with_policy(config, NullWriter(), policy), seconds)
        proc, port = start_replay(tmp)
        try:
            client = ReplayClient(f"127.0.0.1:{port}")
            writer = client.writer("online", max_queue_batches=config.actor.send_queue_batches)
            streamed = _timed(_actor_with_policy(config, writer, policy), seconds)
            writer.close(timeout=30)
            client.close()
        finally:
            stop(proc)
        results[mode] = {"bare_steps_per_s": round(bare), "streaming_steps_per_s": round(streamed),
                         "ratio": round(streamed / bare, 3)}
    return results


def _actor_with_policy(config, writer, policy):
    from mamql.actors.actor import Actor

    actor = Actor(config, 0, writer)
    if policy is not None:
        actor.policy, actor.version = policy, 1
    return actor


def _timed(actor, seconds: float) -> float:
    K = actor.env.num_envs
    actor.run(max_steps=K * 20)
    start_steps, start = actor.stats.env_steps, time.perf_counter()
    while time.perf_counter() - start < seconds:
        actor.run(max_steps=actor.stats.env_steps + K * 50)
    return (actor.stats.env_steps - start_steps) / (time.perf_counter() - start)


def bench_learner_remote(tmp: str, updates: int) -> dict:
    import torch

    from mamql.envs.registry import env_spec
    from mamql.learner.demos import collect_demos
    from mamql.learner.updater import make_updater
    from mamql.replay.client import ReplayClient
    from mamql.replay.local import LocalReplay

    torch.set_num_threads(1)  # the replay server and prefetch thread get the other core, as in a deployment
    config = load_config(None, ["learner.hidden=[256]", "learner.batch_size=128", TABLES])
    spec = env_spec("gems")
    data, _ = collect_demos("gems", 4800, seed=0, expert="random")  # random play, like early actors
    data["actor_id"] = np.zeros(len(data["done"]), np.int32)
    data["policy_version"] = np.zeros(len(data["done"]), np.int64)
    expert = {k: v[:128] for k, v in data.items()}
    bs = config.learner.batch_size

    local = LocalReplay(config.replay)
    local.insert("online", data)
    updater = make_updater(spec, config.learner, "cpu")
    for _ in range(3):
        updater.update(expert, local.sample("online", bs).batch)
    start = time.perf_counter()
    for _ in range(updates):
        updater.update(expert, local.sample("online", bs).batch)
    in_process = updates / (time.perf_counter() - start)

    proc, port = start_replay(tmp)
    try:
        client = ReplayClient(f"127.0.0.1:{port}")
        client.insert("online", data, timeout=30)
        stream = client.sample_stream("online", bs, prefetch=4)
        for _ in range(3):
            updater.update(expert, stream.next(timeout=30).batch)
        waits = 0.0
        start = time.perf_counter()
        for _ in range(updates):
            t = time.perf_counter()
            sample = stream.next(timeout=30)
            waits += time.perf_counter() - t
            updater.update(expert, sample.batch)
        remote = updates / (time.perf_counter() - start)
        stream.close()
        client.close()
    finally:
        stop(proc)
    return {"in_process_updates_per_s": round(in_process, 2), "remote_updates_per_s": round(remote, 2),
            "ratio": round(remote / in_process, 3), "remote_sample_wait_fraction": round(waits * remote / updates, 4),
            "critic": "gems CNN + [256] head, batch 128+128, torch 1 thread"}


SUBSCRIBER = r"""
import sys, time
from mamql.actors.weight_subscriber import WeightSubscriber
sub = WeightSubscriber(sys.argv[1], sys.argv[2]).start()
deadline = time.time() + float(sys.argv[3])
while time.time() < deadline:
    w = sub.take()
    if w is not None:
        print(w.version, repr(time.time()), flush=True)
    time.sleep(0.001)
sub.close()
"""


def bench_weight_push(versions: int = 40) -> dict:
    """Three payloads: the paper-size Gems critics in float32 and bfloat16, and a small MLP critic
    (kitchen, 256-256) whose latency is the service's overhead floor."""
    from mamql.envs.registry import env_spec
    from mamql.learner.networks import build_critics
    from mamql.learner.policy import flatten_weights
    from mamql.learner.service import weights_to_numpy

    payloads = {
        "gems_float32": weights_to_numpy(flatten_weights(build_critics(env_spec("gems"))), "float32"),
        "gems_bfloat16": weights_to_numpy(flatten_weights(build_critics(env_spec("gems"))), "bfloat16"),
        "kitchen_mlp_float32": weights_to_numpy(flatten_weights(build_critics(env_spec("kitchen"))), "float32"),
    }
    return {name: _push(arrays, dtypes, versions) for name, (arrays, dtypes) in payloads.items()}


def _push(arrays: dict, dtypes: dict, versions: int) -> dict:
    from mamql.learner.weight_service import WeightStore, serve_weights
    from mamql.protos import rpc

    nbytes = sum(a.nbytes for a in arrays.values())
    store = WeightStore()
    server, _ = rpc.make_server(rpc.Security(), 64)
    serve_weights(store, server)
    port = rpc.bind(server, rpc.Security(), "127.0.0.1", 0)
    server.start()
    duration = 8 + versions * 0.25
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subs = [subprocess.Popen([sys.executable, "-c", SUBSCRIBER, f"127.0.0.1:{port}", f"actor-{i}", str(duration)],
                             stdout=subprocess.PIPE, text=True, env=env) for i in range(4)]
    time.sleep(4)  # subscribers connected
    published = {}
    for v in range(1, versions + 1):
        published[v] = time.time()
        store.publish(arrays, version=v, dtypes=dtypes)
        time.sleep(0.25)
    applied: list[list[tuple[int, float]]] = []  # per subscriber: (version, when) in the order applied
    for proc in subs:
        out, _ = proc.communicate(timeout=duration + 30)
        applied.append([(int(v), float(t)) for v, t in (line.split() for line in out.split("\n") if line.strip())])
    server.stop(0)
    store.close()
    # every version counts, superseded ones too: version v is applied at a subscriber when it
    # applies v or any newer version (it skips to the newest), and everywhere at the last of them
    latencies = []
    for v, when in published.items():
        reached = [min((t for version, t in seen if version >= v), default=None) for seen in applied]
        if None not in reached:
            latencies.append(max(reached) - when)
    ms = np.array(latencies) * 1000
    return {"versions": versions, "reached_all_4": len(latencies),
            "applied_as_published": sum(all(any(version == v for version, _ in seen) for seen in applied)
                                        for v in published),
            "payload_mb": round(nbytes / 1e6, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def bench_actor_scaling(tmp: str, seconds: float) -> dict:
    from mamql.replay.client import ReplayClient

    rates = {}
    for n in (1, 2):
        proc, port = start_replay(tmp)
        try:
            actors = [subprocess.Popen(
                [sys.executable, "-m", "mamql.cli", "actor", "--replay", f"127.0.0.1:{port}", "--mode", "expert",
                 "--num-envs", "8", "--actor-id", str(i), "--set", "metrics.enabled=false", "--set", TABLES],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp) for i in range(n)]
            client = ReplayClient(f"127.0.0.1:{port}")
            time.sleep(4)  # imports, env construction
            first = client.info()["online"].inserted
            start = time.time()
            time.sleep(seconds)
            rates[n] = (client.info()["online"].inserted - first) / (time.time() - start)
            client.close()
            for a in actors:
                stop(a)
        finally:
            stop(proc)
    return {"one_actor_per_s": round(rates[1]), "two_actors_per_s": round(rates[2]),
            "ratio": round(rates[2] / rates[1], 3), "mode": "expert, 8 envs per actor"}


def bench_forward_training(tmp: str, updates: int) -> dict:
    """Forward soft-Q through the whole system: `mamql local --algo soft-q` (replay, learner and one
    actor as processes, the CPU critic `mamql local` picks); env steps/s and updates/s are medians of
    its status records once the learner has started updating."""
    run_root = Path(tmp) / "forward"
    proc = subprocess.run(
        [sys.executable, "-m", "mamql.cli", "local", "--env", "gems", "--algo", "soft-q", "--steps", str(updates),
         "--actors", "1", "--run-name", "bench", "--status-every", "2", "--set", f"run.root={run_root}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"mamql local --algo soft-q failed: {proc.stderr[-2000:]}")
    records = [json.loads(line) for line in (run_root / "bench" / "status.jsonl").read_text().splitlines()]
    training = [r for r in records if r.get("updates", 0) > 0]
    config = load_config(run_root / "bench" / "config.yaml")
    return {"env_steps_per_s": round(float(np.median([r["env_fps"] for r in training])), 1),
            "updates_per_s": round(float(np.median([r["updates_per_s"] for r in training])), 2),
            "updates": updates, "status_records": len(training),
            "critic_hidden": list(config.learner.hidden), "mode": "gems, 1 actor x 8 envs, learner on CPU"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--versions", type=int, default=40, help="weight versions pushed per payload")
    parser.add_argument("--forward-updates", type=int, default=150, help="updates of the soft-q `mamql local` run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "bench": "system",
            "cores": os.cpu_count(),
            "actor_streaming": bench_actor_streaming(tmp, args.seconds),
            "learner_remote": bench_learner_remote(tmp, args.updates),
            "weight_push_ms": bench_weight_push(args.versions),
            "actors_2_vs_1": bench_actor_scaling(tmp, args.seconds),
            "forward_training": bench_forward_training(tmp, args.forward_updates),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
