"""The mass-change guard: hold a batch that would wipe most of a stream until the cloud insists.

An empty or truncated snapshot from a cloud bug would otherwise wipe every gateway's data within
one poll interval. Per stream the guard knows which keys the listener holds (it follows every
batch the listener accepted) and judges each new batch before the listener sees it:

- a resync batch that would delete more than ``threshold`` of the keys held (default: more than
  half), or that would empty a non-empty stream, is **held**;
- an incremental batch that deletes more than ``threshold`` of the keys held is held too;
- a held snapshot is applied once the cloud has served the same snapshot (same content digest)
  on ``confirmations`` further calls (default 2: the cloud insists), or at once when an
  operator releases it; a different later snapshot replaces it and is judged anew.

``threshold = 0`` turns the guard off. The guard is pure: no I/O, no clock of its own (the
caller passes ``now``), so the runner and its tests drive it directly.

After a host restart the guard knows no key by name. :meth:`Guard.seed` tells it how many keys
the listener already holds (``held_keys()`` of a listener that can count, e.g. the sink kit's
``MirrorListener``); until the first applied snapshot names them, a snapshot is judged by
that count alone: it deletes at least ``held - live keys in it``, so an empty or truncated
snapshot is still held, while one that swaps keys one for one is not seen. Without a seed the
guard judges nothing until it has followed a first applied batch.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from streamer.client.defaults import GUARD_CONFIRMATIONS, GUARD_MAX_DELETE_FRACTION
from streamer.wire.digest import Digester

__all__ = ["Guard", "GuardPolicy", "Hold", "Verdict"]


class _Update(Protocol):
    key: str
    value: bytes


class _Batch(Protocol):
    @property
    def updates(self) -> Iterable[_Update]: ...

    @property
    def resync(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """``threshold``: fraction of the held keys a batch may delete (0 = guard off);
    ``confirmations``: how many further calls must serve the same held snapshot."""

    threshold: float = GUARD_MAX_DELETE_FRACTION
    confirmations: int = GUARD_CONFIRMATIONS

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.confirmations < 0:
            raise ValueError(f"confirmations must be >= 0, got {self.confirmations!r}")

    @property
    def enabled(self) -> bool:
        return self.threshold > 0.0


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a batch is held: what it would do, and how often the cloud has served it since."""

    resync: bool
    would_delete: int
    held_keys: int
    digest: str  # content digest of a held snapshot ("" for an incremental batch)
    since: float
    seen: int  # calls that served this same snapshot, the first one included
    confirmations: int = 0  # further calls that must serve it before it is applied

    @property
    def remaining(self) -> int:
        """Calls that must still serve this snapshot before it is applied (0 for an
        incremental batch: never applied by insistence)."""
        return max(self.confirmations + 1 - self.seen, 0) if self.resync else 0

    def describe(self) -> str:
        what = "snapshot" if self.resync else "update"
        return f"held {what}: would delete {self.would_delete:,} of {self.held_keys:,} keys"


@dataclass(frozen=True, slots=True)
class Verdict:
    apply: bool
    hold: Hold | None = None  # set when not applied
    released: bool = False  # applied because it was confirmed or released
    how: str = ""  # when released: "confirmed" (the cloud insisted) or "released" (operator)


_APPLY = Verdict(apply=True)
_KEY = operator.attrgetter("key")
_VALUE = operator.attrgetter("value")


@dataclass(slots=True)
class _Delta:
    """What one batch sets and deletes, read once: the wire's messages are slow to walk in
    Python, so judge() and applied() share this, and set algebra in C does the rest. A batch
    without deletions (the common case) has ``sets`` None until a snapshot needs them."""

    batch: object
    dels: set[str]  # keys deleted (empty value)
    sets: set[str] | None = None  # keys given a value (a snapshot's live keys)

    def live(self, batch: _Batch) -> set[str]:
        if self.sets is None:
            self.sets = set(map(_KEY, batch.updates))
        return self.sets


def _delta(batch: _Batch) -> _Delta:
    updates = batch.updates
    if all(map(_VALUE, updates)):  # no empty value: nothing deleted
        return _Delta(batch, set())
    sets: set[str] = set()
    dels: set[str] = set()
    for update in updates:  # in order: the last word on a key wins
        key = update.key
        if update.value:
            sets.add(key)
            dels.discard(key)
        else:
            dels.add(key)
            sets.discard(key)
    return _Delta(batch, dels, sets)


def _digest(batch: _Batch) -> str:
    d = Digester()
    for u in batch.updates:
        if u.value:
            d.add(u.key, u.value)
    return d.hexdigest()


