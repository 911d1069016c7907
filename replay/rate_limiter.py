"""Reverb-style rate limiter: `min_size_to_sample`, and optionally `samples_per_insert` with an
`error_buffer`, so that learners and actors run at a chosen ratio.

With spi > 0, diff = inserted * spi - sampled (in transitions) must stay within
[min_diff, max_diff] = spi * min_size_to_sample -/+ error_buffer. Batches make exact bounds
impossible without deadlocks, so an operation is admitted while ONE more transition would fit
(insert: diff + spi <= max_diff; sample: diff - 1 >= min_diff) and the whole batch then moves diff:
the band is exceeded by at most one batch. error_buffer >= max(1, spi) guarantees that inserts or
samples can always proceed (Reverb has the same requirement). Pure bookkeeping: the table waits.
"""

from __future__ import annotations


class RateLimiter:
    def __init__(self, min_size_to_sample: int = 1, samples_per_insert: float = 0.0, error_buffer: float = 0.0):
        if min_size_to_sample < 0:
            raise ValueError("min_size_to_sample must be >= 0")
        if samples_per_insert < 0:
            raise ValueError("samples_per_insert must be >= 0")
        if samples_per_insert > 0 and error_buffer < max(1.0, samples_per_insert):
            raise ValueError(
                f"error_buffer ({error_buffer}) must be >= max(1, samples_per_insert={samples_per_insert}), "
                "else inserts and samples can block each other forever"
            )
        self.min_size = max(1, int(min_size_to_sample))
        self.spi = float(samples_per_insert)
        self.min_diff = self.spi * self.min_size - error_buffer
        self.max_diff = self.spi * self.min_size + error_buffer
        self.inserted = 0  # transitions, since creation (restored from checkpoints)
        self.sampled = 0

    def diff(self) -> float:
        return self.inserted * self.spi - self.sampled

    def can_insert(self) -> bool:
        return self.spi == 0 or self.diff() + self.spi <= self.max_diff

    def can_sample(self, size: int) -> bool:
        if size < self.min_size:
            return False
        return self.spi == 0 or self.diff() - 1 >= self.min_diff

    def describe(self) -> str:
        if self.spi == 0:
            return f"min_size_to_sample={self.min_size}"
        return f"min_size_to_sample={self.min_size}, diff {self.diff():g} in [{self.min_diff:g}, {self.max_diff:g}]"
