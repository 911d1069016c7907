"""The actor process: step K env copies, act, stream transitions to replay, swap in new weights.

One loop, in this order each step: apply the newest complete weight version if one arrived (between
steps, so a step never mixes versions), act for all K copies in one batched call, step the envs,
tag the transitions with actor id and the policy (epoch, version) that acted, and hand full batches to the
replay writer (bounded queue: when replay is slow or away the loop blocks on back-pressure instead
of growing memory). The policy is a learned Boltzmann policy, an expert (demo collection: scripted,
or a learner checkpoint sampling at actor.expert_temperature) or uniform random play (seeding the
online table before the first weights exist). The learned
policy samples at the temperature the learner publishes with its weights (learner.alpha), never at
one of the actor's own. The loop's time by phase (act, env step, send wait, weight apply, other) is
exported as mamql_actor_phase_seconds_total (mamql/phases.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from mamql.envs.registry import env_spec
from mamql.envs.vector import VectorEnv, transition_batch
from mamql.batch import concat
from mamql.config import Config
from mamql.metrics import Counter, Gauge, Histogram, Summary
from mamql.phases import ACTOR_DOC, ACTOR_PHASES, PhaseClock
from mamql.weights import WeightSet

log = logging.getLogger("mamql.actor")

EXPERT_VERSION = -1  # policy_version of transitions from a scripted expert
RANDOM_VERSION = 0  # policy_version of uniform random play (no weights yet)
NO_EPOCH = 0  # policy_epoch of transitions not acted by a learner's weights (expert, random)


ACTOR_SEED_STRIDE = 100_003  # actor k's env copies are seeded from env.seed + stride * k


def actor_seed(env_seed: int, actor_id: int) -> int:
    """The seed of actor `actor_id`'s environments (and expert): distinct per actor, reproducible,
    so a dataset can name the seed each episode was played from."""
    return env_seed + ACTOR_SEED_STRIDE * actor_id


class RandomPolicy:
    """Uniform random actions: the policy before the first weights arrive."""

    def __init__(self, num_actions: dict[str, int], seed: int):
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def act(self, obs):
        return {a: self.rng.integers(0, n, size=len(obs[a])).astype(np.int64) for a, n in self.num_actions.items()}


def weights_to_torch(weights: WeightSet) -> dict:
    """numpy arrays from the wire -> float32 torch tensors (bfloat16 arrives as uint16 words)."""
    import torch

    out = {}
    for name, array in weights.tensors.items():
        if weights.dtypes.get(name) == "bfloat16":
            out[name] = torch.from_numpy(array.astype(np.int16)).view(torch.bfloat16).float()
        else:
            out[name] = torch.from_numpy(np.array(array, dtype=np.float32))
    return out


@dataclass
class ActorStats:
    env_steps: int = 0  # transitions produced (K per vector step)
    episodes: int = 0
    batches_sent: int = 0
    weight_version: int = 0
    weight_epoch: int = NO_EPOCH
    versions_applied: int = 0


class ActorMetrics:
    def __init__(self, registry, agents: list[str]):
        self.env_steps = Counter("mamql_actor_env_steps", "Environment transitions produced", registry=registry)
        self.episodes = Counter("mamql_actor_episodes", "Episodes finished", registry=registry)
        # A Summary (sum and count, no buckets): returns may be negative (MPE), and a histogram with
        # negative bucket bounds silently drops its _sum, which the status line and Grafana divide by.
        self.episode_return = Summary(
            "mamql_actor_episode_return", "Return per finished episode", ["agent"], registry=registry,
        )
        self.last_return = Gauge("mamql_actor_last_episode_return", "Return of the latest episode", ["agent"], registry=registry)
        self.weight_version = Gauge("mamql_actor_weight_version", "Weight version the actor acts with", registry=registry)
        self.step_seconds = Histogram(
            "mamql_actor_step_seconds", "Time of one vector step (act + env step)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0), registry=registry,
        )
        self.send_blocked = Counter(
            "mamql_actor_send_blocked_seconds", "Time the loop waited on a full send queue", registry=registry
        )
        self.phase_seconds = Counter("mamql_actor_phase_seconds", ACTOR_DOC, ["phase"], registry=registry)
        for agent in agents:
            self.last_return.labels(agent)


class Actor:
    """Runs the actor loop for one process. `writer` needs `put(batch, timeout)` that raises
    TimeoutError when its bounded queue stays full (replay.writer.ReplayWriter); `subscriber`
    (optional) needs `take() -> WeightSet | None` and `applied(WeightSet)`."""

    def __init__(self, config: Config, actor_id: int, writer, subscriber=None, registry=None, policy=None):
        self.config, self.actor_id = config, actor_id
        self.writer, self.subscriber = writer, subscriber
        env_kwargs = dict(config.env.kwargs)
        self.spec = env_spec(config.env.name, **env_kwargs)
        seed = actor_seed(config.env.seed, actor_id)
        self.env = VectorEnv(
            config.env.name, config.actor.num_envs, seed=seed, episode_id_start=actor_id << 40, **env_kwargs
        )
        self.stats = ActorStats()
        self.metrics = ActorMetrics(registry, list(self.spec.agents)) if registry is not None else None
        # where the loop's time goes (mamql/phases.py); flushed to the counter at every send
        self.phases = PhaseClock(self.metrics.phase_seconds if self.metrics else None, ACTOR_PHASES)
        self._stop = threading.Event()
        self._stopped_at = 0.0
        self.drain_timeout = 10.0
        self._random = RandomPolicy(dict(self.spec.num_actions), seed)
        mode = config.actor.mode
        self.learned = None
        self.epoch = NO_EPOCH  # learner epoch of the weights acting (mamql.weights)
        if policy is not None:
            self.policy, self.version = policy, EXPERT_VERSION
        elif mode == "expert":
            from mamql.envs.experts import checkpoint_path, make_expert

            if checkpoint_path(config.actor.expert) is not None:  # a learner checkpoint acts through torch
                import torch

                torch.set_num_threads(max(1, config.actor.torch_threads))
            expert = make_expert(config.env.name, kind=config.actor.expert, seed=seed, epsilon=config.actor.epsilon,
                                 temperature=config.actor.expert_temperature or None, **env_kwargs)
            self.policy, self.version = expert, EXPERT_VERSION
        elif mode == "random":
            self.policy, self.version = self._random, RANDOM_VERSION
        elif mode == "learned":
            self.learned = self._build_learned(seed)
            self.policy, self.version = self._random, RANDOM_VERSION
        else:
            raise ValueError(f"actor.mode must be learned, expert or random, got {mode!r}")
        self.recent_returns: list[dict[str, float]] = []

    def _build_learned(self, seed: int):
        import torch

        from mamql.learner.networks import build_algo_critics
        from mamql.learner.policy import BoltzmannPolicy

        torch.set_num_threads(max(1, self.config.actor.torch_threads))
        critics = build_algo_critics(self.spec, self.config.learner.algo, self.config.learner.hidden or None,
                                     self.config.learner.network)
        # alpha until the first weights arrive with the learner's own (WeightSet.alpha)
        return BoltzmannPolicy(
            critics, alpha=self.config.learner.alpha, mode="sample", epsilon=self.config.actor.epsilon, seed=seed
        )

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stopped_at = time.monotonic()
        self._stop.set()

    def _maybe_apply_weights(self) -> None:
        if self.subscriber is None or self.learned is None:
            return
        weights = self.subscriber.take()
        if weights is None or not weights.supersedes(self.epoch, self.version):
            return
        self.learned.load_flat(weights_to_torch(weights), version=weights.version)
        if weights.alpha > 0 and weights.alpha != self.learned.alpha:  # 0: a publisher that did not say
            log.info("acting at the learner's temperature alpha=%g", weights.alpha)
            self.learned.alpha = weights.alpha
        self.policy, self.epoch, self.version = self.learned, weights.epoch, weights.version
        self.subscriber.applied(weights)
        self.stats.weight_version, self.stats.weight_epoch = weights.version, weights.epoch
        self.stats.versions_applied += 1
        if self.metrics:
            self.metrics.weight_version.set(weights.version)

    def run(self, max_steps: int = 0, send_timeout: float = 1.0, drain_timeout: float = 10.0) -> ActorStats:
        """Step until stop() or `max_steps` transitions (0 = forever), then hand what is buffered to the
        writer: after stop() a full send queue is waited out for up to `drain_timeout` s before the
        batch is dropped (the caller's writer.close then waits for the acks)."""
        self.drain_timeout = drain_timeout
        obs = self.env.reset()
        pending: list[dict] = []
        pending_rows = 0
        send_size = self.config.actor.send_batch_size
        K = self.env.num_envs
        phases = self.phases
        while not self._stop.is_set() and not (max_steps and self.stats.env_steps >= max_steps):
            started = time.perf_counter()
            self._maybe_apply_weights()
            acting = time.perf_counter()
            actions = self.policy.act(obs)
            stepping = time.perf_counter()
            result = self.env.step(actions)
            stepped = time.perf_counter()
            phases.add("weight_apply", acting - started)
            phases.add("act", stepping - acting)
            phases.add("env_step", stepped - stepping)
            batch = transition_batch(obs, actions, result)
            batch["actor_id"] = np.full(K, self.actor_id, np.int32)
            batch["policy_version"] = np.full(K, self.version, np.int64)
            batch["policy_epoch"] = np.full(K, self.epoch, np.int64)  # lag is measured within an epoch
            pending.append(batch)
            pending_rows += K
            obs = result.obs
            self.stats.env_steps += K
            if self.metrics:
                self.metrics.env_steps.inc(K)
                self.metrics.step_seconds.observe(stepped - started)
            self._record_episodes(result)
            if pending_rows >= send_size:
                self._send(concat(pending), send_timeout)
                pending, pending_rows = [], 0
            phases.lap("other", time.perf_counter() - started)
        if pending:
            ending = time.perf_counter()
            self._send(concat(pending), send_timeout)
            phases.lap("other", time.perf_counter() - ending)
        phases.flush()
        return self.stats

    def _send(self, batch: dict, timeout: float) -> None:
        """Hand a batch to the writer, waiting out back-pressure (but still honouring stop())."""
        started = time.perf_counter()
        while True:
            tried = time.perf_counter()
            try:
                self.writer.put(batch, timeout=timeout)
                self.phases.add("send_wait", time.perf_counter() - tried)
                break
            except TimeoutError:
                self.phases.add("send_wait", time.perf_counter() - tried)
                self.phases.flush()  # a long back-pressure wait shows while it lasts
                if self._stop.is_set() and time.monotonic() - self._stopped_at > self.drain_timeout:
                    log.warning("dropping %d unsent transitions at shutdown: replay took none for %.0fs",
                                len(batch["done"]), self.drain_timeout)
                    return
                # Normal when the replay's rate limiter holds actors back for the learner; the time
                # shows in mamql_actor_send_blocked_seconds_total.
                log.debug("replay send queue full for %.1fs; waiting", time.perf_counter() - started)
        self.stats.batches_sent += 1
        self.phases.flush()
        if self.metrics:
            self.metrics.send_blocked.inc(time.perf_counter() - started)

    def _record_episodes(self, result) -> None:
        finished = len(result.finished_ids)
        if not finished:
            return
        self.stats.episodes += finished
        for i in range(finished):
            returns = {a: float(r[i]) for a, r in result.episode_returns.items()}
            self.recent_returns.append(returns)
            if self.metrics:
                for agent, value in returns.items():
                    self.metrics.episode_return.labels(agent).observe(value)
                    self.metrics.last_return.labels(agent).set(value)
        del self.recent_returns[:-100]
        if self.metrics:
            self.metrics.episodes.inc(finished)
