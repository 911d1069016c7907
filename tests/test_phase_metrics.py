"""Time by phase through the real system: a replay server, a learner service and a learned actor in
this process, on real gRPC and real /metrics endpoints on 127.0.0.1, read the way the status line
reads them (mamql.supervisor.scrape). Every documented phase is exported by its process kind, the
counters grow while the system works, and once the learner stops sampling, the rate limiter holds
the actor back and mamql.phases names the system learner-bound."""

import threading
import time

import pytest

from mamql.actors.actor import Actor
from mamql.actors.weight_subscriber import WeightSubscriber
from mamql.config import load_config, with_updates
from mamql.metrics import MetricsServer, new_registry
from mamql.phases import PHASES, bottleneck, phase_deltas, phase_seconds
from mamql.replay.client import ReplayClient
from mamql.replay.server import ReplayServer
from mamql.supervisor import scrape

from helpers import wait_until

# spi 1 with a small error buffer: inserts may run at most ~320 transitions ahead of samples, so once
# the learner stops sampling the actor's inserts block on the rate limiter for good
TABLE = ("replay.tables=[{name: online, capacity: 20000, min_size_to_sample: 64, samples_per_insert: 1.0, "
         "error_buffer: 256.0}]")
OVERRIDES = ["env.name=gems", "learner.hidden=[16]", "learner.batch_size=32", "learner.torch_threads=1",
             "learner.device=cpu", "learner.log_every=5", "learner.checkpoint_every=0", "weights.publish_every=2",
             "actor.num_envs=2", "actor.send_batch_size=32", "replay.port=0", "weights.port=0", "metrics.port=0",
             "replay.checkpoint_on_exit=false", "replay.wait_timeout_s=5", TABLE]
UPDATES = 12


@pytest.fixture(scope="module")
def demos_path(tmp_path_factory):
    from mamql.learner.demos import collect_demos, save_demos

    path = tmp_path_factory.mktemp("demos") / "demos.npz"
    batch, summary = collect_demos("gems", 300, seed=0, num_envs=4)
    save_demos(path, batch, summary)
    return str(path)


def scrape_all(urls: dict[str, str]) -> dict[str, dict]:
    return {name: scrape(url) for name, url in urls.items()}


@pytest.mark.slow
def test_phase_counters_grow_are_labelled_and_name_the_bottleneck(tmp_path, demos_path):
    from mamql.learner.service import LearnerService

    config = with_updates(load_config(None, OVERRIDES), run={"root": str(tmp_path), "name": "phases"})
    replay = ReplayServer(config)
    replay.start()
    learner = LearnerService(config, replay.address, demos_path, run_dir=str(tmp_path / "run"))
    weights_port = learner.start()
    actor_registry = new_registry(process_metrics=False)
    actor_metrics = MetricsServer(actor_registry)
    client = ReplayClient(replay.address)
    writer = client.writer("online", max_queue_batches=2, registry=actor_registry)
    subscriber = WeightSubscriber(f"127.0.0.1:{weights_port}", "actor-0", registry=actor_registry).start()
    actor = Actor(config, 0, writer, subscriber, actor_registry)
    thread = threading.Thread(target=actor.run, kwargs={"drain_timeout": 1.0}, daemon=True)
    urls = {"replay": replay.metrics_server.url, "learner": learner.metrics_server.url, "actor-0": actor_metrics.url}
    try:
        before = scrape_all(urls)
        # each kind exports exactly its documented phases, from the start (at 0)
        for name, kind in (("replay", "replay"), ("learner", "learner"), ("actor-0", "actor")):
            got = phase_seconds(before[name])
            assert set(got) == {kind}, (name, got)
            assert set(got[kind]) == set(PHASES[kind])
            assert all(v == 0.0 for v in got[kind].values()), got

        thread.start()
        started = time.perf_counter()
        assert learner.run(UPDATES) == UPDATES  # while the actor streams and applies new weights
        ran = time.perf_counter() - started
        working = scrape_all(urls)
        deltas = phase_deltas(before, working)
        for kind, phases in (("learner", ("sample_wait", "host_to_device", "update", "publish", "other")),
                             ("actor", ("act", "env_step", "weight_apply", "other")),
                             ("replay", ("insert", "sample"))):
            for phase in phases:
                assert deltas[kind][phase] > 0, (kind, phase, deltas[kind])
        # the learner's phases partition its loop: together never more than the wall time of run()
        assert sum(deltas["learner"].values()) <= ran
        assert actor.stats.versions_applied >= 1

        # the learner has stopped sampling: the actor's inserts hit the rate limiter's bound, the actor
        # blocks on its full send queue, and the phases say so
        def learner_bound():
            nonlocal working
            now = scrape_all(urls)
            sentence = bottleneck(phase_deltas(working, now))
            if sentence is None or not sentence.startswith("learner-bound"):
                working = now  # judge only intervals where the actor was already held back
                return None
            return sentence

        sentence = wait_until(learner_bound, 120, "the phases to name the system learner-bound")
        assert "on the rate limiter" in sentence, sentence
        final = phase_seconds(scrape_all(urls)["replay"])["replay"]
        assert final["insert_blocked"] > 0
    finally:
        actor.stop()
        thread.join(timeout=30)
        subscriber.close()
        writer.close(timeout=2)
        client.close()
        actor_metrics.close()
        learner.close()
        replay.stop(grace=0.5, final_checkpoint=False)
    assert not thread.is_alive()
