"""mamql.phases: the bottleneck sentence from hand-made phase seconds, per-phase deltas from scraped
samples (the shape mamql.supervisor.scrape returns), the windowed deltas and the PhaseClock."""

import pytest

from mamql.metrics import Counter, MetricsServer, new_registry, sample_value
from mamql.phases import (ACTOR_PHASES, LEARNER_PHASES, METRICS, PHASES, REPLAY_PHASES, PhaseClock, PhaseWindow,
                          bottleneck, phase_deltas, phase_seconds)
from mamql.supervisor import scrape

ACTOR = "mamql_actor_phase_seconds_total"
LEARNER = "mamql_learner_phase_seconds_total"
REPLAY = "mamql_replay_phase_seconds_total"


def samples(metric: str, **phases: float) -> dict:
    """One process's scrape: {(sample name, sorted label items): value}."""
    return {(metric, (("phase", p),)): v for p, v in phases.items()}


# --------------------------------------------------------------------------- the sentence

def test_learner_bound_actors_wait_on_the_rate_limiter():
    seconds = {
        "actor": {"act": 0.5, "env_step": 1.0, "send_wait": 8.0, "weight_apply": 0.1, "other": 0.4},
        "learner": {"sample_wait": 0.2, "host_to_device": 0.3, "update": 9.0, "publish": 0.3, "other": 0.2},
        "replay": {"insert": 0.5, "sample": 0.4, "insert_blocked": 7.5, "sample_blocked": 0.0},
    }
    assert bottleneck(seconds) == "learner-bound: actors wait 80 % on the rate limiter, learner spends 90 % updating"
    seconds.pop("learner")  # a learner without data (stopped, not scraped): still the rate limiter
    assert bottleneck(seconds) == "learner-bound: actors wait 80 % on the rate limiter"


def test_actor_bound_and_env_bound_when_the_learner_waits_for_samples():
    learner = {"sample_wait": 7.0, "host_to_device": 0.0, "update": 2.5, "publish": 0.5, "other": 0.0}
    assert bottleneck({"learner": learner}) == "actor-bound: learner waits 70 % for samples"
    envs = {"act": 1.0, "env_step": 8.5, "send_wait": 0.0, "weight_apply": 0.0, "other": 0.5}
    assert bottleneck({"learner": learner, "actor": envs}) == (
        "env-bound: actors spend 85 % stepping envs, learner waits 70 % for samples")
    acting = {"act": 6.0, "env_step": 3.0, "send_wait": 0.2, "weight_apply": 0.3, "other": 0.5}
    assert bottleneck({"learner": learner, "actor": acting}) == (
        "actor-bound: actors spend 60 % acting (policy forward), learner waits 70 % for samples")


def test_replay_bound_when_inserts_are_slow_or_both_sides_wait():
    actor = {"act": 1.0, "env_step": 1.0, "send_wait": 8.0}
    learner = {"sample_wait": 1.0, "update": 9.0}
    slow_replay = {"insert": 6.0, "insert_blocked": 0.5, "sample": 1.0}
    assert bottleneck({"actor": actor, "learner": learner, "replay": slow_replay}) == (
        "replay-bound: actors wait 80 % sending to replay")
    starved = {"sample_wait": 6.0, "update": 4.0}
    assert bottleneck({"actor": actor, "learner": starved, "replay": slow_replay}) == (
        "replay-bound: actors wait 80 % to send and the learner waits 60 % for samples")
    # without replay phases the rate limiter cannot be told from a slow replay
    assert bottleneck({"actor": actor, "learner": learner}) == "send-bound: actors wait 80 % sending to replay"


def test_balanced_and_no_data():
    seconds = {"actor": {"act": 2.0, "env_step": 7.0, "send_wait": 1.0},
               "learner": {"sample_wait": 2.0, "host_to_device": 1.0, "update": 6.0, "publish": 1.0}}
    assert bottleneck(seconds) == "balanced: actors spend 70 % stepping envs, learner 60 % updating"
    assert bottleneck({}) is None
    assert bottleneck({"actor": dict.fromkeys(ACTOR_PHASES, 0.0), "replay": {"insert": 1.0}}) is None
    # the threshold is a parameter: at 0.15 the learner's 20 % sample wait makes it actor-bound
    assert bottleneck(seconds, waiting=0.15).startswith("env-bound: actors spend 70 % stepping envs")


def test_a_saturated_learner_that_waits_for_nobody_sets_the_pace():
    # no rate limiter: actors never wait, the learner updates 96 % of the time (mamql local's default)
    seconds = {"actor": {"act": 7.7, "env_step": 2.0, "send_wait": 0.0, "other": 0.3},
               "learner": {"sample_wait": 0.1, "host_to_device": 0.2, "update": 9.6, "publish": 0.1}}
    assert bottleneck(seconds) == ("learner-bound: learner spends 96 % updating, "
                                   "actors run free (77 % acting (policy forward))")
    seconds["learner"] = {"sample_wait": 1.0, "update": 7.0, "publish": 2.0}  # 70 %: below BUSY
    assert bottleneck(seconds).startswith("balanced: ")


