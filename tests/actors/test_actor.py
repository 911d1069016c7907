"""Actors against a real replay server on 127.0.0.1 (and a real weight service), no mocks."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mamql.actors.actor import EXPERT_VERSION, Actor
from mamql.actors.weight_subscriber import WeightSubscriber
from mamql.learner.networks import build_critics
from mamql.learner.policy import flatten_weights
from mamql.learner.service import weights_to_numpy
from mamql.learner.weight_service import WeightStore, serve_weights
from mamql.config import load_config
from mamql.metrics import new_registry, sample_value
from mamql.protos import rpc
from mamql.replay.client import ReplayClient
from mamql.replay.server import ReplayServer

TABLES = "replay.tables=[{name: online, capacity: 20000}]"


@pytest.fixture
def replay_server(tmp_path):
    config = load_config(None, ["replay.port=0", "metrics.enabled=false", TABLES, f"run.root={tmp_path}",
                                "replay.checkpoint_on_exit=false"])
    server = ReplayServer(config)
    server.start()
    yield server
    server.stop(grace=1.0)




def test_expert_actor_subprocess_streams_exact_counts(replay_server, tmp_path):
    cmd = [sys.executable, "-m", "mamql.cli", "actor", "--replay", replay_server.address, "--mode", "expert",
           "--num-envs", "4", "--max-steps", "1000", "--actor-id", "7", "--set", "metrics.port=0",
           "--set", "actor.send_batch_size=64", "--set", TABLES]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = replay_server.replay.table("online")
    assert table.info().inserted == 1000  # 250 vector steps x 4 envs, all acknowledged before exit
    snap = replay_server.replay.sample("online", 2000, timeout=5).batch
    assert set(np.unique(snap["actor_id"])) == {7}
    assert set(np.unique(snap["policy_version"])) == {EXPERT_VERSION}
    assert snap["obs/agent_0"].dtype == np.uint8 and snap["obs/agent_0"].shape[1:] == (5, 15, 15)
    # the scripted expert collects gems: rewards show up in what the actor sent
    assert snap["reward/agent_0"].sum() > 0 and snap["reward/agent_1"].sum() > 0


def test_actor_exits_zero_on_sigterm_and_flushes(replay_server, tmp_path):
    cmd = [sys.executable, "-m", "mamql.cli", "actor", "--replay", replay_server.address, "--mode", "random",
           "--num-envs", "2", "--set", "metrics.port=0", "--set", "actor.send_batch_size=32", "--set", TABLES]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 60
    while replay_server.replay.table("online").info().inserted < 200 and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    out = proc.stderr.read()
    assert "all acked: True" in out
    inserted = replay_server.replay.table("online").info().inserted
    assert inserted >= 200 and inserted % 2 == 0  # whole vector steps only


def test_learned_actor_applies_newer_versions_and_tags_transitions(replay_server):
    config = load_config(None, ["actor.num_envs=4", "actor.send_batch_size=16", "learner.hidden=[16]", TABLES])
    store = WeightStore()
    server, health = rpc.make_server(rpc.Security(), 64)
    serve_weights(store, server)
    port = rpc.bind(server, rpc.Security(), "127.0.0.1", 0)
    server.start()
    registry = new_registry(process_metrics=False)
    client = ReplayClient(replay_server.address)
    writer = client.writer("online", max_queue_batches=8)
    subscriber = WeightSubscriber(f"127.0.0.1:{port}", "actor-0", registry=registry).start()
    actor = Actor(config, 0, writer, subscriber, registry)
    try:
        stats = actor.run(max_steps=200)  # random play: no weights yet
        assert stats.weight_version == 0
        critics = build_critics(actor.spec, [16])
        for version in (1, 2, 3):
            arrays, dtypes = weights_to_numpy(flatten_weights(critics), "bfloat16" if version == 2 else "float32")
            store.publish(arrays, version=version, dtypes=dtypes)
        deadline = time.time() + 20
        while actor.stats.weight_version < 3 and time.time() < deadline:
            actor.run(max_steps=actor.stats.env_steps + 40)
        assert actor.stats.weight_version == 3
        assert sample_value(registry, "mamql_actor_weight_version") == 3
        assert sample_value(registry, "mamql_weights_apply_latency_seconds_count") >= 1
        writer.flush(timeout=10)
        versions = replay_server.replay.sample("online", 5000, timeout=5).batch["policy_version"]
        assert {0, 3} <= set(np.unique(versions).tolist())
        # the learned policy acts with exactly the published weights
        got = actor.learned.state_dict()
        for name, tensor in flatten_weights(critics).items():
            np.testing.assert_allclose(got[name].numpy(), tensor.numpy(), rtol=0, atol=0)
    finally:
        subscriber.close()
        writer.close(timeout=5)
        client.close()
        server.stop(0)


class CountingWriter:
    def __init__(self):
        self.rewards = 0.0

    def put(self, batch, timeout=None):
        self.rewards += float(batch["reward/agent_0"].sum())
        return 0


def test_episode_return_metrics_match_the_episodes_played():
    """Regression: the returns metric once lost its _sum (histogram with a negative bucket bound)."""
    config = load_config(None, ["actor.mode=random", "actor.num_envs=8", "actor.send_batch_size=64"])
    registry = new_registry(process_metrics=False)
    actor = Actor(config, 0, CountingWriter(), registry=registry)
    actor.run(max_steps=8 * 45 * 12)  # about 96 episodes: all of them stay in recent_returns (last 100)
    played = [r["agent_0"] for r in actor.recent_returns]
    assert 50 <= actor.stats.episodes == len(played) == sample_value(registry, "mamql_actor_episodes_total")
    count = sample_value(registry, "mamql_actor_episode_return_count", {"agent": "agent_0"})
    total = sample_value(registry, "mamql_actor_episode_return_sum", {"agent": "agent_0"})
    assert count == len(played)
    assert total == pytest.approx(sum(played)) and total > 0
    assert total <= actor.writer.rewards  # the rest belongs to episodes still running
