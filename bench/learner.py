"""Learner benchmark (issue #12): plain per-agent update vs the fast batched step; prints ONE JSON line.

    python bench/learner.py [--seconds 4] [--batch 0]

Paper-size Gems critic (CNN trunk -> 1024 -> 1024 -> 5), 2 agents; `batch` rows per source (expert
and online) per update; 0 = 256 on CUDA (the paper's) and 32 on CPU (256 takes ~1 s per update on
one CPU core). Figures:
- updates: updates/s and ms/update of plain eager, plain under torch.compile (learner.torch_compile;
  compiled during the warm-up), and of the fast path (on CUDA also fast eager,
  fast + CUDA graph fp32 and fast + CUDA graph bf16), and fast/plain speedups. Expert rows live on
  the device (as the service's ExpertSampler keeps them); online rows arrive as numpy (as from
  replay), so host-to-device copies are part of the step.
- replay: the fast path fed from an in-process LocalReplay vs from a replay server subprocess over
  gRPC with a prefetching sample stream; sample_wait_over_step = time waiting for a remote batch
  divided by the update time (< 1 and near 0 = never starved).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mamql.config import LearnerConfig, load_config  # noqa: E402


def gems_data(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Real Gems transitions from random play (uint8 planes, as replay stores them), tagged like an
    actor's rows."""
    from mamql.learner.demos import collect_demos

    batch, _ = collect_demos("gems", rows, seed=seed, expert="random")
    batch["actor_id"] = np.zeros(rows, np.int32)
    batch["policy_version"] = np.zeros(rows, np.int64)
    return batch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_updates(updater, expert_batches, online_batches, seconds: float, device) -> dict:
    """Warm up (a CUDA graph is captured here), then as many updates as fit in `seconds`."""
    n = len(online_batches)
    for i in range(3):
        dict(updater.update(expert_batches[i % n], online_batches[i % n]))
    sync(device)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3:
        updater.update(expert_batches[done % n], online_batches[done % n])
        done += 1
        if device.type == "cuda" and done % 50 == 0:
            sync(device)
    sync(device)
    elapsed = time.perf_counter() - start
    return {"updates_per_s": round(done / elapsed, 2), "ms_per_update": round(1000 * elapsed / done, 3), "updates": done}


def bench_updates(device: torch.device, batch: int, seconds: float) -> dict:
    from mamql.envs.registry import env_spec
    from mamql.learner.fast import FastUpdater
    from mamql.learner.updater import Updater

    spec = env_spec("gems")
    data = gems_data(batch * 8)
    rng = np.random.default_rng(0)
    pick = lambda: {k: v[idx] for idx in [rng.integers(0, len(data["done"]), batch)] for k, v in data.items()}
    expert = [{k: torch.as_tensor(v).to(device) for k, v in pick().items()} for _ in range(4)]
    online = [pick() for _ in range(4)]
    variants = {"plain": (Updater, {}), "plain_compiled": (Updater, {"torch_compile": True})}
    if device.type == "cuda":
        variants |= {"fast_eager": (FastUpdater, {"cuda_graph": False}),
                     "fast_graph_fp32": (FastUpdater, {"cuda_graph": True}),
                     "fast_graph_bf16": (FastUpdater, {"cuda_graph": True, "precision": "bf16"})}
    else:
        variants |= {"fast": (FastUpdater, {})}
    out = {}
    for name, (cls, kw) in variants.items():
        cfg = LearnerConfig(device=str(device), batch_size=batch, fast=cls is FastUpdater, **kw)
        out[name] = time_updates(cls(spec, cfg, device, 0), expert, online, seconds, device)
    base = out["plain"]["ms_per_update"]
    out["speedup_vs_plain"] = {k: round(base / v["ms_per_update"], 3) for k, v in out.items() if k != "plain"}
    return out


def bench_replay(device: torch.device, batch: int, updates: int) -> dict:
    """Fast updater fed in-process vs over gRPC from a replay server process."""
    from bench.system import TABLES, start_replay, stop
    from mamql.envs.registry import env_spec
    from mamql.learner.fast import FastUpdater
    from mamql.replay.client import ReplayClient
    from mamql.replay.local import LocalReplay

    spec = env_spec("gems")
    config = load_config(None, [TABLES])
    data = gems_data(max(2048, batch * 8))
    expert = {k: torch.as_tensor(v[:batch]).to(device) for k, v in data.items()}
    updater = FastUpdater(spec, LearnerConfig(device=str(device), batch_size=batch, fast=True), device, 0)
    local = LocalReplay(config.replay)
    local.insert("online", data)
    for _ in range(3):
        dict(updater.update(expert, local.sample("online", batch).batch))
    sync(device)
    start = time.perf_counter()
    for _ in range(updates):
        updater.update(expert, local.sample("online", batch).batch)
    sync(device)
    in_process = (time.perf_counter() - start) / updates
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_replay(tmp)
        try:
            client = ReplayClient(f"127.0.0.1:{port}")
            client.insert("online", data, timeout=30)
            stream = client.sample_stream("online", batch, prefetch=4)
            for _ in range(3):
                dict(updater.update(expert, stream.next(timeout=30).batch))
            sync(device)
            waits, steps = 0.0, 0.0
            start = time.perf_counter()
            for _ in range(updates):
                t = time.perf_counter()
                sample = stream.next(timeout=30)
                t1 = time.perf_counter()
                waits += t1 - t
                updater.update(expert, sample.batch)
                steps += time.perf_counter() - t1
            sync(device)
            remote = (time.perf_counter() - start) / updates
            stream.close()
            client.close()
        finally:
            stop(proc)
    return {"in_process_ms_per_update": round(1000 * in_process, 3), "remote_ms_per_update": round(1000 * remote, 3),
            "remote_over_in_process_speed": round(in_process / remote, 3),
            "sample_wait_over_step": round(waits / max(steps, 1e-9), 4), "updates": updates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing window per variant")
    parser.add_argument("--batch", type=int, default=0, help="rows per source; 0 = 256 on CUDA, 32 on CPU")
    parser.add_argument("--replay-updates", type=int, default=0, help="0 = 200 on CUDA, 15 on CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared machine: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (256 if device.type == "cuda" else 32)
    result = {
        "bench": "learner",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores, {args.threads} torch threads)",
        "torch": torch.__version__,
        "critic": "gems paper size: conv32-conv64(s2) -> 1024 -> 1024 -> 5, 2 agents",
        "batch_per_source": batch,
        "updates": bench_updates(device, batch, args.seconds),
        "replay": bench_replay(device, batch, args.replay_updates or (200 if device.type == "cuda" else 15)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
