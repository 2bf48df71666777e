"""One stream's life on the event loop: open GetUpdates, feed batches to an ``async def``
listener, wait, reconnect, stop. (A sync listener's stream runs in a thread of its own:
``streamer.client.threaded``.)

The choices come from ``streamer.client.supervisor.decide`` through the shared
``streamer.client._core.StreamCore``; this module does the I/O and the waiting on the loop.
Waits and calls are interruptible by ``stop()`` (remove_listener); an ``update`` already running
is allowed to finish first.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import grpc
import grpc.aio

from streamer.client._core import (
    STOP,
    ListenerFault,
    Steps,
    StreamCore,
    StreamRpcError,
    contain,
    is_async,
    pack_extra_args,
    set_extra_args,
)
from streamer.client._workers import WorkerPool
from streamer.client.events import StreamState
from streamer.client.gate import ReleaseResult
from streamer.client.supervisor import Action, Step
from streamer.wire import METHOD
from streamer.wire.streamer_pb2 import StreamRequest

__all__ = [
    "ListenerFault",
    "Sleep",
    "StreamRpcError",
    "StreamRunner",
    "contain",
    "pack_extra_args",
    "set_extra_args",
]

Sleep = Callable[[float], Awaitable[None]]


class _Invoker:
    """Calls one listener method: awaited if async, in a worker thread if sync."""

    __slots__ = ("_executor", "_fn", "is_async")

    def __init__(self, fn: Callable[..., Any], executor: Executor | None) -> None:
        self._fn = fn
        self.is_async = is_async(fn)
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


class StreamRunner:
    """Supervises one listener's stream on the event loop (the path for ``async def``
    listeners). ``run()`` returns None when stopped from outside and raises the listener's
    chosen error when it stops itself. The decisions, events and errors come from
    :class:`streamer.client._core.StreamCore`, shared with the threaded runner."""

    def __init__(
        self,
        core: StreamCore,
        *,
        channel_for: Callable[[], grpc.aio.Channel],
        executor: Executor | None,
        sleep: Sleep | None = None,
    ) -> None:
        """``core``: the stream's shared supervision (``Client`` builds it); ``executor`` runs
        the listener's sync methods (a listener with an async ``update`` may have sync ones)."""
        self.core = core
        self.listener = core.listener
        self.name: str = core.name
        self.gate = core.gate
        self._channel_for = channel_for
        self._sleep: Sleep = sleep or asyncio.sleep
        self._invokers = {
            name: _Invoker(method, executor) for name, method in core.listener_methods().items()
        }
        self._call: grpc.aio.UnaryStreamCall[StreamRequest, bytes] | None = None
        self._wake: asyncio.Event | None = None
        self._nudge: asyncio.Event | None = None  # set by release(): end the wait
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None

    @property
    def state(self) -> StreamState:
        return self.core.state

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the stream to end: cancels the open call and any wait. Thread-safe."""
        loop = self._loop
        if loop is None:
            self.core.stopping = True
        elif on_loop(loop):
            self._do_stop()
        else:
            loop.call_soon_threadsafe(self._do_stop)

    def release(self) -> ReleaseResult:
        """``streamer release``: apply the held snapshot now. Call on the stream's loop."""
        result = self.core.release()
        if result.released and self._nudge is not None:
            self._nudge.set()
        return result

    def _do_stop(self) -> None:
        self.core.stopping = True
        if self._call is not None:
            self._call.cancel()
        if self._wake is not None:
            self._wake.set()

    def cancel(self) -> None:
        """Cancel the task running this stream, even inside ``update`` (last resort: the
        listener's worker thread is abandoned, not stopped)."""
        if self._task is not None:
            self._task.cancel()

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._wake = asyncio.Event()
        self._nudge = asyncio.Event()
        core = self.core
        error: BaseException | None = None
        core.notify("stream_started")
        try:
            error = await self._loop_until_stop()
        finally:
            self._call = None
            core.set_state(StreamState.STOPPED)
            core.notify("stream_stopped", error)
        if error is not None:
            raise error

    async def _drive(self, steps: Steps) -> Any:
        """Run a shared step, awaiting the listener calls it asks for."""
        try:
            op = next(steps)
            while True:
                name, args = op
                try:
                    result = await self._invokers[name](*args)
                except asyncio.CancelledError:
                    steps.close()
                    raise
                except BaseException as exc:
                    op = steps.throw(exc)
                else:
                    op = steps.send(result)
        except StopIteration as done:
            return done.value

    async def _loop_until_stop(self) -> BaseException | None:
        core = self.core
        assert self._nudge is not None
        while not core.stopping:
            self._nudge.clear()
            # an operator released a held snapshot: apply it now, then a new call at once
            step = await self._drive(core.released()) or await self._one_call()
            if core.stopping:
                return None
            if step.action is Action.STOP:
                return step.error
            await self._wait(core.schedule(step))
        return None

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds unless stop() or release() comes first."""
        assert self._wake is not None and self._nudge is not None
        if self.core.stopping or delay <= 0 or self._nudge.is_set():
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
        request = await self._drive(self.core.open())
        if isinstance(request, Step):
            return request
        channel = self._channel_for()
        # No deserializer: the shared core decodes, so both runners treat a bad message alike.
        call: grpc.aio.UnaryStreamCall[StreamRequest, bytes] = channel.unary_stream(
            METHOD, request_serializer=StreamRequest.SerializeToString, response_deserializer=None
        )(request)
        self._call = call
        try:
            return await self._read(call)
        finally:
            self._call = None
            call.cancel()

    async def _read(self, call: grpc.aio.UnaryStreamCall[StreamRequest, bytes]) -> Step:
        core = self.core
        try:
            await call.initial_metadata()
        except asyncio.CancelledError:
            if core.stopping and call.cancelled():
                return STOP
            raise
        done = call.done()
        core.established(done, not done or await call.code() is grpc.StatusCode.OK)
        while True:
            try:
                raw = await call.read()
            except asyncio.CancelledError:
                if core.stopping and call.cancelled():
                    return STOP
                raise
            except grpc.RpcError as exc:
                step: Step = await self._drive(core.failed(exc))
                return step
            if raw is grpc.aio.EOF:  # type: ignore[attr-defined]
                return core.ended()
            step_or_none: Step | None = await self._drive(core.received(raw))
            if step_or_none is not None:
                return step_or_none