# --------------------------------------------------------------------------- from scraped samples

def test_phase_seconds_reads_only_the_phase_families():
    scraped = {**samples(ACTOR, act=1.5, env_step=2.0), ("mamql_actor_env_steps_total", ()): 99.0,
               ("mamql_actor_phase_seconds_created", (("phase", "act"),)): 1.7e9}
    assert phase_seconds(scraped) == {"actor": {"act": 1.5, "env_step": 2.0}}
    assert set(METRICS) == set(PHASES) == {"actor", "learner", "replay"}


def test_phase_deltas_sum_actors_and_survive_restarts():
    before = {"replay": samples(REPLAY, insert=1.0, insert_blocked=2.0),
              "learner": samples(LEARNER, sample_wait=5.0, update=10.0),
              "actor-0": samples(ACTOR, act=1.0, send_wait=3.0),
              "actor-1": samples(ACTOR, act=4.0, send_wait=4.0)}
    after = {"replay": samples(REPLAY, insert=1.5, insert_blocked=6.0),
             "learner": samples(LEARNER, sample_wait=5.5, update=12.0),
             "actor-0": samples(ACTOR, act=2.0, send_wait=7.0),
             "actor-1": samples(ACTOR, act=0.5, send_wait=1.0),  # restarted: its counters began again
             "actor-2": samples(ACTOR, act=0.25, send_wait=0.0)}  # new since the last scrape
    deltas = phase_deltas(before, after)
    assert deltas["actor"] == {"act": 1.0 + 0.5 + 0.25, "env_step": 0.0, "send_wait": 4.0 + 1.0,
                               "weight_apply": 0.0, "other": 0.0}
    assert deltas["learner"]["sample_wait"] == 0.5 and deltas["learner"]["update"] == 2.0
    assert deltas["replay"] == {"insert": 0.5, "sample": 0.0, "insert_blocked": 4.0, "sample_blocked": 0.0}
    assert bottleneck(deltas) == "learner-bound: actors wait 74 % on the rate limiter, learner spends 80 % updating"


def test_phase_window_keeps_the_last_window_of_scrapes():
    window = PhaseWindow(window_s=10.0)
    assert window.update({"learner": samples(LEARNER, update=0.0)}, now=0.0) == {}
    for t in range(2, 21, 2):  # the learner updates 1 s of every 2 s
        got = window.update({"learner": samples(LEARNER, update=t / 2)}, now=float(t))
    assert got["learner"]["update"] == pytest.approx(5.0)  # from t=10 to t=20, not from t=0
    with pytest.raises(ValueError, match="window_s"):
        PhaseWindow(0)


def test_clock_partitions_and_flushes_into_a_real_counter():
    registry = new_registry(process_metrics=False)
    counter = Counter("mamql_learner_phase_seconds", "doc", ["phase"], registry=registry)
    clock = PhaseClock(counter, LEARNER_PHASES)
    for phase in LEARNER_PHASES:  # every phase is exported (at 0) before any time is booked
        assert registry.get_sample_value(LEARNER, {"phase": phase}) == 0.0
    clock.add("sample_wait", 0.25)
    clock.add("update", 0.5)
    clock.lap("other", 1.0)  # the iteration took 1 s: 0.25 s of it went to none of the named phases
    assert sample_value(registry, LEARNER, {"phase": "update"}) == 0.0  # not before flush()
    clock.flush()
    clock.add("update", 2.0)
    clock.lap("other", 1.5)  # a lap shorter than its phases (clock skew): never negative
    clock.flush()
    got = {p: sample_value(registry, LEARNER, {"phase": p}) for p in LEARNER_PHASES}
    assert got == {"sample_wait": 0.25, "host_to_device": 0.0, "update": 2.5, "publish": 0.0, "other": 0.25}
    assert clock.totals == got
    with pytest.raises(KeyError):
        clock.add("no-such-phase", 1.0)


def test_scraped_over_http_the_names_match_the_families():
    """A real /metrics endpoint, read by the status line's scrape(): the names phases.py parses are
    the ones a Counter of that name exposes."""
    registry = new_registry(process_metrics=False)
    clocks = {kind: PhaseClock(Counter(f"mamql_{kind}_phase_seconds", "doc", ["phase"], registry=registry), phases)
              for kind, phases in PHASES.items()}
    clocks["actor"].add("env_step", 3.0)
    clocks["replay"].add("insert_blocked", 1.0)
    for clock in clocks.values():
        clock.flush()
    server = MetricsServer(registry)
    try:
        got = phase_seconds(scrape(server.url))
    finally:
        server.close()
    assert {kind: set(phases) for kind, phases in got.items()} == {k: set(v) for k, v in PHASES.items()}
    assert got["actor"]["env_step"] == 3.0 and got["replay"]["insert_blocked"] == 1.0
    assert set(REPLAY_PHASES) == set(got["replay"])
