"""Replay data path benchmark: systems side by side, interleaved in short phases; prints ONE JSON line.

Systems (each server a process of its own, each writer or sampler too):
- bare: the transport ceiling. A gRPC bidi sink fed the exact bytes of a mamql InsertRequest, one ack
  per message; for sampling, a server stream of the exact bytes of a SampleResponse, not decoded.
- protobuf: what the generated classes cost, without storage. Writers build and serialise each
  InsertRequest with mamql.codec and the generated classes; the server parses it (FromString +
  codec.decode_batch) and acks. Sampling: the server builds and serialises a SampleResponse from a
  fixed batch; the client parses and decodes it and stages it like the learner.
- mamql: ReplayWriter (each put encoded from the arrays) into a replay server with one table per
  payload; sampling: SampleStream, each batch copied into preallocated host buffers, the copy the
  learner makes into pinned memory (learner/fast.py).
- reverb (with --reverb-python PATH): a dm-reverb 0.14 server; writers append each transition to
  one long-lived TrajectoryWriter and make it an item (so a sample is 256 independent transitions,
  as ours), flushing (waiting for the server's confirmation) every batch; sampling through Reverb's
  TF dataset, batched 256. All run by that interpreter from this same file (its top level imports
  only numpy). Reverb's figures depend on that method: per-transition items cost it a Python call
  or two per transition; `--reverb-items batch` makes each 256-transition batch one item instead
  (fast, but then a sample is one inserted batch, not 256 independent transitions).

Payloads, per transition: P1 obs and next_obs float32[5,15,15] for each of 2 agents, action int64
and reward float32 per agent, done and truncated (18 KB: float observations); P2 the Gems
transitions actors send (uint8 planes plus the metadata columns, ~4.5 KB). Batches of 256.

Every round runs every phase (payload x figure x system) once for --seconds, in an order rotated per
round; workers start, report ready, and all begin together. Ratios are computed within a round and
the medians over rounds reported (`ratios`), with each phase's median rate (`rates`, transitions/s)
and the minor page faults per message of the replay server and its clients (`page_faults`).
Every process of every system gets the same glibc malloc settings: by default those mamql applies
to itself (mamql.wire.tune_allocator, as MALLOC_*_THRESHOLD_ variables), with `--malloc default`
glibc's own (then multi-MB message buffers page-fault in on every message, in every system).

    python bench/replay.py [--rounds 5] [--seconds 3] [--ack-every 1] [--malloc tuned|default] [--reverb-python PATH]

A Python with dm-reverb 0.14 (it pins TensorFlow 2.15 and numpy<2, so give it its own venv):

    python3.11 -m venv /tmp/venv-reverb
    /tmp/venv-reverb/bin/pip install 'dm-reverb[tensorflow]==0.14.0'
    python bench/replay.py --reverb-python /tmp/venv-reverb/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 256
PAYLOADS = ("P1", "P2")
FIGURES = ("insert_1w", "insert_4w", "sample")
CAPACITY = {"P1": 8192, "P2": 32768}  # rows held by each replay table (~150 MB each)
HERE = Path(__file__).resolve()


# ------------------------------------------------------------------------------------ payloads
def batch(payload: str, n: int = BATCH, seed: int = 0) -> dict[str, np.ndarray]:
    """A payload's columns as mamql sends them (per-agent fields; see the module docstring)."""
    rng = np.random.default_rng(seed)
    b: dict[str, np.ndarray] = {}
    for a in ("agent_0", "agent_1"):
        if payload == "P1":
            b[f"obs/{a}"] = rng.random((n, 5, 15, 15), dtype=np.float32)
            b[f"next_obs/{a}"] = rng.random((n, 5, 15, 15), dtype=np.float32)
        else:
            b[f"obs/{a}"] = rng.integers(0, 2, (n, 5, 15, 15), dtype=np.uint8)
            b[f"next_obs/{a}"] = rng.integers(0, 2, (n, 5, 15, 15), dtype=np.uint8)
        b[f"action/{a}"] = rng.integers(0, 5, n).astype(np.int64)
        b[f"reward/{a}"] = rng.random(n, dtype=np.float32)
    b["done"] = np.zeros(n, bool)
    b["truncated"] = np.zeros(n, bool)
    if payload == "P2":
        b["actor_id"] = np.zeros(n, np.int32)
        b["episode_id"] = np.zeros(n, np.int64)
        b["step"] = np.arange(n, dtype=np.int32)
        b["policy_version"] = np.zeros(n, np.int64)
    return b


