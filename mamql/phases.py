"""Where the time goes: seconds per phase for actors, learner and replay, and the bottleneck they name.

Each process kind exports one counter family of cumulative seconds, labelled `phase`:

  mamql_actor_phase_seconds_total    act | env_step | send_wait | weight_apply | other
  mamql_learner_phase_seconds_total  sample_wait | host_to_device | update | publish | other
  mamql_replay_phase_seconds_total   insert | sample | insert_blocked | sample_blocked

An actor's and the learner's phases partition their loop's wall time ("other" is the rest:
bookkeeping, logging, checkpoints), so `rate()` of one phase over the rate of all of them is the
fraction of time spent there. Replay phases are summed over its concurrent RPC threads, so they
partition nothing; they say how much of the inserts' and samples' time went to waiting on the rate
limiter (`*_blocked`) rather than to work. Counters, not histograms: one float per phase is all a
fraction needs, and a process pays a perf_counter() per coarse phase, never per row.

On CUDA the learner's kernels run asynchronously: GPU time lands in whichever phase next waits for
the GPU (update; publish, which copies the weights to the host; other on the steps that log losses),
never in sample_wait.

This module is pure (no prometheus_client, torch or grpc): `bottleneck` turns per-kind phase
seconds over an interval into one sentence, and `phase_deltas` / `PhaseWindow` get those seconds
from the samples `mamql.supervisor.scrape` returns ({(sample name, sorted label items): value}).
"""

from __future__ import annotations

import collections
import time
from typing import Mapping

ACTOR_PHASES = ("act", "env_step", "send_wait", "weight_apply", "other")
LEARNER_PHASES = ("sample_wait", "host_to_device", "update", "publish", "other")
REPLAY_PHASES = ("insert", "sample", "insert_blocked", "sample_blocked")
PHASES: dict[str, tuple[str, ...]] = {"actor": ACTOR_PHASES, "learner": LEARNER_PHASES, "replay": REPLAY_PHASES}
# exposed sample names (prometheus_client adds _total to a Counter's name)
METRICS: dict[str, str] = {kind: f"mamql_{kind}_phase_seconds_total" for kind in PHASES}

# the `documentation` strings of the three families (one place: the processes declare them with these)
ACTOR_DOC = ("Cumulative seconds of the actor loop by phase: act (policy forward), env_step (stepping the "
             "envs), send_wait (blocked handing a batch to the replay writer: back-pressure), weight_apply "
             "(taking and loading new weights), other (the rest of the loop); together the loop's wall time")
LEARNER_DOC = ("Cumulative seconds of the learner loop by phase: sample_wait (waiting for an online batch "
               "from replay), host_to_device (making the batch writable and moving it to the device), update "
               "(expert batch and the update step), publish (weights to the host and out to the weight "
               "service), other (lag bookkeeping, logging, checkpoints); together the loop's wall time")
REPLAY_DOC = ("Cumulative seconds of replay RPC work by phase, summed over concurrent calls: insert and "
              "sample (decoding, storing, gathering, encoding), insert_blocked and sample_blocked (waiting "
              "on the table's rate limiter)")

WAITING = 0.3  # a process that waits this fraction of its time or more is held up by another
BUSY = 0.8  # a learner busy this fraction of its time in one phase, waiting for nobody, sets the pace
LIMITER_SHARE = 0.5  # actors' send waits are put on the rate limiter when replay inserts block this much


class PhaseClock:
    """Seconds per phase for a process's loop, added to a labelled counter (`counter.labels(phase).inc`).

    add() costs a dict update, not a lock, so a loop running thousands of times a second can call
    it per iteration and flush() to the counter only now and then. lap(rest, seconds) closes one
    iteration of `seconds`: what the phases added since the last lap leave of it goes to `rest`,
    so the phases partition the loop's wall time. counter None: a clock that only keeps sums."""

    def __init__(self, counter, phases: tuple[str, ...]):
        self.children = {p: counter.labels(p) for p in phases} if counter is not None else {}
        self.pending = dict.fromkeys(phases, 0.0)
        self.totals = dict.fromkeys(phases, 0.0)  # flushed seconds, for tests and logs
        self._lap = 0.0

    def add(self, phase: str, seconds: float) -> None:
        self.pending[phase] += seconds
        self._lap += seconds

    def lap(self, rest: str, seconds: float) -> None:
        self.pending[rest] += max(seconds - self._lap, 0.0)
        self._lap = 0.0

    def flush(self) -> None:
        for phase, seconds in self.pending.items():
            if seconds:
                if self.children:
                    self.children[phase].inc(seconds)
                self.totals[phase] += seconds
                self.pending[phase] = 0.0


# --------------------------------------------------------------------------- from scraped samples

Samples = Mapping[tuple[str, tuple], float]  # one process: {(sample name, sorted label items): value}


def phase_seconds(samples: Samples) -> dict[str, dict[str, float]]:
    """{kind: {phase: cumulative seconds}} for the phase families in one process's samples."""
    kinds = {name: kind for kind, name in METRICS.items()}
    out: dict[str, dict[str, float]] = {}
    for (name, labels), value in samples.items():
        kind = kinds.get(name)
        if kind is None:
            continue
        phase = dict(labels).get("phase")
        if phase:
            slot = out.setdefault(kind, {})
            slot[phase] = slot.get(phase, 0.0) + float(value)
    return out


