"""Replay throughput benchmark; prints ONE JSON line.

Servers and clients run in separate processes (fair with the GIL): (a) a bare gRPC bidi sink with the
same stream shape (one ack per message) fed the exact serialized InsertRequest bytes, (b) replay
inserts through ReplayWriter (encoding every batch) with 1 and 4 writers, (c) sampling through
SampleStream, (d) 2 writers + 1 sampler at once. Batches: 256 Gems transitions (~2.3 KB each).

    python bench/replay.py [--seconds 4]
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

import numpy as np

BATCH = 256
BARE_METHOD = "/bench.Sink/Insert"


def gems_batch(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    b = {}
    for a in ("agent_0", "agent_1"):
        b[f"obs/{a}"] = rng.integers(0, 2, (n, 5, 15, 15), dtype=np.uint8)
        b[f"action/{a}"] = rng.integers(0, 5, n).astype(np.int64)
        b[f"reward/{a}"] = rng.random(n, dtype=np.float32)
        b[f"next_obs/{a}"] = rng.integers(0, 2, (n, 5, 15, 15), dtype=np.uint8)
    b["done"] = np.zeros(n, bool)
    b["truncated"] = np.zeros(n, bool)
    b["actor_id"] = np.zeros(n, np.int32)
    b["episode_id"] = np.zeros(n, np.int64)
    b["step"] = np.arange(n, dtype=np.int32)
    b["policy_version"] = np.zeros(n, np.int64)
    return b


def payload() -> bytes:
    from mamql.replay.client import encode_request

    return encode_request("online", gems_batch(BATCH), 1).SerializeToString()


# ---------------------------------------------------------------------------------------- servers
def serve(kind: str, port_file: str) -> None:
    import signal
    import threading

    import grpc

    from mamql.config import Config, ReplayConfig, TableConfig, MetricsConfig
    from mamql.protos.rpc import server_options

    if kind == "bare":
        def sink(requests, context):
            for req in requests:
                yield len(req).to_bytes(8, "little")

        server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(32),
                             options=server_options(64))
        handler = grpc.stream_stream_rpc_method_handler(sink)  # raw bytes in and out
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Sink", {"Insert": handler})])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        stop = lambda: server.stop(0)  # noqa: E731
    else:
        from mamql.replay.server import ReplayServer

        from mamql.batch import schema_of

        schema = {k: [d, list(sh)] for k, (d, sh) in schema_of(gems_batch(1)).items()}  # allocate up front
        config = Config(replay=ReplayConfig(port=0, tables=(TableConfig(name="online", capacity=100_000,
                                                                        schema=schema),),
                                            checkpoint_on_exit=False), metrics=MetricsConfig(enabled=False))
        rs = ReplayServer(config)
        port = rs.start()
        stop = lambda: rs.stop(grace=0.5)  # noqa: E731
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    Path(port_file + ".tmp").write_text(str(port))
    os.replace(port_file + ".tmp", port_file)
    done.wait()
    stop()


# ---------------------------------------------------------------------------------------- workers
def work(kind: str, address: str, seconds: float) -> dict:
    import grpc

    if kind == "bare":
        from mamql.protos.rpc import channel_options

        data = payload()
        channel = grpc.insecure_channel(address, options=channel_options(64))
        call = channel.stream_stream(BARE_METHOD)  # no serializers: raw bytes
        deadline = time.monotonic() + seconds

        def requests():
            while time.monotonic() < deadline:
                yield data

        start = time.monotonic()
        acks = sum(1 for _ in call(requests()))
        elapsed = time.monotonic() - start
        return {"transitions": acks * BATCH, "bytes": acks * len(data), "seconds": elapsed}

    from mamql.replay.client import ReplayClient

    client = ReplayClient(address)
    if kind == "insert":
        batch = gems_batch(BATCH)
        size = len(payload())
        writer = client.writer("online", max_queue_batches=64)
        start = time.monotonic()
        puts = 0
        while time.monotonic() - start < seconds:
            writer.put(batch, timeout=30)
            puts += 1
        writer.close(timeout=60)
        elapsed = time.monotonic() - start
        return {"transitions": writer.acked_transitions, "bytes": writer.acked_batches * size, "seconds": elapsed}
    # sample
    stream = client.sample_stream("online", BATCH, prefetch=8)
    stream.next(timeout=30)
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        n += len(stream.next(timeout=30).keys)
    elapsed = time.monotonic() - start
    stream.close()
    return {"transitions": n, "bytes": n * len(payload()) // BATCH, "seconds": elapsed}


# ---------------------------------------------------------------------------------------- driver
def start_server(kind: str, tmp: str):
    port_file = os.path.join(tmp, f"port-{kind}-{time.monotonic_ns()}")
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port-file", port_file])
    while not os.path.exists(port_file):
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited {proc.returncode}")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{Path(port_file).read_text()}"


def run_workers(specs: list[tuple[str, str]], seconds: float) -> dict[str, dict]:
    """specs: (kind, address); returns totals per kind (rates over the slowest worker's time)."""
    procs = [(kind, subprocess.Popen([sys.executable, __file__, "--work", kind, "--address", addr,
                                      "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True))
             for kind, addr in specs]
    totals: dict[str, dict] = {}
    for kind, p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        if p.returncode:
            raise RuntimeError(f"{kind} worker failed ({p.returncode})")
        r = json.loads(out)
        t = totals.setdefault(kind, {"transitions": 0, "bytes": 0, "seconds": 0.0})
        t["transitions"] += r["transitions"]
        t["bytes"] += r["bytes"]
        t["seconds"] = max(t["seconds"], r["seconds"])
    return {k: {"transitions_per_s": round(v["transitions"] / v["seconds"]),
                "mb_per_s": round(v["bytes"] / v["seconds"] / 1e6, 1)} for k, v in totals.items()}


def reverb_status() -> str:
    try:
        import reverb  # noqa: F401

        return "available (not benchmarked)"
    except Exception as exc:
        return ("unavailable: the dm-reverb 0.14.0 cp311 wheel downloads but needs a TensorFlow 2.15 runtime "
                f"(libtensorflow_framework), which pins numpy<2 and is not installed ({type(exc).__name__})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--serve")
    parser.add_argument("--port-file")
    parser.add_argument("--work")
    parser.add_argument("--address")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port_file)
    if args.work:
        print(json.dumps(work(args.work, args.address, args.seconds)))
        return
    s = args.seconds
    result = {"bench": "replay", "batch_transitions": BATCH,
              "bytes_per_transition": round(len(payload()) / BATCH), "cores": os.cpu_count(), "seconds_per_phase": s}
    with tempfile.TemporaryDirectory() as tmp:
        bare, bare_addr = start_server("bare", tmp)
        try:
            result["bare_grpc_1w"] = run_workers([("bare", bare_addr)], s)["bare"]
            result["bare_grpc_4w"] = run_workers([("bare", bare_addr)] * 4, s)["bare"]
        finally:
            bare.terminate()
            bare.wait(10)
        srv, addr = start_server("replay", tmp)
        try:
            result["insert_1w"] = run_workers([("insert", addr)], s)["insert"]
            result["insert_4w"] = run_workers([("insert", addr)] * 4, s)["insert"]
            result["sample_1r"] = run_workers([("sample", addr)], s)["sample"]
            result["mix_2w_1r"] = run_workers([("insert", addr)] * 2 + [("sample", addr)], s)
        finally:
            srv.terminate()
            srv.wait(10)
    result["ratio_insert_vs_bare"] = round(
        result["insert_1w"]["transitions_per_s"] / result["bare_grpc_1w"]["transitions_per_s"], 3)
    result["ratio_insert_vs_bare_4w"] = round(
        result["insert_4w"]["transitions_per_s"] / result["bare_grpc_4w"]["transitions_per_s"], 3)
    result["reverb"] = reverb_status()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
