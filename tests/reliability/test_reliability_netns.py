"""Multi-host in network namespaces: replay, learner and actors each in their own namespace (10.213.0.x
on a bridge in a fourth, hub namespace), token auth on non-loopback addresses; cut the actors' link,
restore it, and check the system recovers without loss or deadlock; or add latency with netem. Each
test gets its own cluster (the link test stops the actor). Needs root, iproute2 (CI fails without it)
and a kernel that allows network namespaces (and sch_netem); skipped with the reason otherwise.
Namespaces are deleted in `finally`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from reliability_helpers import FAST, child_env, kill_all, spawn, stop, tail, wait_until  # noqa: E402
from system_tools import ensure_debian_packages  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.slow]

TOKEN = "netns-token-0123456789"
NS = {"replay": ("mqrel-replay", "10.213.0.1"), "learner": ("mqrel-learner", "10.213.0.2"),
      "actors": ("mqrel-actors", "10.213.0.3")}
HUB = "mqrel-hub"
METRICS = {"replay": 9101, "learner": 9201, "actor-0": 9301}


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=20)


def require_netns(netem: bool = False) -> None:
    """Skip where root or the kernel is missing; iproute2 itself is a test dependency (system_tools)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ensure_debian_packages(["iproute2"], ["ip", "tc"])
    sh("ip", "netns", "del", "mqrel-probe", check=False)
    probe = sh("ip", "netns", "add", "mqrel-probe", check=False)
    try:
        if probe.returncode:
            pytest.skip(f"the kernel refuses a network namespace here (no CAP_SYS_ADMIN?): {probe.stderr.strip()}")
        if netem:
            qdisc = sh("ip", "netns", "exec", "mqrel-probe", "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                       "delay", "1ms", check=False)
            if qdisc.returncode:
                pytest.skip(f"the kernel has no sch_netem module (tc netem): {qdisc.stderr.strip()}")
    finally:
        sh("ip", "netns", "del", "mqrel-probe", check=False)


def setup_namespaces() -> None:
    sh("ip", "netns", "add", HUB)
    sh("ip", "-n", HUB, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", HUB, "link", "set", "br0", "up")
    for i, (role, (ns, addr)) in enumerate(NS.items()):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"mqrel{i}", "netns", ns, "type", "veth", "peer", "name", f"mqrel{i}h", "netns", HUB)
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", f"mqrel{i}")
        sh("ip", "-n", ns, "link", "set", f"mqrel{i}", "up")
        sh("ip", "-n", HUB, "link", "set", f"mqrel{i}h", "master", "br0")
        sh("ip", "-n", HUB, "link", "set", f"mqrel{i}h", "up")


def teardown_namespaces() -> None:
    for ns in [HUB, *(ns for ns, _ in NS.values())]:
        sh("ip", "netns", "del", ns, check=False)


def scrape_in(ns: str, port: int, name: str) -> float:
    """A metric's total from a process's /metrics on its namespace's loopback."""
    code = (f"from mamql.supervisor import scrape, total; "
            f"print(total(scrape('http://127.0.0.1:{port}/metrics'), '{name}'))")
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=20, env=child_env())
    try:
        return float(out.stdout.strip() or 0)
    except ValueError:
        return 0.0


@pytest.fixture
def netem():
    require_netns(netem=True)