def reverb_steps(payload: str) -> list[dict[str, np.ndarray]]:
    """The same transitions for Reverb, one dict per transition, agents stacked on a leading axis."""
    b = batch(payload)
    agents = ("agent_0", "agent_1")
    stacked = {k: np.stack([b[f"{k}/{a}"] for a in agents], axis=1) for k in ("obs", "next_obs", "action", "reward")}
    stacked.update({k: v for k, v in b.items() if "/" not in k})
    return [{k: v[i] for k, v in stacked.items()} for i in range(BATCH)]


def insert_bytes(payload: str) -> bytes:
    from mamql.wire import encode_insert

    return encode_insert(payload, batch(payload), 1)


def sample_bytes(payload: str) -> bytes:
    from mamql.wire import encode_sample

    return encode_sample(batch(payload), np.arange(BATCH, dtype=np.uint64))


# ------------------------------------------------------------------------------------ servers
def serve(kind: str, port_file: str, reverb_items: str = "transition") -> None:
    import signal
    import threading

    if kind == "reverb":
        import reverb
        import tensorflow as tf

        def signature(p: str) -> dict:
            lead = (BATCH,) if reverb_items == "batch" else ()
            return {k: tf.TensorSpec(lead + v.shape, tf.as_dtype(v.dtype)) for k, v in reverb_steps(p)[0].items()}

        tables = [reverb.Table(name=p, sampler=reverb.selectors.Uniform(), remover=reverb.selectors.Fifo(),
                               max_size=CAPACITY[p], rate_limiter=reverb.rate_limiters.MinSize(1),
                               signature=signature(p))
                  for p in PAYLOADS]
        server = reverb.Server(tables=tables)
        port = server.port
        stop = lambda: server.stop()  # noqa: E731
    elif kind in ("bare", "protobuf"):
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        from mamql.protos.rpc import server_options

        server = grpc.server(ThreadPoolExecutor(32), options=server_options(64))
        server.add_generic_rpc_handlers([bare_handler() if kind == "bare" else protobuf_handler()])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        stop = lambda: server.stop(0)  # noqa: E731
    else:
        from mamql.batch import schema_of
        from mamql.config import Config, MetricsConfig, ReplayConfig, TableConfig
        from mamql.replay.server import ReplayServer

        tables = tuple(TableConfig(name=p, capacity=CAPACITY[p], schema={k: [d, list(s)] for k, (d, s) in
                                                                         schema_of(batch(p, 1)).items()})
                       for p in PAYLOADS)
        rs = ReplayServer(Config(replay=ReplayConfig(port=0, tables=tables, checkpoint_on_exit=False),
                                 metrics=MetricsConfig(enabled=False)))
        port = rs.start()
        stop = lambda: rs.stop(grace=0.5)  # noqa: E731
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    Path(port_file + ".tmp").write_text(str(port))
    os.replace(port_file + ".tmp", port_file)
    done.wait()
    stop()


def bare_handler():
    import grpc

    responses = {p: sample_bytes(p) for p in PAYLOADS}

    def sink(requests, context):
        for req in requests:
            yield len(req).to_bytes(8, "little")

    def stream(request, context):
        data = responses[request.decode()]
        while context.is_active():
            yield data

    return grpc.method_handlers_generic_handler("bench.Bare", {
        "Insert": grpc.stream_stream_rpc_method_handler(sink),  # raw bytes both ways
        "Sample": grpc.unary_stream_rpc_method_handler(stream)})


