"""`mamql collect` end to end: real replay and actor processes, real gRPC on 127.0.0.1 (and the
assembler's episode order, in process)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mamql.actors.actor import Actor
from mamql.actors.collect import EpisodeAssembler, actor_seed, rerun_expert
from mamql.config import load_config
from mamql.replay.dataset import load_dataset, read_manifest, verify_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MAX_LEN = 45  # gems max_steps: the longest possible episode


def mamql(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mamql.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=kwargs.pop("timeout", 90), **kwargs)


def collect_args(tmp_path, out, *extra) -> list[str]:
    return ["collect", "--env", "gems", "--actors", "2", "--num-envs", "4", "--out", str(out), "--no-progress",
            "--set", f"run.root={tmp_path / 'runs'}", *extra]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is not alive
        return f.read().split(")")[-1].split()[0] != "Z"


def test_actor_seed_rule_matches_actor():
    config = load_config(None, ["env.seed=5", "actor.mode=random", "actor.num_envs=1"])
    assert Actor(config, 3, writer=None).env.seed == actor_seed(5, 3)


def expert_rerun(actor_id: int, want: set[int]) -> dict[int, dict[str, np.ndarray]]:
    """Episodes `want` of actor `actor_id`, re-run from its seed (4 env copies). Episode ids are handed
    out in order, so once every copy is past max(want) all of them have finished: this always ends."""
    ref: dict[int, list] = {}
    for step in rerun_expert("gems", 0, actor_id, 4):
        for i, e in enumerate(step["episode_id"].tolist()):
            if e in want:
                ref.setdefault(e, []).append({k: v[i] for k, v in step.items()})
        if step["episode_id"].min() > max(want):
            return {e: {k: np.stack([r[k] for r in rows]) for k in rows[0]} for e, rows in ref.items()}


def test_assembler_yields_episodes_in_arrival_order():
    """Episodes come out in the order their last row arrived, not sorted by actor id: a collection
    that reaches its target mid-sample must not keep only actor 0's episodes."""
    def first_episode(actor_id):
        rows = []
        for step in rerun_expert("gems", 0, actor_id, 1):
            rows.append(step)
            if step["done"][0] or step["truncated"][0]:
                return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    a0, a1 = first_episode(0), first_episode(1)
    # actor 0's episode is all there but its last row, then actor 1's whole episode, then that row
    batch = {k: np.concatenate([a0[k][:-1], a1[k], a0[k][-1:]]) for k in a0}
    got = EpisodeAssembler(env_seed=0).add(batch)
    assert [int(e["actor_id"][0]) for e in got] == [1, 0]
    for e, want in zip(got, (a1, a0)):
        np.testing.assert_array_equal(e["step"], want["step"])


def test_collect_2k_matches_expert_rerun_and_cli_tools(tmp_path):
    out = tmp_path / "ds"
    res = mamql(*collect_args(tmp_path, out, "--transitions", "2000", "--shard-transitions", "500"))
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = read_manifest(out)
    n = manifest["counts"]["transitions"]
    assert manifest["complete"] and 2000 <= n < 2000 + MAX_LEN
    assert manifest["counts"]["shards"] == len(manifest["shards"]) >= 4
    assert "agent_0: return" in res.stdout and manifest["returns"]["agent_0"]["mean"] > 10  # the expert scores
    assert manifest["collection"]["runs"][0]["actor_ids"] == [0, 1]  # reserved before they start

    # What the design guarantees (which actor got its episodes in first is up to the scheduler):
    # whole episodes with unique ids from the reserved actors, counts that add up, ...
    report = verify_dataset(out)
    assert report.ok, report.errors
    batch = load_dataset(out)
    starts = batch["step"] == 0
    keys = set(zip(batch["actor_id"][starts].tolist(), batch["episode_id"][starts].tolist()))
    assert len(batch["step"]) == n and len(keys) == starts.sum() == manifest["counts"]["episodes"]
    actors = set(batch["actor_id"].tolist())
    assert actors and actors <= {0, 1}
    assert np.all(batch["policy_version"] == -1)
    # ... and every episode equals what the scripted expert produces when re-run from its actor's seed.
    for aid in sorted(actors):
        rows = batch["actor_id"] == aid
        assert np.all(batch["env_seed"][rows] == actor_seed(0, aid))
        want = set(batch["episode_id"][rows].tolist())
        ref = expert_rerun(aid, want)
        assert set(ref) == want
        for e in want:
            got = {k: v[batch["episode_id"] == e] for k, v in batch.items()}
            for k in ref[e]:
                np.testing.assert_array_equal(got[k], ref[e][k], err_msg=f"{e} {k}")

    info = mamql("dataset", "info", str(out))
    assert info.returncode == 0 and f"{n} transitions" in info.stdout and "agent_1" in info.stdout
    ok = mamql("dataset", "verify", str(out))
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stderr
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    victim = manifest["shards"][2]["file"]
    with open(bad / victim, "r+b") as f:
        f.seek(-100, os.SEEK_END)
        f.write(b"\x00" * 8)
    fail = mamql("dataset", "verify", str(bad))
    assert fail.returncode == 1 and f"FAIL {victim}: sha256 mismatch" in fail.stderr
    again = mamql(*collect_args(tmp_path, out, "--transitions", "2000"))
    assert again.returncode == 2 and "--resume" in again.stderr  # never silently appends


