"""What a stream's supervisor tells observers. The hooks layer adapts pluggy to this protocol.

Observer methods are called on the event loop thread and must not block; an observer that
raises (anything but cancellation, ``SystemExit`` included) is logged and never breaks a stream.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from streamer.client.guard import Hold
    from streamer.wire.streamer_pb2 import DataUpdateBatch

__all__ = ["Decision", "NullObserver", "StreamObserver", "StreamState"]


class StreamState(str, enum.Enum):
    CONNECTING = "connecting"  # a GetUpdates call is being opened
    STREAMING = "streaming"  # the call is open (headers or data received, or waiting for them)
    WAITING = "waiting"  # between calls: streaming interval or backoff
    STOPPED = "stopped"


class Decision(str, enum.Enum):
    CONTINUE = "continue"
    STOP = "stop"


class StreamObserver(Protocol):
    def stream_started(self, stream: str) -> None: ...

    def stream_stopped(self, stream: str, error: BaseException | None) -> None:
        """``error`` is what ``Client.stream`` raises; None when ended by remove_listener."""

    def state_changed(self, stream: str, state: StreamState) -> None: ...

    def batch_received(self, stream: str, batch: DataUpdateBatch) -> None: ...

    def update_done(self, stream: str, duration: float, verdict: bool | None) -> None:
        """``verdict`` is update()'s answer, or None when it raised."""

    def error_reported(
        self, stream: str, error: BaseException, decision: Decision, event: str
    ) -> None:
        """``event`` says what happened: ``streamer.client.supervisor.Event`` values "call failed",
        "update raised", "update declined", "get_extra_args failed" (the error went to
        ``report_error``) or "report_error raised" (``error`` is what it raised)."""

    def reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        """``reason`` is "interval" (poll cadence) or "backoff" (after an error)."""

    def batch_held(self, stream: str, hold: Hold) -> None:
        """The mass-change guard held a batch (not handed to ``update``). Called again each
        time the cloud serves the same held snapshot (``hold.seen`` counts them)."""

    def hold_ended(self, stream: str, how: str) -> None:
        """A hold ended: "confirmed" (the cloud served it ``confirmations`` more times; it is
        applied), "released" (an operator released it), "superseded" (a later batch passed)."""

    def in_sync(self, stream: str) -> None:
        """A call ended with nothing left to apply: the stream holds what the cloud serves."""


class NullObserver:
    """Observer that ignores everything (the default)."""

    def stream_started(self, stream: str) -> None:
        pass

    def stream_stopped(self, stream: str, error: BaseException | None) -> None:
        pass

    def state_changed(self, stream: str, state: StreamState) -> None:
        pass

    def batch_received(self, stream: str, batch: DataUpdateBatch) -> None:
        pass

    def update_done(self, stream: str, duration: float, verdict: bool | None) -> None:
        pass

    def error_reported(
        self, stream: str, error: BaseException, decision: Decision, event: str
    ) -> None:
        pass

    def reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        pass

    def batch_held(self, stream: str, hold: Hold) -> None:
        pass

    def hold_ended(self, stream: str, how: str) -> None:
        pass

    def in_sync(self, stream: str) -> None:
        pass