def protobuf_handler():
    import grpc

    from mamql.codec import decode_batch, encode_batch, encode_tensor
    from mamql.protos import replay_pb2

    fixed = {p: batch(p) for p in PAYLOADS}

    def insert(requests, context):
        for req in requests:
            decode_batch(req.batch)
            yield replay_pb2.InsertAck(sequence=req.sequence, inserted=BATCH)

    def sample(request, context):
        keys = np.arange(BATCH, dtype=np.uint64)
        while context.is_active():
            yield replay_pb2.SampleResponse(batch=encode_batch(fixed[request.table]), keys=encode_tensor(keys))

    return grpc.method_handlers_generic_handler("bench.Protobuf", {
        "Insert": grpc.stream_stream_rpc_method_handler(
            insert, request_deserializer=replay_pb2.InsertRequest.FromString,
            response_serializer=replay_pb2.InsertAck.SerializeToString),
        "Sample": grpc.unary_stream_rpc_method_handler(
            sample, request_deserializer=replay_pb2.SampleRequest.FromString,
            response_serializer=replay_pb2.SampleResponse.SerializeToString)})


# ------------------------------------------------------------------------------------ workers
def work(system: str, action: str, payload: str, address: str, seconds: float, options) -> dict:
    """One writer or sampler: warm up, report ready, wait for "go" on stdin, run `seconds`."""
    run = {"bare": bare_worker, "protobuf": protobuf_worker, "mamql": mamql_worker,
           "reverb": reverb_worker}[system](action, payload, address, options)
    step = next(run)  # warmed up
    print("ready", flush=True)
    sys.stdin.readline()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    messages = 0
    while time.perf_counter() - start < seconds:
        step()
        messages += 1
    finish = next(run, None)  # e.g. wait for the last acks
    if finish is not None:
        finish()
    elapsed = time.perf_counter() - start
    return {"transitions": messages * BATCH, "messages": messages, "seconds": elapsed,
            "minflt": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}


def stage_buffers(payload: str):
    """The learner's staging copy: every sampled column into a preallocated host buffer."""
    buffers = {k: np.empty_like(v) for k, v in batch(payload).items()}

    def stage(columns) -> None:
        for k, v in columns.items():
            np.copyto(buffers[k], v)

    return stage


def bare_worker(action, payload, address, options):
    import queue

    import grpc

    from mamql.protos.rpc import channel_options

    channel = grpc.insecure_channel(address, options=channel_options(64))
    if action == "insert":
        data = insert_bytes(payload)
        q: queue.Queue = queue.Queue(maxsize=64)
        call = channel.stream_stream("/bench.Bare/Insert")(iter(q.get, None))
        sent = [0]

        def step():
            q.put(data)
            sent[0] += 1
            if sent[0] > 32:  # one ack per message: keep at most 32 in flight, like a writer's queue
                next(call)
                sent[0] -= 1

        for _ in range(8):
            step()
        yield step
        q.put(None)
        yield lambda: [None for _ in call]
        return
    stream = channel.unary_stream("/bench.Bare/Sample")(payload.encode())
    next(stream)
    yield lambda: next(stream)
    yield stream.cancel


def protobuf_worker(action, payload, address, options):
    import queue

    import grpc

    from mamql.codec import decode_batch, encode_batch
    from mamql.protos import replay_pb2
    from mamql.protos.rpc import channel_options

    channel = grpc.insecure_channel(address, options=channel_options(64))
    columns = batch(payload)
    if action == "insert":
        q: queue.Queue = queue.Queue(maxsize=64)
        call = channel.stream_stream("/bench.Protobuf/Insert", request_serializer=None,
                                     response_deserializer=replay_pb2.InsertAck.FromString)(iter(q.get, None))
        sent = [0]

        def step():
            q.put(replay_pb2.InsertRequest(table=payload, batch=encode_batch(columns), sequence=sent[0] + 1)
                  .SerializeToString())
            sent[0] += 1
            if sent[0] > 32:
                next(call)
                sent[0] -= 1

        for _ in range(8):
            step()
        yield step
        q.put(None)
        yield lambda: [None for _ in call]
        return
    stage = stage_buffers(payload)
    stream = channel.unary_stream("/bench.Protobuf/Sample", request_serializer=replay_pb2.SampleRequest.SerializeToString,
                                  response_deserializer=replay_pb2.SampleResponse.FromString)(
        replay_pb2.SampleRequest(table=payload, batch_size=BATCH))
    step = lambda: stage(decode_batch(next(stream).batch))  # noqa: E731
    step()
    yield step
    yield stream.cancel


