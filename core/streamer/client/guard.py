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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

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

    threshold: float = 0.5
    confirmations: int = 2

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

    def describe(self) -> str:
        what = "snapshot" if self.resync else "update"
        return f"held {what}: would delete {self.would_delete:,} of {self.held_keys:,} keys"


@dataclass(frozen=True, slots=True)
class Verdict:
    apply: bool
    hold: Hold | None = None  # set when not applied
    released: bool = False  # applied because it was confirmed or released


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
        self._hold: Hold | None = None
        self._batch: _Batch | None = None  # the held snapshot itself, for release()
        self._release = False

    @property
    def held_keys(self) -> int:
        return len(self._keys)

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
            self._hold, self._release = None, False
            return batch
        self._release = self._hold is not None
        return None

    def judge(self, batch: _Batch, now: float) -> Verdict:
        if not self.policy.enabled or not self._keys:
            return Verdict(apply=True)
        held = len(self._keys)
        if batch.resync:
            kept = sum(1 for u in batch.updates if u.value and u.key in self._keys)
            would_delete = held - kept
            empties = not any(u.value for u in batch.updates)
        else:
            deleted = {u.key for u in batch.updates if not u.value and u.key in self._keys}
            would_delete = len(deleted)
            empties = False
        if not empties and would_delete <= self.policy.threshold * held:
            self._hold, self._batch, self._release = None, None, False
            return Verdict(apply=True)
        if not batch.resync:
            # An incremental wipe is never applied by insistence: the next call's snapshot
            # (which the server sends, as the listener's digest no longer matches) is judged.
            hold = Hold(False, would_delete, held, "", now, 1)
            self._hold = hold if self._hold is None or not self._hold.resync else self._hold
            return Verdict(apply=False, hold=hold)
        digest = _digest(batch)
        current = self._hold
        if current is not None and current.resync and current.digest == digest:
            current = Hold(True, would_delete, held, digest, current.since, current.seen + 1)
        else:
            if current is not None and current.resync:
                self._release = False  # a different snapshot is judged anew
            current = Hold(True, would_delete, held, digest, now, 1)
        self._hold, self._batch = current, batch
        if self._release or current.seen > self.policy.confirmations:
            self._hold, self._batch, self._release = None, None, False
            return Verdict(apply=True, released=True)
        return Verdict(apply=False, hold=current)

    def applied(self, batch: _Batch) -> None:
        """The listener accepted ``batch``: follow the keys it now holds."""
        if batch.resync:
            self._keys = {u.key for u in batch.updates if u.value}
            return
        for u in batch.updates:
            if u.value:
                self._keys.add(u.key)
            else:
                self._keys.discard(u.key)
