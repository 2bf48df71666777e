"""The batch gate: what stands between a stream's wire and its listener's ``update``.

Every runner (the asyncio one in ``streamer.client.stream``, and any other that reads a call
itself) hands each batch to :meth:`BatchGate.admit` before ``update`` and tells
:meth:`BatchGate.applied` when ``update`` accepted it. The gate owns the stream's mass-change
:class:`~streamer.client.guard.Guard` and an operator's release; it decides, the runner acts:

- ``Admission.batches`` are handed to ``update`` in order (None: the batch itself);
- ``Admission.hold`` set: nothing is handed over; the runner ends the call and asks again after
  the streaming interval (``Event.BATCH_HELD`` in the supervisor's table);
- ``Admission.ended`` says how a hold ended ("confirmed", "superseded") for the observers.

:meth:`BatchGate.release` may be called from another thread (the host's endpoint reaches it
through the event loop, a thread runner through its own lock): the state is guarded by a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamer.client.guard import Guard, GuardPolicy, Hold

if TYPE_CHECKING:
    from streamer.wire.streamer_pb2 import DataUpdateBatch

__all__ = ["PASS", "Admission", "BatchGate", "ReleaseResult"]


@dataclass(frozen=True, slots=True)
class Admission:
    batches: tuple[DataUpdateBatch, ...] | None = None  # hand these to update(), in order
    # (None: the batch itself)
    hold: Hold | None = None  # the batch is held: end the call, ask again after the interval
    ended: str = ""  # a hold ended: "confirmed" (the cloud insisted) or "superseded"
    end_call: bool = False  # after handing over, end the call (a fresh one brings a snapshot)


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """What ``streamer release`` did: ``released`` False means nothing was held."""

    stream: str
    released: bool
    detail: str


PASS = Admission()
"""The usual answer, always this object: hand the batch over, nothing else to do."""


class BatchGate:
    """One stream's gate; ``admit``'s ``now`` (the runner's clock) dates a hold."""

    def __init__(self, stream: str, policy: GuardPolicy | None = None) -> None:
        self.stream = stream
        self.guard = Guard(policy)
        self._lock = threading.Lock()
        self._pending: DataUpdateBatch | None = None  # released, not yet handed over

    @property
    def policy(self) -> GuardPolicy:
        return self.guard.policy

    @property
    def hold(self) -> Hold | None:
        return self.guard.hold

    @property
    def needs_seed(self) -> bool:
        """True until the gate knows what the listener holds: the runner then asks the
        listener's optional ``held_keys()`` once and passes the answer to :meth:`seed`."""
        return self.guard.policy.enabled and not self.guard.knows

    def seed(self, held_keys: int | None) -> None:
        with self._lock:
            self.guard.seed(held_keys)

    def admit(self, batch: DataUpdateBatch, now: float) -> Admission:
        """Judge ``batch`` before the listener sees it."""
        with self._lock:
            pending, self._pending = self._pending, None
            had = self.guard.hold
            if pending is None and had is None:  # the hot path
                verdict = self.guard.judge(batch, now)
                return PASS if verdict.apply else Admission(hold=verdict.hold)
            if pending is not None and not batch.resync:
                # A released snapshot still waits: it goes first, and a fresh call brings the
                # snapshot this incremental batch belongs after.
                return Admission(batches=(pending,), end_call=True)
            verdict = self.guard.judge(batch, now)
            if not verdict.apply:
                return Admission(hold=verdict.hold)
            ended = ""
            if had is not None:
                ended = verdict.how or "superseded"
                if ended == "released":  # reported when the operator released it
                    ended = ""
            return Admission(ended=ended)

    def applied(self, batch: DataUpdateBatch) -> None:
        """``update`` accepted ``batch``."""
        if self.guard.policy.enabled:  # off: no key set is kept
            with self._lock:
                self.guard.applied(batch)

    def release(self) -> ReleaseResult:
        """The operator's word (``streamer release``): a held snapshot is handed over by the
        runner at once (:meth:`take_released`); after a held incremental batch the next
        snapshot is applied whatever it deletes."""
        with self._lock:
            hold = self.guard.hold
            if hold is None:
                return ReleaseResult(self.stream, False, f"stream {self.stream!r}: nothing held")
            batch = self.guard.release()
            what = hold.describe().removeprefix("held ")
            if batch is not None:
                self._pending = batch  # type: ignore[assignment]
                return ReleaseResult(self.stream, True, f"released: applying the {what}")
            return ReleaseResult(
                self.stream,
                True,
                f"released the {what}; the next snapshot is applied whatever it deletes",
            )

    def take_released(self) -> DataUpdateBatch | None:
        """The released snapshot to hand over now, between calls (None: none)."""
        with self._lock:
            pending, self._pending = self._pending, None
            return pending