def test_killed_collector_resumes_without_duplicates(tmp_path):
    out = tmp_path / "ds"
    args = [sys.executable, "-m", "mamql.cli",
            *collect_args(tmp_path, out, "--transitions", "6000", "--shard-transitions", "400")]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if (out / "manifest.json").exists() and read_manifest(out)["counts"]["shards"] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no cleanup at all: the writer dies wherever it is
    proc.wait()
    children = json.loads(next((tmp_path / "runs").glob("*/processes.json")).read_text())
    before = read_manifest(out)
    assert not before["complete"] and 3 <= before["counts"]["shards"]
    assert before["counts"]["transitions"] < 6000, "collection finished before the kill; test proves nothing"
    report = verify_dataset(out)
    assert report.ok, report.errors
    deadline = time.monotonic() + 10
    while any(alive(c["pid"]) for c in children.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [n for n, c in children.items() if alive(c["pid"])], "children outlived the collector"

    res = subprocess.run(args + ["--resume"], capture_output=True, text=True, cwd=ROOT, timeout=90)
    assert res.returncode == 0, res.stderr[-3000:]
    after = read_manifest(out)
    assert after["complete"] and 6000 <= after["counts"]["transitions"] < 6000 + MAX_LEN
    # shards committed before the kill are untouched; the resumed run used fresh actor ids
    assert after["shards"][: len(before["shards"])] == before["shards"]
    assert after["collection"]["runs"][1]["actor_ids"] == [2, 3]
    report = verify_dataset(out)  # includes: no (actor_id, episode_id) twice across shards
    assert report.ok, report.errors
    batch = load_dataset(out)
    keys = set(zip(batch["actor_id"][batch["step"] == 0].tolist(), batch["episode_id"][batch["step"] == 0].tolist()))
    assert len(keys) == after["counts"]["episodes"] == report.episodes
    first = sum(s["episodes"] for s in before["shards"])
    assert set(batch["actor_id"][batch["step"] == 0][:first].tolist()) <= {0, 1}
    # the resumed actors' ids are fresh; which of them delivered the remaining episodes is timing
    resumed = set(batch["actor_id"][batch["step"] == 0][first:].tolist())
    assert resumed and resumed <= {2, 3}


def test_collect_from_remote_replay_exact_episodes(tmp_path):
    """--replay: a replay service and an actor started elsewhere; the collector only reads. The
    collector starts FIRST: it must wait for the replay to come up rather than fail."""
    port = _unused_port()  # the collector needs the address before the replay exists
    cfg = tmp_path / "replay.yaml"
    cfg.write_text("replay:\n  tables:\n  - {name: collect, capacity: 20000, sampler: fifo}\n"
                   f"  port: {port}\n  checkpoint_on_exit: false\nmetrics:\n  enabled: false\n")
    collect = subprocess.Popen(
        [sys.executable, "-m", "mamql.cli", "collect", "--env", "gems", "--replay", f"127.0.0.1:{port}",
         "--episodes", "15", "--out", str(tmp_path / "ds"), "--no-progress", "--set", f"run.root={tmp_path / 'runs'}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    replay = subprocess.Popen([sys.executable, "-m", "mamql.cli", "replay", "--config", str(cfg)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    actor = None
    try:
        actor = subprocess.Popen([sys.executable, "-m", "mamql.cli", "actor", "--replay", f"127.0.0.1:{port}",
                                  "--mode", "expert", "--actor-id", "9", "--num-envs", "2", "--max-steps", "3000",
                                  "--set", "actor.table=collect", "--set", "metrics.enabled=false"],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, stderr = collect.communicate(timeout=120)
        assert collect.returncode == 0, stderr[-3000:]
        assert "waiting for the replay" in stderr
        m = read_manifest(tmp_path / "ds")
        assert m["complete"] and m["counts"]["episodes"] == 15 and m["collection"]["runs"][0]["actor_ids"] == []
        batch = load_dataset(tmp_path / "ds")
        assert set(batch["actor_id"].tolist()) == {9} and verify_dataset(tmp_path / "ds").ok
    finally:
        for p in (collect, actor, replay):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=20)


def _unused_port() -> int:
    """A port picked up front, for this test's one server that must start after its client."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
