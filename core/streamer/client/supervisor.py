"""The supervisor's decision table (docs/architecture.md), as pure functions.

Given what just happened on a stream and, when the event is reported, what the listener's
``report_error`` answered, ``decide`` says whether to keep reading, open a new call after the
streaming interval, open one after backoff, or stop with an error. No I/O, no clock: the stream
runner (``streamer.client.stream``) does the waiting, this module only chooses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from streamer.base.errors import StreamerError

__all__ = [
    "Action",
    "Event",
    "ListenerDeclined",
    "Step",
    "Wait",
    "decide",
    "error_to_report",
]


class Event(enum.Enum):
    BATCH_ACCEPTED = "batch accepted"  # update() returned True
    UPDATE_DECLINED = "update declined"  # update() returned False
    UPDATE_RAISED = "update raised"
    EXTRA_ARGS_FAILED = "get_extra_args failed"  # raised, or returned something unpackable
    CALL_ENDED = "call ended"  # the server closed the call with OK
    CALL_FAILED = "call failed"  # grpc.RpcError: the call failed or could not connect
    REPORT_ERROR_RAISED = "report_error raised"
    BATCH_HELD = "batch held"  # the mass-change guard held a batch: ask again later


class Action(enum.Enum):
    READ_NEXT = "read next"
    NEW_CALL = "new call"
    STOP = "stop"


class Wait(enum.Enum):
    NONE = "none"
    INTERVAL = "interval"  # the streaming interval: poll cadence
    BACKOFF = "backoff"  # exponential backoff with jitter


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    wait: Wait = Wait.NONE
    reset_backoff: bool = False
    error: BaseException | None = None  # what Client.stream raises when action is STOP


class ListenerDeclined(StreamerError, EOFError):
    """Reported to ``report_error`` when ``update`` returned False (Go's ``io.EOF``)."""


# Events that are passed to report_error before deciding, and what happens when it says "go on".
_REPORTED: dict[Event, Wait] = {
    Event.UPDATE_DECLINED: Wait.INTERVAL,
    Event.UPDATE_RAISED: Wait.BACKOFF,
    Event.EXTRA_ARGS_FAILED: Wait.BACKOFF,
    Event.CALL_FAILED: Wait.BACKOFF,
}


def error_to_report(
    event: Event, error: BaseException | None, *, stream: str = "", verdict: object = False
) -> BaseException | None:
    """The error object ``report_error`` receives for ``event``, or None if it is not reported."""
    if event is Event.UPDATE_DECLINED:
        hint = " (did it forget to return True?)" if verdict is None else ""
        # Only small scalars are quoted: anything else could carry batch values into logs.
        shown = (
            repr(verdict)
            if verdict is None or isinstance(verdict, (bool, int))
            else (f"a {type(verdict).__name__}")
        )
        return ListenerDeclined(f"update() of stream {stream!r} returned {shown}{hint}")
    if event in _REPORTED:
        if error is None:
            raise ValueError(f"event {event.value!r} needs the error that caused it")
        return error
    return None


def decide(event: Event, answer: object = None) -> Step:
    """Pick the next step. ``answer`` is report_error's return value (or, for
    REPORT_ERROR_RAISED, the exception it raised)."""
    if event is Event.BATCH_ACCEPTED:
        return Step(Action.READ_NEXT, reset_backoff=True)
    if event in (Event.CALL_ENDED, Event.BATCH_HELD):
        # A held batch ends the call, push mode too: the cloud must serve it again to insist.
        return Step(Action.NEW_CALL, Wait.INTERVAL)
    if event is Event.REPORT_ERROR_RAISED:
        if not isinstance(answer, BaseException):
            raise ValueError("REPORT_ERROR_RAISED needs the exception report_error raised")
        return Step(Action.STOP, error=answer)
    wait = _REPORTED[event]
    if answer is None:
        return Step(Action.NEW_CALL, wait)
    if isinstance(answer, BaseException):
        return Step(Action.STOP, error=answer)
    return Step(
        Action.STOP,
        error=TypeError(
            f"report_error() must return None or an exception, got {type(answer).__name__}: "
            f"{answer!r}"
        ),
    )
