"""Exponential backoff with jitter, after gRPC's connection-backoff spec.

Pure logic: the caller owns the clock and the sleeping. ``BackoffState.next_delay`` returns how
long to wait before the next attempt; ``reset`` is called once data has flowed again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from streamer.client.defaults import BACKOFF_INITIAL, BACKOFF_JITTER, BACKOFF_MULTIPLIER

__all__ = ["Backoff", "BackoffState"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Backoff policy. ``maximum=None`` means "the client's streaming interval".

    Defaults are gRPC's (initial 1 s, x1.6, +/-20 % jitter). The jitter spreads a fleet's
    reconnects after a cloud outage instead of sending them in one wave.
    """

    initial: float = BACKOFF_INITIAL
    multiplier: float = BACKOFF_MULTIPLIER
    jitter: float = BACKOFF_JITTER
    maximum: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial) and self.initial > 0):
            raise ValueError(f"Backoff.initial must be a positive number, got {self.initial!r}")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(f"Backoff.multiplier must be >= 1, got {self.multiplier!r}")
        if not (0 <= self.jitter < 1):
            raise ValueError(f"Backoff.jitter must be in [0, 1), got {self.jitter!r}")
        if self.maximum is not None and not (
            math.isfinite(self.maximum) and self.maximum >= self.initial
        ):
            raise ValueError(
                f"Backoff.maximum must be >= initial ({self.initial}), got {self.maximum!r}"
            )


class BackoffState:
    """One stream's position in the backoff sequence."""

    __slots__ = ("_current", "_maximum", "_policy", "_rng", "attempts")

    def __init__(self, policy: Backoff, maximum: float, rng: random.Random | None = None) -> None:
        self._policy = policy
        self._maximum = policy.maximum if policy.maximum is not None else maximum
        self._maximum = max(self._maximum, policy.initial)
        self._rng = rng or random.Random()
        self._current = policy.initial
        self.attempts = 0

    @property
    def maximum(self) -> float:
        return self._maximum

    def next_delay(self) -> float:
        """Delay before the next attempt; advances the sequence."""
        j = self._policy.jitter
        delay = self._current * self._rng.uniform(1 - j, 1 + j)
        self._current = min(self._current * self._policy.multiplier, self._maximum)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self._current = self._policy.initial
        self.attempts = 0
