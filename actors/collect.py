"""Demo collection: read expert transitions from a fifo replay table, write whole episodes to disk.

The replay table is the collector's inbox: actors (local subprocesses or processes on other nodes)
insert with the ordinary ReplayWriter, and a fifo sampler hands every stored transition out exactly
once. The table's rate limiter (samples_per_insert=1, error_buffer < capacity) makes actors wait
instead of overwriting transitions the collector has not read yet. Transitions arrive interleaved
across actors and env copies, and at least once (the writer re-sends after a broken stream), so
they are regrouped per (actor_id, episode_id), de-duplicated by step, and an episode goes to the
dataset only when its steps 0..T are all present, T being its terminal or truncated step.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from mamql.actors.actor import actor_seed
from mamql.replay.dataset import DatasetWriter

log = logging.getLogger("mamql.collect")

@dataclass
class _Partial:
    parts: list = field(default_factory=list)
    rows: int = 0
    last_step: int = -1  # step of the done/truncated row, once seen


class EpisodeAssembler:
    """Regroups interleaved, possibly duplicated transitions into complete episodes."""

    def __init__(self, env_seed: int = 0):
        self.env_seed = env_seed
        self.partial: dict[tuple[int, int], _Partial] = {}
        self.duplicates = 0  # rows dropped because their (episode, step) had arrived before

    def add(self, batch: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Take a sampled batch; return the episodes it completed (rows in step order), in the order
        their last row arrived: a collection cut off at its target keeps the episodes that finished
        first, whichever actor sent them, rather than favouring low actor ids."""
        actor, episode = batch["actor_id"].astype(np.int64), batch["episode_id"]
        order = np.lexsort((batch["step"], episode, actor))
        a_sorted, e_sorted = actor[order], episode[order]
        cut = np.flatnonzero((a_sorted[1:] != a_sorted[:-1]) | (e_sorted[1:] != e_sorted[:-1])) + 1
        done = []  # (arrival position of the episode's last row in `batch`, episode)
        for rows in np.split(order, cut):
            key = (int(actor[rows[0]]), int(episode[rows[0]]))
            p = self.partial.setdefault(key, _Partial())
            part = {k: v[rows] for k, v in batch.items()}
            p.parts.append(part)
            p.rows += len(rows)
            ends = np.flatnonzero(part["done"] | part["truncated"])
            if len(ends):
                p.last_step = int(part["step"][ends[-1]])
            if p.last_step >= 0 and p.rows >= p.last_step + 1:
                episode_batch = self._complete(key, p)
                if episode_batch is not None:
                    done.append((int(rows.max()), episode_batch))
        done.sort(key=lambda item: item[0])
        return [episode_batch for _, episode_batch in done]

    def _complete(self, key, p: _Partial) -> dict[str, np.ndarray] | None:
        n = p.last_step + 1
        if len(p.parts) == 1 and p.rows == n and np.array_equal(p.parts[0]["step"], np.arange(n)):
            # the common case: the whole episode came in one sample (rows are sorted by step)
            episode = p.parts[0]
        else:
            merged = {k: np.concatenate([part[k] for part in p.parts]) for k in p.parts[0]}
            steps, first = np.unique(merged["step"], return_index=True)
            if len(steps) < n:
                return None  # only duplicates so far; the missing steps are still on their way
            self.duplicates += len(merged["step"]) - len(first)
            episode = {k: v[first[:n]] for k, v in merged.items()}
        episode["env_seed"] = np.full(n, actor_seed(self.env_seed, key[0]), dtype=np.int64)
        del self.partial[key]
        return episode

    @property
    def pending_rows(self) -> int:
        return sum(p.rows for p in self.partial.values())


@dataclass(frozen=True)
class Target:
    """Stop after `episodes` whole episodes, or at the first episode boundary at or past
    `transitions` rows (so transitions <= final < transitions + longest episode)."""

    transitions: int | None = None
    episodes: int | None = None

    def reached(self, writer: DatasetWriter) -> bool:
        if self.episodes is not None and writer.episodes >= self.episodes:
            return True
        return self.transitions is not None and writer.transitions >= self.transitions


class Collector:
    """Pulls unread transitions from `table` (fifo) into `writer` until the target is reached.

    Each round asks the table how many transitions are unread (inserted - sampled) and samples
    exactly that many (at most `chunk`), so the fifo sampler never waits for a full batch and the
    tail of a collection is read too. Only this collector may sample the table."""

    def __init__(self, client, table: str, writer: DatasetWriter, target: Target, env_seed: int = 0,
                 chunk: int = 4096, on_progress: Callable[[int], None] | None = None):
        self.client, self.table, self.writer, self.target = client, table, writer, target
        self.assembler = EpisodeAssembler(env_seed)
        self.chunk = chunk
        self.on_progress = on_progress
        self.read_rows = 0
        self.skipped_episodes = 0  # already in the dataset (resume) or past the target

    def unread(self) -> int:
        info = self.client.info()[self.table]
        return info.inserted - info.sampled

    def step(self, idle_wait: float = 0.01) -> int:
        """One round: read what is unread, write the episodes it completes; returns rows read."""
        from mamql.replay.errors import DeadlineExceeded, Unavailable

        try:
            n = min(self.unread(), self.chunk)
            if n <= 0:
                time.sleep(idle_wait)
                return 0
            sample = self.client.sample(self.table, n, timeout=10.0)
        except (DeadlineExceeded, Unavailable) as exc:  # a replay restarting, a limiter holding samples
            log.warning("replay not answering (%s); retrying", exc)
            time.sleep(0.5)
            return 0
        self.read_rows += n
        for episode in self.assembler.add(sample.batch):
            if self.target.reached(self.writer):
                self.skipped_episodes += 1
                continue
            before = self.writer.transitions
            if self.writer.add_episode(episode):
                if self.on_progress:
                    self.on_progress(self.writer.transitions - before)
            else:
                self.skipped_episodes += 1
        return n

    def run(self, stop: threading.Event | None = None, check: Callable[[], None] | None = None) -> bool:
        """Until the target (True) or `stop` (False); `check()` may raise to abort (dead actors)."""
        stop = stop or threading.Event()
        last_check = 0.0
        while not self.target.reached(self.writer):
            if stop.is_set():
                return False
            self.step()
            if check and time.monotonic() - last_check > 1.0:
                check()
                last_check = time.monotonic()
        return True


def rerun_expert(env_name: str, env_seed: int, actor_id: int, num_envs: int, expert: str = "scripted",
                 env_kwargs: Mapping | None = None, temperature: float | None = None):
    """Yield, forever, the transition batches actor `actor_id` sends in expert mode (same seeds,
    episode ids and fields as actors.actor.Actor), so a dataset can be checked against a re-run."""
    from mamql.envs.experts import make_expert
    from mamql.envs.vector import VectorEnv, transition_batch

    seed = actor_seed(env_seed, actor_id)
    env = VectorEnv(env_name, num_envs, seed=seed, episode_id_start=actor_id << 40, **dict(env_kwargs or {}))
    policy = make_expert(env_name, kind=expert, seed=seed, temperature=temperature, **dict(env_kwargs or {}))
    obs = env.reset()
    while True:
        actions = policy.act(obs)
        result = env.step(actions)
        batch = transition_batch(obs, actions, result)
        batch["actor_id"] = np.full(num_envs, actor_id, np.int32)
        batch["policy_version"] = np.full(num_envs, -1, np.int64)
        obs = result.obs
        yield batch
