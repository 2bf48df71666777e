from __future__ import annotations

import random

import pytest

from streamer.client.backoff import Backoff, BackoffState


def test_sequence_grows_by_multiplier_and_caps() -> None:
    state = BackoffState(Backoff(initial=1.0, multiplier=2.0, jitter=0.0, maximum=5.0), 20.0)
    assert [state.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert state.attempts == 5


def test_maximum_defaults_to_streaming_interval() -> None:
    state = BackoffState(Backoff(jitter=0.0), 3.0)
    delays = [state.next_delay() for _ in range(10)]
    assert max(delays) == 3.0
    assert state.maximum == 3.0


def test_jitter_stays_within_bounds_and_varies() -> None:
    rng = random.Random(7)
    delays = []
    for _ in range(200):
        state = BackoffState(Backoff(initial=1.0, jitter=0.2), 20.0, rng)
        delays.append(state.next_delay())
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert len({round(d, 6) for d in delays}) > 150


def test_reset_restarts_the_sequence() -> None:
    state = BackoffState(Backoff(jitter=0.0), 20.0)
    for _ in range(4):
        state.next_delay()
    state.reset()
    assert state.next_delay() == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0},
        {"initial": -1},
        {"multiplier": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"initial": 2.0, "maximum": 1.0},
        {"initial": float("nan")},
    ],
)
def test_invalid_policy_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kwargs)