@pytest.fixture
def cluster(tmp_path_factory, demos_path):
    """A fresh replay/learner/actor-0 cluster for each test, streaming and receiving weights."""
    require_netns()
    tmp = tmp_path_factory.mktemp("netns")
    (tmp / "token").write_text(TOKEN)
    common = [*FAST, "--set", "replay.tables=[{name: online, capacity: 60000, min_size_to_sample: 64, "
              "samples_per_insert: 1.0, error_buffer: 3000.0}]", "--set", f"auth.token_file={tmp / 'token'}",
              "--set", f"run.root={tmp}", "--set", "replay.checkpoint_on_exit=false"]
    procs = {}
    teardown_namespaces()
    try:
        setup_namespaces()
        rns, raddr = NS["replay"]
        lns, laddr = NS["learner"]
        ans, _ = NS["actors"]
        procs["replay"] = spawn(["replay", *common, "--set", f"replay.host={raddr}", "--set", "replay.port=7100",
                                 "--set", f"metrics.port={METRICS['replay']}"], tmp / "replay.log",
                                prefix=["ip", "netns", "exec", rns])
        procs["learner"] = spawn(["learner", *common, "--replay", f"{raddr}:7100", "--demos", demos_path,
                                  "--steps", "0", "--run-dir", str(tmp / "run"), "--set", f"weights.host={laddr}",
                                  "--set", "weights.port=7200", "--set", f"metrics.port={METRICS['learner']}"],
                                 tmp / "learner.log", prefix=["ip", "netns", "exec", lns])
        procs["actor-0"] = spawn(["actor", *common, "--replay", f"{raddr}:7100", "--weights", f"{laddr}:7200",
                                  "--actor-id", "0", "--set", f"metrics.port={METRICS['actor-0']}"],
                                 tmp / "actor-0.log", prefix=["ip", "netns", "exec", ans])
        get = {
            "acked": lambda: scrape_in(ans, METRICS["actor-0"], "mamql_replay_writer_acked_transitions_total"),
            "version": lambda: scrape_in(ans, METRICS["actor-0"], "mamql_actor_weight_version"),
            "updates": lambda: scrape_in(lns, METRICS["learner"], "mamql_learner_updates_total"),
            "inserted": lambda: scrape_in(rns, METRICS["replay"], "mamql_replay_inserted_transitions_total"),
        }
        try:
            wait_until(lambda: get["acked"]() > 0 and get["version"]() >= 2 and get["updates"]() >= 5, 180,
                       "actors streaming and receiving weights across namespaces", list(procs.values()), interval=1)
        except AssertionError:
            print("\n".join(f"--- {n}\n{tail(tmp / f'{n}.log')}" for n in procs))
            raise
        yield {"procs": procs, "get": get, "tmp": tmp}
    finally:
        kill_all(procs.values())
        teardown_namespaces()


def test_link_cut_and_restore_recovers_without_loss_or_deadlock(cluster):
    get, procs, tmp = cluster["get"], cluster["procs"], cluster["tmp"]
    ans, _ = NS["actors"]
    acked0, version0, updates0 = get["acked"](), get["version"](), get["updates"]()
    sh("ip", "-n", ans, "link", "set", "mqrel2", "down")
    try:
        time.sleep(4.0)
        cut_acked = get["acked"]()
        assert all(p.poll() is None for p in procs.values()), "a process died while the link was down"
    finally:
        sh("ip", "-n", ans, "link", "set", "mqrel2", "up")
    # recovery: the actor's acked count, its weight version and the learner's updates all move on
    wait_until(lambda: get["acked"]() > cut_acked + 8 * 32 and get["version"]() > version0
               and get["updates"]() > updates0 + 5, 120, "recovery after the link came back",
               list(procs.values()), interval=1)
    assert get["acked"]() > acked0
    # no loss: SIGTERM the actor; it flushes everything it produced, and the replay holds >= that
    last_acked = get["acked"]()
    assert stop(procs["actor-0"], signal.SIGTERM, timeout=60) == 0
    log = tail(tmp / "actor-0.log", 5000)
    assert "all acked: True" in log, log
    assert get["inserted"]() >= last_acked > 0


def test_netem_latency_keeps_throughput_within_a_factor(netem, cluster):
    ans, _ = NS["actors"]
    get = cluster["get"]

    def rate(seconds=6.0):
        a, t = get["updates"](), time.monotonic()
        time.sleep(seconds)
        return (get["updates"]() - a) / (time.monotonic() - t)

    base = rate()
    sh("ip", "netns", "exec", ans, "tc", "qdisc", "add", "dev", "mqrel2", "root", "netem", "delay", "20ms")
    try:
        slow = rate()
    finally:
        sh("ip", "netns", "exec", ans, "tc", "qdisc", "del", "dev", "mqrel2", "root", check=False)
    # 20 ms each way on the actors' link: streaming inserts and prefetching keep >= 1/4 of the rate
    assert base > 0 and slow >= base / 4, (base, slow)