class Guard:
    """One stream's guard. Call :meth:`judge` before handing a batch to the listener and
    :meth:`applied` after the listener accepted it."""

    def __init__(self, policy: GuardPolicy | None = None) -> None:
        self.policy = policy or GuardPolicy()
        self._keys: set[str] = set()
        self._unknown = 0  # keys the listener holds that no applied batch named (seed())
        self._hold: Hold | None = None
        self._batch: _Batch | None = None  # the held snapshot itself, for release()
        self._release = False
        self._released = ""  # digest of the snapshot release() handed out, until applied
        self._known = False
        self._last: _Delta | None = None  # the batch judged last, read once for applied()

    @property
    def held_keys(self) -> int:
        return len(self._keys) + self._unknown

    @property
    def knows(self) -> bool:
        """Whether the guard has been told what the listener holds (seeded or followed a
        batch); a runner asks the listener's ``held_keys()`` while this is False."""
        return self._known

    def seed(self, held_keys: int | None) -> None:
        """The listener already holds ``held_keys`` keys (None: it cannot tell). Only before
        the guard followed any batch."""
        if not self._known:
            self._known = True
            if held_keys is not None and held_keys > 0:
                self._unknown = held_keys

    @property
    def hold(self) -> Hold | None:
        """The batch held now, if any."""
        return self._hold

    def release(self) -> _Batch | None:
        """Operator's word. A held snapshot is returned, to be applied at once (and the hold
        ends); after a held incremental batch, the next snapshot is applied whatever it
        deletes. None when there is no snapshot to apply now."""
        batch, self._batch = self._batch, None
        if self._hold is not None and self._hold.resync and batch is not None:
            self._released = self._hold.digest  # served again meanwhile: applied, not re-held
            self._hold, self._release = None, False
            return batch
        self._release = self._hold is not None
        return None

    def judge(self, batch: _Batch, now: float) -> Verdict:
        held = len(self._keys) + self._unknown
        if not held or not self.policy.enabled:
            return _APPLY
        keys, unknown = self._keys, self._unknown
        delta = self._read(batch)
        if batch.resync:
            live = delta.live(batch)
            known = len(live & keys)
            # keys the guard cannot name count as kept while the snapshot has others to match
            kept = known + min(unknown, len(live) - known)
            would_delete = held - kept
            empties = not live
        else:
            gone = delta.dels
            named = len(gone & keys)
            would_delete = named + min(unknown, len(gone) - named)
            empties = False
        if not empties and would_delete <= self.policy.threshold * held:
            if self._hold is not None:
                self._hold, self._batch, self._release = None, None, False
            return _APPLY
        if not batch.resync:
            # An incremental wipe is never applied by insistence: the next call's snapshot
            # (which the server sends, as the listener's digest no longer matches) is judged.
            hold = Hold(False, would_delete, held, "", now, 1, self.policy.confirmations)
            self._hold = hold if self._hold is None or not self._hold.resync else self._hold
            return Verdict(apply=False, hold=hold)
        digest = _digest(batch)
        if self._released and digest == self._released:  # the operator released this one
            self._hold, self._batch, self._release = None, None, False
            return Verdict(apply=True, released=True, how="released")
        current = self._hold
        if current is not None and current.resync and current.digest == digest:
            current = Hold(
                True,
                would_delete,
                held,
                digest,
                current.since,
                current.seen + 1,
                current.confirmations,
            )
        else:
            if current is not None and current.resync:
                self._release = False  # a different snapshot is judged anew
            current = Hold(True, would_delete, held, digest, now, 1, self.policy.confirmations)
        self._hold, self._batch = current, batch
        if self._release or current.seen > self.policy.confirmations:
            how = "released" if self._release else "confirmed"
            self._hold, self._batch, self._release = None, None, False
            return Verdict(apply=True, released=True, how=how)
        return Verdict(apply=False, hold=current)

    def applied(self, batch: _Batch) -> None:
        """The listener accepted ``batch``: follow the keys it now holds."""
        self._known, self._released = True, ""
        delta, self._last = self._read(batch), None
        if batch.resync:
            self._keys, self._unknown = delta.live(batch), 0
            return
        keys = self._keys
        if delta.sets is None and not self._unknown:  # sets only: straight from the wire
            keys.update(map(_KEY, batch.updates))
            return
        if not self._unknown:
            keys |= delta.live(batch)
            keys -= delta.dels
            return
        for key in delta.live(batch):
            if key not in keys and self._unknown:
                self._unknown -= 1  # most likely one it held already: never over-count
            keys.add(key)
        for key in delta.dels:
            if key in keys:
                keys.discard(key)
            elif self._unknown:
                self._unknown -= 1

    def _read(self, batch: _Batch) -> _Delta:
        last = self._last
        if last is None or last.batch is not batch:
            last = self._last = _delta(batch)
        return last
