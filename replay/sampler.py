"""Samplers choose which held item keys a sample returns (Reverb vocabulary).

- uniform: with replacement over held items; needs one item.
- fifo: oldest first, each item handed out once, in insertion order (a cursor that skips evicted
  items); waits until `batch_size` unread items exist. Useful for on-policy style consumption.
- lifo: the `batch_size` most recent items, newest first; needs `batch_size` items.
State (RNG / cursor) is plain JSON so checkpoints restore it.
"""

from __future__ import annotations

import numpy as np


class Sampler:
    name = ""

    def ready(self, oldest: int, next_key: int, n: int) -> bool:
        raise NotImplementedError

    def take(self, oldest: int, next_key: int, n: int) -> np.ndarray:
        """Keys to return; only called when ready()."""
        raise NotImplementedError

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


class UniformSampler(Sampler):
    name = "uniform"

    def __init__(self, seed: int | None = None):
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def ready(self, oldest, next_key, n):
        return next_key > oldest

    def take(self, oldest, next_key, n):
        return self.rng.integers(oldest, next_key, size=n, dtype=np.uint64)

    def state(self):
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state(self, state):
        if "bit_generator" in state:
            self.rng.bit_generator.state = state["bit_generator"]


class FifoSampler(Sampler):
    name = "fifo"

    def __init__(self):
        self.cursor = 0  # next key to hand out

    def ready(self, oldest, next_key, n):
        return next_key - max(self.cursor, oldest) >= n

    def take(self, oldest, next_key, n):
        start = max(self.cursor, oldest)
        self.cursor = start + n
        return np.arange(start, start + n, dtype=np.uint64)

    def state(self):
        return {"cursor": self.cursor}

    def load_state(self, state):
        self.cursor = int(state.get("cursor", 0))


class LifoSampler(Sampler):
    name = "lifo"

    def ready(self, oldest, next_key, n):
        return next_key - oldest >= n

    def take(self, oldest, next_key, n):
        return np.arange(next_key - 1, next_key - 1 - n, -1, dtype=np.int64).astype(np.uint64)


SAMPLERS = {"uniform": UniformSampler, "fifo": FifoSampler, "lifo": LifoSampler}


def make_sampler(name: str, seed: int | None = None) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return UniformSampler(seed) if name == "uniform" else SAMPLERS[name]()
