"""The mass-change guard's decisions (pure: no I/O, the caller's clock)."""

from __future__ import annotations

import pytest

from streamer.client.guard import Guard, GuardPolicy
from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch


def snap(**kv: str) -> DataUpdateBatch:
    return DataUpdateBatch(
        updates=[DataUpdate(key=k, value=v.encode()) for k, v in kv.items()], resync=True
    )


def incr(**kv: str) -> DataUpdateBatch:
    return DataUpdateBatch(updates=[DataUpdate(key=k, value=v.encode()) for k, v in kv.items()])


def holding(n: int, policy: GuardPolicy | None = None) -> Guard:
    guard = Guard(policy)
    first = snap(**{f"k{i}": "v" for i in range(n)})
    assert guard.judge(first, 0.0).apply  # nothing held yet: never judged
    guard.applied(first)
    return guard


def test_small_changes_pass_and_keys_are_followed() -> None:
    guard = holding(10)
    batch = snap(**{f"k{i}": "v" for i in range(5, 12)})  # deletes 5 of 10: not more than half
    assert guard.judge(batch, 1.0).apply
    guard.applied(batch)
    assert guard.held_keys == 7
    assert guard.judge(incr(k5="", k6="", k7=""), 2.0).apply  # 3 of 7
    guard.applied(incr(k5="", k6="", k7=""))
    assert guard.held_keys == 4 and guard.hold is None


def test_a_snapshot_deleting_most_keys_is_held_until_the_cloud_insists() -> None:
    guard = holding(10_000)
    wipe = snap(**{f"k{i}": "v" for i in range(188)})
    v1 = guard.judge(wipe, 5.0)
    assert not v1.apply and v1.hold is not None
    assert v1.hold.describe() == "held snapshot: would delete 9,812 of 10,000 keys"
    assert (v1.hold.since, v1.hold.seen) == (5.0, 1)
    v2 = guard.judge(wipe, 25.0)  # served again: 1 confirmation
    assert not v2.apply and v2.hold is not None and (v2.hold.since, v2.hold.seen) == (5.0, 2)
    v3 = guard.judge(wipe, 45.0)  # 2 confirmations: applied
    assert v3.apply and v3.released and guard.hold is None
    guard.applied(wipe)
    assert guard.held_keys == 188


def test_an_empty_snapshot_is_always_held_and_a_different_one_replaces_it() -> None:
    guard = holding(4, GuardPolicy(threshold=1.0))  # deleting all is "not more than all"...
    v = guard.judge(snap(), 1.0)
    assert not v.apply and v.hold is not None and v.hold.would_delete == 4  # ...but empties
    other = snap(k0="v")  # a different snapshot: judged anew, seen counts from 1
    v = guard.judge(other, 2.0)
    assert v.apply  # with threshold 1.0, deleting 3 of 4 passes


def test_different_snapshots_restart_the_count() -> None:
    guard = holding(10)
    a, b = snap(k0="v"), snap(k1="v")
    assert not guard.judge(a, 1.0).apply
    assert not guard.judge(a, 2.0).apply
    v = guard.judge(b, 3.0)
    assert not v.apply and v.hold is not None and (v.hold.seen, v.hold.since) == (1, 3.0)


def test_release_applies_the_held_snapshot_at_once() -> None:
    guard = holding(10)
    wipe = snap(k0="v")
    assert not guard.judge(wipe, 1.0).apply
    assert guard.release() is wipe
    assert guard.hold is None
    assert guard.release() is None  # nothing left to release


def test_an_incremental_wipe_is_held_and_release_lets_the_next_snapshot_through() -> None:
    guard = holding(10)
    v = guard.judge(incr(**{f"k{i}": "" for i in range(8)}), 1.0)
    assert not v.apply and v.hold is not None and not v.hold.resync
    assert v.hold.describe() == "held update: would delete 8 of 10 keys"
    assert guard.release() is None  # nothing to apply now ...
    assert guard.judge(snap(k9="v"), 2.0).apply  # ... but the next snapshot goes through


def test_guard_off() -> None:
    guard = holding(10, GuardPolicy(threshold=0.0))
    assert guard.judge(snap(), 1.0).apply


@pytest.mark.parametrize(("threshold", "confirmations"), [(-0.1, 2), (1.1, 2), (0.5, -1)])
def test_policy_bounds(threshold: float, confirmations: int) -> None:
    with pytest.raises(ValueError):
        GuardPolicy(threshold, confirmations)
