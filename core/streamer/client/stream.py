"""One stream's life: open GetUpdates, feed batches to the listener, wait, reconnect, stop.

The choices come from ``streamer.client.supervisor.decide``; this module does the I/O and
the waiting.
Waits and calls are interruptible by ``stop()`` (remove_listener); an ``update`` already running
is allowed to finish first.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.protobuf.message import Message

from streamer.base.errors import StreamerError
from streamer.base.logs import escape
from streamer.client._workers import WorkerPool
from streamer.client.backoff import Backoff, BackoffState
from streamer.client.connection import ResolvedConnection
from streamer.client.diagnose import Diagnosis, diagnose
from streamer.client.events import Decision, NullObserver, StreamObserver, StreamState
from streamer.client.gate import PASS as _PASS
from streamer.client.gate import BatchGate, ReleaseResult
from streamer.client.guard import GuardPolicy
from streamer.client.listener import Listener
from streamer.client.supervisor import Action, Event, Step, Wait, decide, error_to_report
from streamer.wire import METHOD
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest

__all__ = [
    "ListenerFault",
    "Sleep",
    "StreamRpcError",
    "StreamRunner",
    "contain",
    "pack_extra_args",
    "set_extra_args",
]

log = logging.getLogger("streamer.client.stream")

Sleep = Callable[[float], Awaitable[None]]


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


_OVER_LIMIT = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


class StreamRpcError(grpc.aio.AioRpcError, StreamerError):
    """A failed GetUpdates call as ``report_error`` receives it: the gRPC error (same
    ``code()``, ``details()``, metadata; the original is ``__cause__``) whose ``str()`` names
    the stream and, for a message over the receive limit, the limit and how to raise it.

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
        error: grpc.aio.AioRpcError,
        connection: ResolvedConnection | None = None,
    ) -> StreamRpcError:
        out = cls(
            error.code(),
            error.initial_metadata(),
            error.trailing_metadata(),
            error.details(),
            error.debug_error_string(),
            stream=stream,
        )
        out.__cause__ = error
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


class _Invoker:
    """Calls one listener method: awaited if async, in a worker thread if sync."""

    __slots__ = ("_executor", "_fn", "is_async")

    def __init__(self, fn: Callable[..., Any], executor: Executor | None) -> None:
        self._fn = fn
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        self._executor = executor

    async def __call__(self, *args: Any) -> Any:
        if self.is_async:
            return await self._fn(*args)
        loop = asyncio.get_running_loop()
        if isinstance(self._executor, WorkerPool):
            result = await self._executor.run_for_loop(loop, self._fn, *args)
        else:
            result = await loop.run_in_executor(self._executor, self._fn, *args)
        if inspect.isawaitable(result):  # a sync function that returned a coroutine
            return await result
        return result


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True when called from ``loop``'s own thread, while it runs."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _consume(fut: asyncio.Future[object]) -> None:
    """Retrieve a discarded read's outcome so asyncio does not log it as never retrieved."""
    if not fut.cancelled():
        fut.exception()


