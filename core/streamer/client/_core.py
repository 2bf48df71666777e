"""What both stream runners share: one stream's supervision, without its I/O.

A stream runs either on the event loop (``stream.StreamRunner``, for ``async def`` listeners) or
in a thread of its own that reads the call through gRPC's sync API (``threaded.ThreadedRunner``,
for sync listeners). Everything they must agree on lives here, once: decoding a message, handing
a batch to the listener, wrapping errors, asking ``report_error`` and the decision table
(``supervisor.decide``), backoff, states and observer events, and the batch gate (the
mass-change guard, ``streamer.client.gate``) every batch passes before ``update``.

Listener calls are the only thing the two differ on (awaited on the loop vs called in the
stream's thread), so the shared steps are generators that *yield* the listener call they need
(:data:`Op`: method name and arguments) and receive its result, or its exception thrown in. Each
runner drives them with its own small loop (``drive``); no step does I/O itself.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import re
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from streamer.base.errors import StreamerError
from streamer.base.logs import escape
from streamer.client.backoff import BackoffState
from streamer.client.connection import ResolvedConnection
from streamer.client.diagnose import Diagnosis, diagnose
from streamer.client.events import Decision, NullObserver, StreamObserver, StreamState
from streamer.client.gate import PASS, BatchGate, ReleaseResult
from streamer.client.guard import GuardPolicy
from streamer.client.listener import Listener
from streamer.client.supervisor import Action, Event, Step, Wait, decide, error_to_report
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest

__all__ = [
    "ListenerFault",
    "Op",
    "Steps",
    "StreamCore",
    "StreamRpcError",
    "contain",
    "decode",
    "is_async",
    "pack_extra_args",
    "set_extra_args",
]

log = logging.getLogger("streamer.client.stream")

Op = tuple[str, tuple[Any, ...]]
"""A listener call a shared step needs: the method's name and its arguments."""

Steps = Generator[Op, Any, Any]
"""A shared step: yields :data:`Op`\\ s, returns its outcome (see each step)."""

STOP = Step(Action.STOP)


def pack_extra_args(value: object) -> any_pb2.Any | None:
    """get_extra_args() result -> ``google.protobuf.Any`` (or None for "no extra args")."""
    if value is None:
        return None
    if isinstance(value, any_pb2.Any):
        return value
    if isinstance(value, Message):
        packed = any_pb2.Any()
        packed.Pack(value)
        return packed
    raise TypeError(
        "get_extra_args() must return a protobuf message, a google.protobuf.Any or None, "
        f"got {type(value).__name__}"
    )


def set_extra_args(request: StreamRequest, extra: any_pb2.Any | None) -> None:
    """Put ``extra`` in ``request.extra_args`` by value (``type_url``, ``value``), never with
    ``CopyFrom``: the wire messages live in their own descriptor pool (see streamer.wire), so
    an ``Any`` from protobuf's default pool is another class."""
    if extra is not None:
        request.extra_args.type_url = extra.type_url
        request.extra_args.value = extra.value


def is_async(fn: object) -> bool:
    """Whether a listener method is ``async def`` (or an object with an async ``__call__``).
    A listener whose ``update`` is async runs on the event loop; any other in a thread."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def decode(raw: object) -> DataUpdateBatch | None:
    """One received message -> a batch; None when it is not a valid ``DataUpdateBatch``.

    Both runners receive raw bytes (no gRPC deserializer) and decode here, so an undecodable
    message is handled the same way whichever API read it."""
    if not isinstance(raw, bytes):
        return None
    try:
        return DataUpdateBatch.FromString(raw)
    except (DecodeError, ValueError):
        return None


_OVER_LIMIT = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


class StreamRpcError(grpc.aio.AioRpcError, StreamerError):
    """A failed GetUpdates call as ``report_error`` receives it: the gRPC error (same
    ``code()``, ``details()``, metadata; the original is ``__cause__``) whose ``str()`` names
    the stream and, for a message over the receive limit, the limit and how to raise it.

    The same class whichever API read the call (grpc.aio for async listeners, gRPC's sync API
    for sync ones), so ``report_error`` never needs to tell them apart.

    ``diagnosis`` is set for connection failures this project can explain (TLS, refused,
    DNS, ...; see ``streamer.client.diagnose``); ``str()`` then gives its cause and hint
    instead of gRPC's text, which stays in ``details()``."""

    diagnosis: Diagnosis | None = None

    def __init__(
        self,
        code: grpc.StatusCode,
        initial_metadata: Any = None,
        trailing_metadata: Any = None,
        details: str | None = None,
        debug_error_string: str | None = None,
        *,
        stream: str = "",
    ) -> None:
        super().__init__(code, initial_metadata, trailing_metadata, details, debug_error_string)
        self.stream = stream

    @classmethod
    def wrap(
        cls,
        stream: str,
        error: grpc.aio.AioRpcError | grpc.Call,
        connection: ResolvedConnection | None = None,
    ) -> StreamRpcError:
        """``error``: a grpc.aio error, or a failed call of gRPC's sync API (which is its own
        ``RpcError``)."""
        out = cls(
            error.code(),
            error.initial_metadata(),
            error.trailing_metadata(),
            error.details(),
            error.debug_error_string(),  # type: ignore[union-attr]
            stream=stream,
        )
        out.__cause__ = error  # type: ignore[assignment]
        out.diagnosis = diagnose(error.code(), error.details() or "", connection)
        return out

    @property
    def hint(self) -> str:
        """What to do about it, when known (a message over the receive limit, a diagnosed
        connection failure); else ""."""
        if self.diagnosis is not None:
            return self.diagnosis.hint
        over = _OVER_LIMIT.search(self.details() or "")
        if self.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and over:
            return (
                f"a {over[1]}-byte message exceeds the client's receive limit of {over[2]} "
                "bytes: raise max_receive_message_length / [cloud] max_receive_message_mb"
            )
        return ""

    def __str__(self) -> str:
        head = f"stream {self.stream!r}: GetUpdates failed: {self.code().name}"
        if self.diagnosis is not None:
            return f"{head}: {self.diagnosis}"
        text = f"{head}: {self.details()}"
        hint = self.hint
        return f"{text} ({hint})" if hint else text