def mamql_worker(action, payload, address, options):
    from mamql.replay.client import ReplayClient

    client = ReplayClient(address)
    if action == "insert":
        columns = batch(payload)
        writer = client.writer(payload, max_queue_batches=32, ack_every=options.ack_every)
        for _ in range(8):
            writer.put(columns, timeout=60)
        writer.flush(timeout=60)
        yield lambda: writer.put(columns, timeout=60)
        yield lambda: writer.close(timeout=120)
        return
    stage = stage_buffers(payload)
    stream = client.sample_stream(payload, BATCH, prefetch=4)
    stage(stream.next(timeout=60).batch)
    yield lambda: stage(stream.next(timeout=60).batch)
    yield stream.close


def reverb_worker(action, payload, address, options):
    import reverb

    per_row = options.reverb_items == "transition"
    if action == "insert":  # acknowledged (flushed) per batch
        writer = reverb.Client(address).trajectory_writer(num_keep_alive_refs=1)
        steps = reverb_steps(payload) if per_row else [{k: np.stack([s[k] for s in reverb_steps(payload)])
                                                          for k in reverb_steps(payload)[0]}]

        def step():
            for s in steps:  # one item per transition, or one per batch
                writer.append(s)
                writer.create_item(payload, 1.0, {k: writer.history[k][-1] for k in s})
            writer.flush()

        step()
        yield step
        yield writer.close
        return
    dataset = reverb.TrajectoryDataset.from_table_signature(
        server_address=address, table=payload, max_in_flight_samples_per_worker=2 * BATCH if per_row else 4)
    it = iter(dataset.batch(BATCH) if per_row else dataset)
    take = lambda: {k: v.numpy() for k, v in next(it).data.items()}  # noqa: E731
    take()
    yield take


# ------------------------------------------------------------------------------------ driver
def start_server(kind: str, tmp: str, python: str, env: dict, reverb_items: str):
    port_file = os.path.join(tmp, f"port-{kind}")
    proc = subprocess.Popen([python, str(HERE), "--serve", kind, "--port-file", port_file,
                             "--reverb-items", reverb_items], env=env)
    deadline = time.monotonic() + 300
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{kind} server did not start ({proc.returncode})")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{Path(port_file).read_text()}"