def phase_deltas(before: Mapping[str, Samples], after: Mapping[str, Samples]) -> dict[str, dict[str, float]]:
    """Seconds per phase between two scrapes of every process ({process name: samples}), summed per
    kind (all actors together). A counter that went down (a restarted process) counts from zero, as
    the status line's rates do; a process missing from `before` counts from zero too."""
    out: dict[str, dict[str, float]] = {}
    for process, samples in after.items():
        old = phase_seconds(before.get(process, {}))
        for kind, phases in phase_seconds(samples).items():
            slot = out.setdefault(kind, dict.fromkeys(PHASES[kind], 0.0))
            for phase, value in phases.items():
                prev = old.get(kind, {}).get(phase, 0.0)
                slot[phase] = slot.get(phase, 0.0) + (value - prev if value >= prev else value)
    return out


class PhaseWindow:
    """Phase seconds over the last `window_s` seconds of scrapes (at least the interval between the
    oldest scrape kept and now), so the bottleneck read from them does not flicker every interval."""

    def __init__(self, window_s: float = 10.0):
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = window_s
        self._snapshots: collections.deque = collections.deque()

    def update(self, scraped: Mapping[str, Samples], now: float | None = None) -> dict[str, dict[str, float]]:
        now = time.monotonic() if now is None else now
        self._snapshots.append((now, dict(scraped)))  # per-process dicts are replaced by scrapes, not mutated
        while len(self._snapshots) > 2 and self._snapshots[1][0] <= now - self.window_s:
            self._snapshots.popleft()
        return phase_deltas(self._snapshots[0][1], scraped) if len(self._snapshots) > 1 else {}


# --------------------------------------------------------------------------- the sentence

ACTOR_DOING = {"act": "acting (policy forward)", "env_step": "stepping envs", "send_wait": "waiting to send",
               "weight_apply": "applying weights", "other": "on bookkeeping"}
LEARNER_DOING = {"sample_wait": "waiting for samples", "host_to_device": "copying batches to the device",
                 "update": "updating", "publish": "publishing weights", "other": "on bookkeeping"}


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f} %"


def _fractions(seconds: Mapping[str, float] | None) -> dict[str, float]:
    if not seconds:
        return {}
    total = sum(max(v, 0.0) for v in seconds.values())
    return {p: max(v, 0.0) / total for p, v in seconds.items()} if total > 0 else {}


def _busiest(fractions: Mapping[str, float], skip: str) -> tuple[str, float] | None:
    busy = [(f, p) for p, f in fractions.items() if p != skip and f > 0]
    if not busy:
        return None
    f, p = max(busy)
    return p, f


def bottleneck(seconds: Mapping[str, Mapping[str, float]], waiting: float = WAITING) -> str | None:
    """One sentence naming what holds the system back, from seconds per phase over an interval:
    {"actor": {phase: s}, "learner": {...}, "replay": {...}} (any kind may be missing; actors summed).

    The learner waiting for samples (`waiting` of its time or more) means the actors are too slow:
    "env-bound" when their busiest phase is stepping envs, else "actor-bound". Actors waiting to
    send mean replay pushes back: "learner-bound ... on the rate limiter" when the replay's inserts
    spent most of their time blocked on it, "replay-bound" when they did not (replay or the network
    is slow) or when the learner waits too ("send-bound" without replay data to tell). Neither
    waiting: "learner-bound" when the learner spends `BUSY` of its time in one working phase (it sets
    the pace and actors run free), else "balanced". None without actor or learner data."""
    actor, learner = _fractions(seconds.get("actor")), _fractions(seconds.get("learner"))
    if not actor and not learner:
        return None
    replay = seconds.get("replay") or {}
    inserting = max(replay.get("insert", 0.0), 0.0) + max(replay.get("insert_blocked", 0.0), 0.0)
    limited = inserting > 0 and max(replay.get("insert_blocked", 0.0), 0.0) / inserting >= LIMITER_SHARE
    starved, blocked = learner.get("sample_wait", 0.0), actor.get("send_wait", 0.0)
    actor_top, learner_top = _busiest(actor, "send_wait"), _busiest(learner, "sample_wait")
    learner_waits = f"learner waits {_pct(starved)} for samples"
    if starved >= waiting and blocked >= waiting:
        return f"replay-bound: actors wait {_pct(blocked)} to send and the {learner_waits}"
    if starved >= waiting:
        if actor_top is None:
            return f"actor-bound: {learner_waits}"
        phase, fraction = actor_top
        label = "env-bound" if phase == "env_step" else "actor-bound"
        return f"{label}: actors spend {_pct(fraction)} {ACTOR_DOING[phase]}, {learner_waits}"
    if blocked >= waiting:
        if "replay" not in seconds:  # cannot tell the rate limiter from a slow replay
            return f"send-bound: actors wait {_pct(blocked)} sending to replay"
        if not limited:
            return f"replay-bound: actors wait {_pct(blocked)} sending to replay"
        sentence = f"learner-bound: actors wait {_pct(blocked)} on the rate limiter"
        if learner_top is not None:
            phase, fraction = learner_top
            sentence += f", learner spends {_pct(fraction)} {LEARNER_DOING[phase]}"
        return sentence
    parts = []
    if learner_top is not None and learner_top[1] >= BUSY and learner_top[0] != "other":
        # nobody waits, but the learner never rests: updates/s is what its compute allows; actors
        # produce more than it consumes (add replay.tables[].samples_per_insert to pace them)
        sentence = f"learner-bound: learner spends {_pct(learner_top[1])} {LEARNER_DOING[learner_top[0]]}"
        if actor_top is not None:
            sentence += f", actors run free ({_pct(actor_top[1])} {ACTOR_DOING[actor_top[0]]})"
        return sentence
    if actor_top is not None:
        parts.append(f"actors spend {_pct(actor_top[1])} {ACTOR_DOING[actor_top[0]]}")
    if learner_top is not None:
        parts.append(f"learner {_pct(learner_top[1])} {LEARNER_DOING[learner_top[0]]}")
    return "balanced: " + ", ".join(parts) if parts else None