class ListenerFault(StreamerError):
    """Plugin code raised a ``BaseException`` that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``, a custom subclass). It is handled like any listener error, for this
    stream only; the original is ``__cause__``."""


def contain(exc: BaseException, what: str) -> Exception:
    """The boundary around plugin code: ``exc`` as an ``Exception`` the supervisor can handle.

    Cancellation is not plugin code's to raise into us and must propagate: callers re-raise
    ``asyncio.CancelledError`` before calling this. Anything else that is not an ``Exception``
    is wrapped in :class:`ListenerFault` (``what`` names the method), the original kept as the
    cause, so it can never escape the stream's task and take the event loop down.
    """
    if isinstance(exc, Exception):
        return exc
    fault = ListenerFault(f"{what} raised {type(exc).__name__}: {exc}")
    fault.__cause__ = exc
    return fault


class _Relay:
    """Observer events from a stream's thread, delivered in order on the event loop.

    Events queue up; the loop is woken only when it has drained the previous ones, so a busy
    stream costs one wake-up per burst, not per event, and the stream's thread never waits.
    """

    __slots__ = ("_deliver", "_loop", "_queue", "_scheduled")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[str, tuple[Any, ...]], None],
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._queue: collections.deque[tuple[str, tuple[Any, ...]]] = collections.deque()
        self._scheduled = False

    def post(self, method: str, args: tuple[Any, ...]) -> None:
        self._queue.append((method, args))
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: nobody is watching any more
                self._queue.clear()

    def _drain(self) -> None:
        self._scheduled = False  # before popping: an event posted from now on schedules anew
        queue = self._queue
        while queue:
            method, args = queue.popleft()
            self._deliver(method, args)

    def close(self) -> None:
        """On the loop: deliver what is queued, then drop every later event (the stream's
        thread was abandoned; what it still does is no longer this stream's news)."""
        self._drain()
        self._deliver = _drop


def _drop(method: str, args: tuple[Any, ...]) -> None:
    """An abandoned stream thread's late events go nowhere."""