def minflt(pid: int) -> int:
    """Minor page faults of a process so far (/proc/<pid>/stat, field 10)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[7])


def phase(system: str, figure: str, payload: str, server, seconds: float, args, python: str, env: dict) -> dict:
    proc, address = server
    action = "sample" if figure == "sample" else "insert"
    n = 4 if figure == "insert_4w" else 1
    cmd = [python, str(HERE), "--work", system, "--action", action, "--payload", payload, "--address", address,
           "--seconds", str(seconds), "--ack-every", str(args.ack_every), "--reverb-items", args.reverb_items]
    workers = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
               for _ in range(n)]
    for w in workers:
        line = w.stdout.readline()
        if line.strip() != "ready":
            for other in workers:
                other.kill()
            raise RuntimeError(f"{system} {figure} {payload} worker failed to start")
    faults = minflt(proc.pid)
    for w in workers:
        w.stdin.write("go\n")
        w.stdin.flush()
    results = []
    for w in workers:
        out, _ = w.communicate(timeout=seconds + 300)
        if w.returncode:
            raise RuntimeError(f"{system} {figure} {payload} worker exited {w.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    messages = sum(r["messages"] for r in results)
    return {"rate": sum(r["transitions"] for r in results) / max(r["seconds"] for r in results),
            "server_faults_per_msg": (minflt(proc.pid) - faults) / max(messages, 1),
            "client_faults_per_msg": sum(r["minflt"] for r in results) / max(messages, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    parser.add_argument("--ack-every", type=int, default=1, help="mamql writers: one ack per this many messages")
    parser.add_argument("--reverb-python", help="a Python with dm-reverb 0.14 (and TensorFlow 2.15) installed")
    parser.add_argument("--reverb-items", choices=("transition", "batch"), default="transition",
                        help="Reverb items: one per transition (a sample is 256 independent ones, as ours) or one "
                             "per 256-transition batch (a sample is one inserted batch)")
    parser.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                        help="glibc malloc thresholds of every process (see the module docstring)")
    parser.add_argument("--payloads", default=",".join(PAYLOADS))
    parser.add_argument("--serve")
    parser.add_argument("--port-file")
    parser.add_argument("--work")
    parser.add_argument("--action")
    parser.add_argument("--payload")
    parser.add_argument("--address")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port_file, args.reverb_items)
    if args.work:
        print(json.dumps(work(args.work, args.action, args.payload, args.address, args.seconds, args)))
        return
    sys.path.insert(0, str(HERE.parent.parent))
    payloads = [p for p in args.payloads.split(",") if p]
    systems = ["bare", "protobuf", "mamql"] + (["reverb"] if args.reverb_python else [])
    pythons = {s: args.reverb_python if s == "reverb" else sys.executable for s in systems}
    phases = [(s, f, p) for p in payloads for f in FIGURES for s in systems]
    from mamql import wire

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
    if args.malloc == "tuned":
        env.update(MALLOC_MMAP_THRESHOLD_=str(wire.MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(wire.TRIM_THRESHOLD))
    else:
        env["MAMQL_MALLOC_TUNING"] = "0"
    runs: dict[tuple, list[dict]] = {key: [] for key in phases}
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {s: start_server(s, tmp, pythons[s], env, args.reverb_items) for s in systems}
        try:
            for r in range(args.rounds):
                rotated = phases[r % len(phases):] + phases[:r % len(phases)]
                this_round = {key: phase(*key, servers[key[0]], args.seconds, args, pythons[key[0]], env)
                              for key in rotated}
                for key, result in this_round.items():
                    runs[key].append(result)
                for p in payloads:
                    for f in FIGURES:
                        ours = this_round[("mamql", f, p)]["rate"]
                        for other in systems:
                            if other != "mamql":
                                ratios.setdefault(f"{p}_{f}_mamql_vs_{other}", []).append(
                                    ours / this_round[(other, f, p)]["rate"])
                        ratios.setdefault(f"{p}_{f}_protobuf_vs_bare", []).append(
                            this_round[("protobuf", f, p)]["rate"] / this_round[("bare", f, p)]["rate"])
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(30)
    result = {
        "bench": "replay", "batch_transitions": BATCH, "cores": os.cpu_count(), "rounds": args.rounds,
        "seconds_per_phase": args.seconds, "ack_every": args.ack_every,
        "malloc": (f"MALLOC_MMAP_THRESHOLD_={wire.MMAP_THRESHOLD} MALLOC_TRIM_THRESHOLD_={wire.TRIM_THRESHOLD}"
                   if args.malloc == "tuned" else "glibc defaults"),
        "bytes_per_transition": {p: round(len(insert_bytes(p)) / BATCH) for p in payloads},
        "ratios": {k: round(statistics.median(v), 3) for k, v in sorted(ratios.items())},
        "ratios_per_round": {k: [round(x, 3) for x in v] for k, v in sorted(ratios.items())},
        "rates": {f"{p}_{f}_{s}": round(statistics.median(r["rate"] for r in runs[(s, f, p)]))
                  for (s, f, p) in phases},
        "page_faults": {f"{p}_{f}_{s}": {side: round(statistics.median(r[f"{side}_faults_per_msg"]
                                                                        for r in runs[(s, f, p)]), 1)
                                         for side in ("server", "client")}
                        for (s, f, p) in phases},
        "reverb": (f"dm-reverb 0.14.0 via {args.reverb_python}, one item per {args.reverb_items}"
                   if args.reverb_python else "not run (--reverb-python)"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
