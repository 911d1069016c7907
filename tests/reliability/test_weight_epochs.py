"""Weight versions across learner incarnations, and one temperature for acting and learning.

A learner started without a checkpoint begins again at version 1; subscribers used to ignore its
versions (not newer than theirs), so actors kept acting with a dead learner's weights. Versions now
carry the learner's epoch (and its alpha): actors switch to a new epoch at once, sample at the
learner's temperature, and the policy lag is only measured within an epoch.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from reliability_helpers import FAST, kill_all, spawn, stop, tail, wait_until  # noqa: E402

from mamql.config import ConfigError, load_config, with_updates  # noqa: E402
from mamql.metrics import new_registry, sample_value  # noqa: E402
from mamql.protos import weights_pb2, weights_pb2_grpc  # noqa: E402

OVERRIDES = [a for a in FAST if a != "--set"]  # FAST as load_config overrides


def learner_service(tmp_path, demos_path, **learner):
    from mamql.learner.service import LearnerService

    cfg = with_updates(load_config(None, OVERRIDES), weights={"port": 0}, metrics={"enabled": False},
                       learner={"device": "cpu", **learner})
    return LearnerService(cfg, "127.0.0.1:1", demos_path, run_dir=str(tmp_path))


def test_epoch_survives_resume_and_a_fresh_learner_gets_a_new_one(tmp_path, demos_path):
    first = learner_service(tmp_path, demos_path)
    first.publish()
    first.save()
    resumed = learner_service(tmp_path, demos_path)
    assert resumed.resume() and resumed.epoch == first.epoch  # versions of one learner stay ordered
    assert resumed.version > first.version
    fresh = learner_service(tmp_path / "elsewhere", demos_path)
    assert not fresh.resume() and fresh.epoch not in (0, first.epoch)
    for service in (first, resumed, fresh):
        service.close()


def test_policy_lag_is_measured_within_the_learner_epoch(tmp_path, demos_path):
    service = learner_service(tmp_path, demos_path)
    try:
        service.version = 10
        other = service.epoch + 1
        #          own epoch (lags 2, 0)  | a dead learner's (would be -30, +7) | random play | expert
        versions = np.array([8, 10, 40, 3, 0, -1], np.int64)
        epochs = np.array([service.epoch, service.epoch, other, other, 0, 0], np.int64)
        service.observe_lag({"policy_version": versions, "policy_epoch": epochs})
        registry = service.registry
        assert sample_value(registry, "mamql_learner_policy_lag_count") == 2
        assert sample_value(registry, "mamql_learner_policy_lag_sum") == 2.0
        assert sample_value(registry, "mamql_learner_lag_skipped_transitions_total") == 4
        # rows from a writer without the epoch column: the version alone, never a negative lag
        service.observe_lag({"policy_version": np.array([9, 12, -1], np.int64)})
        assert sample_value(registry, "mamql_learner_policy_lag_count") == 3
        assert sample_value(registry, "mamql_learner_lag_skipped_transitions_total") == 6
    finally:
        service.close()


def test_actors_have_no_temperature_of_their_own():
    with pytest.raises(ConfigError, match="actor.temperature"):  # it is learner.alpha, sent with the weights
        load_config(None, ["actor.temperature=0.5"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _latest_epoch(port: int) -> int | None:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            chunks = list(weights_pb2_grpc.WeightServiceStub(channel).GetLatest(weights_pb2.GetLatestRequest(),
                                                                                timeout=2))
        return chunks[0].epoch
    except grpc.RpcError:
        return None


@pytest.mark.slow
def test_actor_follows_a_fresh_learner_after_kill9_at_its_temperature(tmp_path, demos_path):
    """Learner A (alpha 0.5) is SIGKILLed; learner B (alpha 0.25, no checkpoint, publishes only its
    version 1) takes the same weights port. The actor, configured with learner.alpha = 1, acts with
    A's weights at 0.5, then within seconds of B's first version with B's weights at 0.25."""
    from mamql.actors.actor import Actor
    from mamql.actors.weight_subscriber import WeightSubscriber
    from mamql.replay.client import ReplayClient
    from mamql.replay.server import ReplayServer

    table = "replay.tables=[{name: online, capacity: 20000, min_size_to_sample: 64, samples_per_insert: 0.0}]"
    replay = ReplayServer(load_config(None, [table, "replay.port=0", "metrics.enabled=false",
                                             "replay.checkpoint_on_exit=false"]))
    replay.start()
    port = _free_port()

    def learner(name: str, *extra: str):
        return spawn(["learner", *FAST, "--replay", replay.address, "--demos", demos_path, "--steps", "0",
                      "--run-dir", str(tmp_path / name), "--set", f"weights.port={port}",
                      "--set", "metrics.enabled=false", *extra], tmp_path / f"{name}.log")

    config = load_config(None, OVERRIDES)  # learner.alpha stays 1.0 here: the actor must not use it
    client = ReplayClient(replay.address)
    writer = client.writer("online", max_queue_batches=8)
    registry = new_registry(process_metrics=False)
    subscriber = WeightSubscriber(f"127.0.0.1:{port}", "actor-0", registry=registry, backoff_initial_s=0.1).start()
    actor = Actor(config, 0, writer, subscriber)
    thread = threading.Thread(target=actor.run, daemon=True)
    procs = [learner("a", "--set", "learner.alpha=0.5")]
    try:
        thread.start()
        wait_until(lambda: actor.stats.weight_version >= 3, 180, "the actor on learner A's version 3", procs)
        epoch_a = actor.stats.weight_epoch
        assert epoch_a != 0 and actor.learned.alpha == 0.5

        stop(procs[0], signal.SIGKILL)
        procs.append(learner("b", "--set", "learner.alpha=0.25", "--set", "weights.publish_every=1000000"))
        wait_until(lambda: _latest_epoch(port) not in (None, epoch_a), 180, "learner B publishing", procs[1:])
        published = time.monotonic()
        wait_until(lambda: actor.stats.weight_epoch not in (0, epoch_a), 20,
                   "the actor to switch to learner B's epoch", procs[1:])
        print(f"actor on the new learner's weights {time.monotonic() - published:.1f}s after its first version")
        assert actor.stats.weight_version == 1 and actor.learned.alpha == 0.25
        assert actor.stats.weight_epoch == _latest_epoch(port)
        assert sample_value(registry, "mamql_actor_weight_reconnects_total") >= 1
        # and the transitions say which learner's policy acted
        steps = actor.stats.env_steps
        wait_until(lambda: actor.stats.env_steps > steps + 64, 60, "the actor to keep stepping")
        assert writer.flush(timeout=30)
        epochs = replay.replay.sample("online", 4000, timeout=5).batch["policy_epoch"]
        assert {0, epoch_a, actor.stats.weight_epoch} >= set(np.unique(epochs).tolist())
        assert actor.stats.weight_epoch in set(np.unique(epochs).tolist())
    except AssertionError:
        print("\n".join(f"--- {n}\n{tail(tmp_path / f'{n}.log', 1500)}" for n in ("a", "b")))
        raise
    finally:
        actor.stop()
        thread.join(timeout=30)
        kill_all(procs)
        subscriber.close()
        writer.close(timeout=5)
        client.close()
        replay.stop(grace=0.5, final_checkpoint=False)