class StreamCore:
    """One stream's supervision state and steps, shared by both runners.

    ``stopping`` is set by the runner's ``stop()`` (from any thread); the steps check it after
    every listener call so a removed stream never acts on a decision nobody wants.
    """

    def __init__(
        self,
        listener: Listener,
        *,
        observer: StreamObserver,
        backoff: BackoffState,
        interval: float,
        clock: Callable[[], float],
        gateway_id: str = "",
        connection: ResolvedConnection | None = None,
        guard: GuardPolicy | None = None,
    ) -> None:
        self.listener = listener
        self.name: str = listener.name
        self.gate = BatchGate(self.name, guard)
        # held_keys() is optional: asked once so the guard judges the first snapshot after a
        # restart too
        self.asks_held_keys = callable(getattr(listener, "held_keys", None))
        self.backoff = backoff
        self.interval = interval
        self.stopping = False
        self.state = StreamState.STOPPED
        self._observer = observer
        # Per-batch observer calls cost a few microseconds each; skip them when nobody listens.
        self.observed = type(observer) is not NullObserver  # a subclass may override some
        self._clock = clock
        self._gateway_id = gateway_id
        self._connection = connection  # to explain connection failures
        self._streaming = False  # this call has been reported as streaming
        self._log = logging.getLogger(f"streamer.client.stream.{self.name}")
        self._relay: _Relay | None = None

    def listener_methods(self) -> dict[str, Callable[..., Any]]:
        """The listener's methods the steps may ask a runner to call, by name."""
        names = ["get_extra_args", "update", "report_error"]
        if self.asks_held_keys:
            names.append("held_keys")
        return {name: getattr(self.listener, name) for name in names}

    # -- observer plumbing -----------------------------------------------------------------

    def relay_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver observer events on ``loop`` (for a stream running in a thread of its own):
        observers are always called on the event loop thread, in order."""
        self._relay = _Relay(loop, self._observe)

    def abandon(self) -> None:
        """On the loop, when a thread-run stream's task was cancelled while its thread is
        still inside a listener call (``Client.close(timeout)``, the host's shutdown bound):
        report the stream stopped now, as the loop runner does on cancel, and mute the
        thread's later events, so that a stream started again under the same name is not
        reported stopped when the old call finally returns."""
        if self._relay is not None:
            self._relay.close()
        if self.state is not StreamState.STOPPED:
            self.state = StreamState.STOPPED
            self._observe("state_changed", (StreamState.STOPPED,))
        self._observe("stream_stopped", (None,))

    def notify(self, method: str, *args: Any) -> None:
        if self._relay is None:
            self._observe(method, args)
        else:
            self._relay.post(method, args)

    def _observe(self, method: str, args: tuple[Any, ...]) -> None:
        try:
            getattr(self._observer, method)(self.name, *args)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("observer %s failed on stream %r", method, self.name)

    def set_state(self, state: StreamState) -> None:
        if state is not self.state:
            self.state = state
            self.notify("state_changed", state)

    # -- steps -----------------------------------------------------------------------------

    def open(self) -> Steps:
        """Before a call: ``get_extra_args()``. Returns the request to send, or a Step when
        there is none to send (extra args failed, or stopped meanwhile)."""
        self.set_state(StreamState.CONNECTING)
        self._streaming = False
        try:
            extra = pack_extra_args((yield ("get_extra_args", ())))
        except GeneratorExit:  # the runner closed the step: its task was cancelled
            raise
        except BaseException as exc:
            if self.stopping:  # removed meanwhile: nobody wants its decision
                return STOP
            what = f"get_extra_args() of stream {self.name!r}"
            return (yield from self.report(Event.EXTRA_ARGS_FAILED, contain(exc, what)))
        if self.stopping:
            return STOP
        request = StreamRequest(gatewayId=self._gateway_id, stream_name=self.name)
        set_extra_args(request, extra)
        return request

    def established(self, done: bool, ok: bool) -> None:
        """The server's headers arrived. With a digest that matches its data, a server may
        send no batch at all, and the stream is still in sync: streaming unless the call
        already failed (``done`` and not ``ok``)."""
        if not done or ok:
            self.streaming()

    def streaming(self) -> None:
        if not self._streaming:
            self._streaming = True
            self.set_state(StreamState.STREAMING)

    def ended(self) -> Step:
        """The server closed the call with OK: every batch of it was applied (a held one
        ends the call with BATCH_HELD instead), so the stream holds what the cloud serves."""
        self.notify("in_sync")
        return decide(Event.CALL_ENDED)

    def failed(self, error: BaseException) -> Steps:
        """The call failed (``grpc.RpcError`` from either API). Returns the Step."""
        if self.stopping:
            return STOP
        # grpc.aio raises AioRpcError; gRPC's sync API raises the failed call itself.
        if isinstance(error, (grpc.aio.AioRpcError, grpc.Call)) and not isinstance(
            error, StreamRpcError
        ):
            error = StreamRpcError.wrap(self.name, error, self._connection)
        return (yield from self.report(Event.CALL_FAILED, error))

    def received(self, raw: object) -> Steps:
        """One message read from the call. Returns None to read the next one, or the Step."""
        batch = decode(raw)
        if batch is None:
            bad = StreamRpcError(
                grpc.StatusCode.INTERNAL,
                details="the server sent a response that is not a valid DataUpdateBatch",
                stream=self.name,
            )
            return (yield from self.report(Event.CALL_FAILED, bad))
        self.streaming()
        return (yield from self.gated(batch))

    def gated(self, batch: DataUpdateBatch) -> Steps:
        """The batch gate, for both runners: the gate (``streamer.client.gate``) judges
        ``batch`` before the listener sees it; a held batch ends the call (BATCH_HELD: ask
        again after the streaming interval). Returns None (read the next one) or the Step."""
        gate = self.gate
        if gate.needs_seed:
            yield from self.seed()
        admission = gate.admit(batch, self._clock())
        if admission is PASS:
            return (yield from self.hand_off(batch))
        if admission.ended:
            self.notify("hold_ended", admission.ended)
        if admission.hold is not None:
            self.notify("batch_held", admission.hold)
            return decide(Event.BATCH_HELD)
        if admission.batches is None:
            return (yield from self.hand_off(batch))
        for item in admission.batches:
            step = yield from self.hand_off(item)
            if step is not None:
                return step
        return Step(Action.NEW_CALL) if admission.end_call else None

    def seed(self) -> Steps:
        """Ask the listener's optional ``held_keys()`` how many keys it holds (once), so the
        guard judges the first snapshot after a restart too."""
        count: int | None = None
        if self.asks_held_keys:
            try:
                answer = yield ("held_keys", ())
            except GeneratorExit:  # the runner closed the step: its task was cancelled
                raise
            except BaseException as exc:
                self._log.warning(
                    "held_keys() of stream %s raised %s; the guard judges from the first "
                    "applied batch on",
                    escape(repr(self.name)),
                    escape(f"{type(exc).__name__}: {exc}"),
                )
            else:
                if isinstance(answer, int) and not isinstance(answer, bool) and answer >= 0:
                    count = answer
        self.gate.seed(count)

    def release(self) -> ReleaseResult:
        """``streamer release``: the held snapshot is applied by the runner at once
        (:meth:`released`). Thread-safe; the runner's wait must be woken by the caller."""
        result = self.gate.release()
        if result.released:
            self.notify("hold_ended", "released")
        return result

    def released(self) -> Steps:
        """Between calls: a snapshot the operator released is handed over now. Returns None
        when none waits, else the Step (a new call at once when it was accepted)."""
        batch = self.gate.take_released()
        if batch is None:
            return None
        step = yield from self.hand_off(batch)
        return step or Step(Action.NEW_CALL)

    def hand_off(self, batch: DataUpdateBatch) -> Steps:
        """THE place a batch is handed to the listener, for both runners: observer events
        around ``update(batch)``, its verdict or exception turned into a decision. Returns
        None (batch accepted: read the next one) or the Step."""
        observed = self.observed
        if observed:
            self.notify("batch_received", batch)
            start = self._clock()
        try:
            verdict = yield ("update", (batch,))
        except GeneratorExit:  # the runner closed the step: its task was cancelled
            raise
        except BaseException as exc:
            if observed:
                self.notify("update_done", self._clock() - start, None)
            if self.stopping:  # removed meanwhile: nobody wants its decision
                return STOP
            what = f"update() of stream {self.name!r}"
            return (yield from self.report(Event.UPDATE_RAISED, contain(exc, what)))
        if observed:
            self.notify("update_done", self._clock() - start, verdict is True)
        if verdict is True:
            self.gate.applied(batch)
        if self.stopping:
            return STOP
        if verdict is not True:
            return (yield from self.report(Event.UPDATE_DECLINED, None, verdict))
        self.backoff.reset()
        return None

    def report(self, event: Event, error: BaseException | None, verdict: object = False) -> Steps:
        """Report ``event`` to the listener (when the table says so) and decide. Returns the
        Step."""
        reported = error_to_report(event, error, stream=self.name, verdict=verdict)
        if reported is None:
            return decide(event)
        try:
            answer = yield ("report_error", (reported,))
        except GeneratorExit:  # the runner closed the step: its task was cancelled
            raise
        except BaseException as raised:
            exc = contain(raised, f"report_error() of stream {self.name!r}")
            self._log.error(
                "report_error() of stream %s raised %s: %s; stopping the stream",
                escape(repr(self.name)),
                type(raised).__name__,
                escape(str(raised)),
                exc_info=raised,
            )
            self.notify("error_reported", exc, Decision.STOP, Event.REPORT_ERROR_RAISED.value)
            return decide(Event.REPORT_ERROR_RAISED, exc)
        step = decide(event, answer)
        if step.error is not None and not isinstance(step.error, Exception):
            # report_error returned a SystemExit or the like: the stream stops with it as the
            # cause, but it must not escape the stream's task.
            step = replace(
                step, error=contain(step.error, f"report_error() of stream {self.name!r}")
            )
        decision = Decision.STOP if step.action is Action.STOP else Decision.CONTINUE
        self.notify("error_reported", reported, decision, event.value)
        return step

    def schedule(self, step: Step) -> float:
        """The wait before the next call after ``step`` (a NEW_CALL): none (a released snapshot
        was just applied), the streaming interval or the next backoff delay, announced to
        observers."""
        if step.wait is Wait.NONE:
            return 0.0
        if step.wait is Wait.INTERVAL:
            delay, reason = self.interval, "interval"
        else:
            delay, reason = self.backoff.next_delay(), "backoff"
        self.set_state(StreamState.WAITING)
        self.notify("reconnect_scheduled", delay, reason)
        return delay