class StreamRunner:
    """Supervises one listener's stream. ``run()`` returns None when stopped from outside and
    raises the listener's chosen error when it stops itself."""

    def __init__(
        self,
        listener: Listener,
        *,
        channel_for: Callable[[], grpc.aio.Channel],
        streaming_interval: float,
        backoff: Backoff,
        observer: StreamObserver,
        executor: Executor | None,
        gateway_id: str = "",
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.perf_counter,
        connection: ResolvedConnection | None = None,
        guard: GuardPolicy | None = None,
    ) -> None:
        self.listener = listener
        self._connection = connection  # to explain connection failures
        self.name: str = listener.name
        self._channel_for = channel_for
        self._interval = streaming_interval
        self._backoff = BackoffState(backoff, streaming_interval, rng)
        self._observer = observer
        self._gateway_id = gateway_id
        self._sleep: Sleep = sleep or asyncio.sleep
        self._clock = clock
        # Per-batch observer calls cost a few microseconds each; skip them when nobody listens.
        self._observed = type(observer) is not NullObserver  # a subclass may override some
        self._get_extra_args = _Invoker(listener.get_extra_args, executor)
        self._update = _Invoker(listener.update, executor)
        self._report_error = _Invoker(listener.report_error, executor)
        held_keys = getattr(listener, "held_keys", None)
        self._held_keys = _Invoker(held_keys, executor) if callable(held_keys) else None
        self.gate = BatchGate(self.name, guard)
        self._nudge: asyncio.Event | None = None  # set by release(): end the wait
        self._log = logging.getLogger(f"streamer.client.stream.{self.name}")
        self._stopping = False
        self._call: grpc.aio.UnaryStreamCall[StreamRequest, DataUpdateBatch] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self.state = StreamState.STOPPED

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the stream to end: cancels the open call and any wait. Thread-safe."""
        loop = self._loop
        if loop is None:
            self._stopping = True
        elif on_loop(loop):
            self._do_stop()
        else:
            loop.call_soon_threadsafe(self._do_stop)

    def release(self) -> ReleaseResult:
        """``streamer release``: apply the held snapshot now. Call on the stream's loop."""
        result = self.gate.release()
        if result.released:
            self._notify("hold_ended", "released")
            if self._nudge is not None:
                self._nudge.set()
        return result

    def _do_stop(self) -> None:
        self._stopping = True
        if self._call is not None:
            self._call.cancel()
        if self._wake is not None:
            self._wake.set()

    # -- observer plumbing -----------------------------------------------------------------

    def _notify(self, method: str, *args: Any) -> None:
        try:
            getattr(self._observer, method)(self.name, *args)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("observer %s failed on stream %r", method, self.name)

    def _set_state(self, state: StreamState) -> None:
        if state is not self.state:
            self.state = state
            self._notify("state_changed", state)

    # -- the loop --------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the task running this stream, even inside ``update`` (last resort: the
        listener's worker thread is abandoned, not stopped)."""
        if self._task is not None:
            self._task.cancel()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._wake = asyncio.Event()
        self._nudge = asyncio.Event()
        error: BaseException | None = None
        self._notify("stream_started")
        try:
            error = await self._loop_until_stop()
        finally:
            self._call = None
            self._set_state(StreamState.STOPPED)
            self._notify("stream_stopped", error)
        if error is not None:
            raise error

    async def _loop_until_stop(self) -> BaseException | None:
        assert self._nudge is not None
        while not self._stopping:
            self._nudge.clear()
            released = self.gate.take_released()
            if released is not None:  # an operator released a held snapshot: apply it now
                step = await self._update_one(released, self._observed) or Step(Action.NEW_CALL)
            else:
                step = await self._one_call()
            if self._stopping:
                return None
            if step.action is Action.STOP:
                return step.error
            if step.wait is Wait.NONE:
                continue
            if step.wait is Wait.INTERVAL:
                delay, reason = self._interval, "interval"
            else:
                delay, reason = self._backoff.next_delay(), "backoff"
            self._set_state(StreamState.WAITING)
            self._notify("reconnect_scheduled", delay, reason)
            await self._wait(delay)
        return None

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds unless stop() or release() comes first."""
        assert self._wake is not None and self._nudge is not None
        if self._stopping or delay <= 0 or self._nudge.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        nudger = asyncio.ensure_future(self._nudge.wait())
        try:
            await asyncio.wait((sleeper, waker, nudger), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            nudger.cancel()

    async def _one_call(self) -> Step:
        """Open one GetUpdates call and read it until something needs a decision."""
        self._set_state(StreamState.CONNECTING)
        try:
            extra = pack_extra_args(await self._get_extra_args())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            return await self._decide(
                Event.EXTRA_ARGS_FAILED, contain(exc, f"get_extra_args() of stream {self.name!r}")
            )
        if self._stopping:
            return Step(Action.STOP)
        request = StreamRequest(gatewayId=self._gateway_id, stream_name=self.name)
        set_extra_args(request, extra)
        channel = self._channel_for()
        call: grpc.aio.UnaryStreamCall[StreamRequest, DataUpdateBatch] = channel.unary_stream(
            METHOD,
            request_serializer=StreamRequest.SerializeToString,
            response_deserializer=DataUpdateBatch.FromString,
        )(request)
        self._call = call
        try:
            return await self._read(call)
        finally:
            self._call = None
            call.cancel()

    async def _read(self, call: grpc.aio.UnaryStreamCall[StreamRequest, DataUpdateBatch]) -> Step:
        # A sync update() runs in a worker thread; meanwhile the loop reads the next batch, so
        # the thread hand-off overlaps the wire. One batch ahead at most: memory stays bounded.
        read_ahead = not self._update.is_async
        streaming = False
        ahead: asyncio.Future[object] | None = None
        # The call is established once the server's headers arrive: with a digest that matches
        # its data, a server may send no batch at all, and the stream is still in sync.
        try:
            await call.initial_metadata()
        except asyncio.CancelledError:
            if self._stopping and call.cancelled():
                return Step(Action.STOP)
            raise
        if not call.done() or await call.code() is grpc.StatusCode.OK:
            streaming = True
            self._set_state(StreamState.STREAMING)
        try:
            while True:
                try:
                    if ahead is not None:
                        pending, ahead = ahead, None
                        batch = await pending
                    else:
                        batch = await call.read()
                except asyncio.CancelledError:
                    if self._stopping and call.cancelled():
                        return Step(Action.STOP)
                    raise
                except grpc.RpcError as exc:
                    if self._stopping:
                        return Step(Action.STOP)
                    if isinstance(exc, grpc.aio.AioRpcError):
                        exc = StreamRpcError.wrap(self.name, exc, self._connection)
                    return await self._decide(Event.CALL_FAILED, exc)
                if batch is grpc.aio.EOF:  # type: ignore[attr-defined]
                    # every batch of this call was applied (a held one ends the call)
                    self._notify("in_sync")
                    return decide(Event.CALL_ENDED)
                if not isinstance(batch, DataUpdateBatch):  # grpc gives None when parsing fails
                    bad = StreamRpcError(
                        grpc.StatusCode.INTERNAL,
                        details="the server sent a response that is not a valid DataUpdateBatch",
                        stream=self.name,
                    )
                    return await self._decide(Event.CALL_FAILED, bad)
                if not streaming:
                    streaming = True
                    self._set_state(StreamState.STREAMING)
                if self._observed:
                    self._notify("batch_received", batch)
                if read_ahead:
                    ahead = asyncio.ensure_future(call.read())
                step = await self._hand_over(batch)
                if step is not None:
                    return step
        finally:
            if ahead is not None:  # read ahead, never handed over: drop it quietly
                ahead.cancel()
                ahead.add_done_callback(_consume)

    async def _hand_over(self, batch: DataUpdateBatch) -> Step | None:
        """The batch gate: the one place a batch from the wire goes to ``update``. The gate
        (``streamer.client.gate``) judges it; a held batch ends the call (Event.BATCH_HELD).
        None: keep reading; else the step that ends this call."""
        gate = self.gate
        if gate.needs_seed:
            await self._seed()
        admission = gate.admit(batch, self._clock())
        if admission is _PASS:
            return await self._update_one(batch, self._observed)
        if admission.ended:
            self._notify("hold_ended", admission.ended)
        if admission.hold is not None:
            self._notify("batch_held", admission.hold)
            return decide(Event.BATCH_HELD)
        observed = self._observed
        if admission.batches is None:
            return await self._update_one(batch, observed)
        for item in admission.batches:
            step = await self._update_one(item, observed)
            if step is not None:
                return step
        return Step(Action.NEW_CALL) if admission.end_call else None

    async def _seed(self) -> None:
        """Ask the listener's optional ``held_keys()`` how many keys it holds (once), so the
        guard judges the first snapshot after a restart too."""
        count: int | None = None
        if self._held_keys is not None:
            try:
                answer = await self._held_keys()
            except asyncio.CancelledError:
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

    async def _update_one(self, batch: DataUpdateBatch, observed: bool) -> Step | None:
        """``update(batch)``; None when it accepted, else the step the supervisor chose."""
        start = self._clock() if observed else 0.0
        try:
            verdict = await self._update(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if observed:
                self._notify("update_done", self._clock() - start, None)
            if self._stopping:  # removed meanwhile: nobody wants its decision
                return Step(Action.STOP)
            return await self._decide(
                Event.UPDATE_RAISED, contain(exc, f"update() of stream {self.name!r}")
            )
        if observed:
            self._notify("update_done", self._clock() - start, verdict is True)
        if verdict is True:
            self.gate.applied(batch)
        if self._stopping:
            return Step(Action.STOP)
        if verdict is not True:
            return await self._decide(Event.UPDATE_DECLINED, None, verdict)
        self._backoff.reset()
        return None

    async def _decide(
        self, event: Event, error: BaseException | None, verdict: object = False
    ) -> Step:
        """Report ``event`` to the listener (when the table says so) and decide."""
        reported = error_to_report(event, error, stream=self.name, verdict=verdict)
        if reported is None:
            return decide(event)
        try:
            answer = await self._report_error(reported)
        except asyncio.CancelledError:
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
            self._notify("error_reported", exc, Decision.STOP, Event.REPORT_ERROR_RAISED.value)
            return decide(Event.REPORT_ERROR_RAISED, exc)
        step = decide(event, answer)
        if step.error is not None and not isinstance(step.error, Exception):
            # report_error returned a SystemExit or the like: the stream stops with it as the
            # cause, but it must not escape the stream's task.
            step = replace(
                step, error=contain(step.error, f"report_error() of stream {self.name!r}")
            )
        decision = Decision.STOP if step.action is Action.STOP else Decision.CONTINUE
        self._notify("error_reported", reported, decision, event.value)
        return step
