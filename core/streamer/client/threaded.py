"""One sync listener's stream, in a thread of its own, through gRPC's sync API.

The thread opens the call on a sync ``grpc.Channel``, reads it with the call's iterator and
calls ``update()`` itself: no hop between threads per batch (a per-batch hand-off to a worker
costs more than reading the batch; see docs/architecture.md, "Two ways to run a stream").
Decisions, events, error wrapping and backoff come from the same
:class:`streamer.client._core.StreamCore` the event-loop runner uses.

``stop()`` (remove_listener) works from any thread and is as prompt as on the loop: it cancels
the open call (``call.cancel()`` wakes a read blocked in the call's iterator) and sets the event
a wait blocks on. An ``update`` already running finishes first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

import grpc

from streamer.client._core import STOP, Steps, StreamCore
from streamer.client.events import StreamState
from streamer.client.gate import ReleaseResult
from streamer.client.stream import Sleep
from streamer.client.supervisor import Action, Step
from streamer.wire import METHOD
from streamer.wire.streamer_pb2 import StreamRequest

__all__ = ["ThreadedRunner"]

JOIN_TIMEOUT = 1.0
"""How long ``run()`` waits for its thread to exit after the stream ended (it has nothing left
to do by then; the bound keeps a wedged thread from holding up shutdown)."""

# Stream threads keep the platform's default stack size on purpose. A smaller one (256 KiB was
# tried) saves no resident memory (only touched pages count: B3 measured 68 KiB per stream
# either way) but turns deep recursion in plugin code into a segfault of the whole host where
# the interpreter would raise RecursionError: json.dumps/json.loads of a list nested ~1,000
# deep (Python 3.10) or ~2,000 deep (3.13, even with 1 MiB) crashed in a 256 KiB thread, and a
# batch value from the cloud is exactly what a plugin parses.


class ThreadedRunner:
    """Supervises one sync listener's stream in its own thread. Same interface as
    :class:`streamer.client.stream.StreamRunner`: ``run()`` (awaited on the event loop, it
    returns when the thread has ended) returns None when stopped from outside and raises the
    listener's chosen error when it stops itself; ``stop()`` and ``cancel()``; ``state``.

    ``sleep``: the client's injectable sleep (async, run on the loop while this thread waits
    for it or for ``stop()``); None waits on a ``threading.Event`` in this thread."""

    def __init__(
        self,
        core: StreamCore,
        *,
        channel_for: Callable[[], grpc.Channel],
        sleep: Sleep | None = None,
    ) -> None:
        """``core``: the stream's shared supervision (``Client`` builds it)."""
        self.core = core
        self.listener = core.listener
        self.name: str = core.name
        self.gate = core.gate
        self._channel_for = channel_for
        self._sleep = sleep
        self._methods = core.listener_methods()
        # guards _call, _wake and _nudged against stop() and release() from elsewhere
        self._lock = threading.Lock()
        self._call: Any = None  # the open call (gRPC's sync rendezvous), or None
        self._wake = threading.Event()
        self._nudged = False  # release() came: do not wait before the next call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self.thread: threading.Thread | None = None

    @property
    def state(self) -> StreamState:
        return self.core.state

    # -- control (any thread) --------------------------------------------------------------

    def stop(self) -> None:
        """Ask the stream to end: cancels the open call and any wait. Thread-safe."""
        with self._lock:
            self.core.stopping = True
            call, wake = self._call, self._wake
        if call is not None:
            call.cancel()
        wake.set()

    def release(self) -> ReleaseResult:
        """``streamer release``: apply the held snapshot now (from the stream's thread, before
        its next call; a wait in progress ends). Thread-safe."""
        result = self.core.release()
        if result.released:
            with self._lock:
                self._nudged = True
                wake = self._wake
            wake.set()
        return result

    def cancel(self) -> None:
        """Stop, and end ``run()`` at once even if ``update`` never returns (last resort: the
        thread is abandoned; it is a daemon thread, so it cannot keep the process alive)."""
        self.stop()
        if self._task is not None:
            self._task.cancel()

    # -- on the event loop -----------------------------------------------------------------

    async def run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self.core.relay_to(loop)  # observers are called on the loop, as for async listeners
        ended: asyncio.Future[BaseException | None] = loop.create_future()
        # A daemon thread: an update() that never returns must not keep the host from exiting
        # after its bounded shutdown wait (the thread is joined whenever it does end).
        thread = threading.Thread(
            target=self._main, args=(loop, ended), name=f"stream:{self.name}", daemon=True
        )
        self.thread = thread
        thread.start()
        try:
            error = await ended
        except asyncio.CancelledError:
            self.stop()
            if ended.cancelled():  # the thread is still in a listener call: abandon it
                self.core.abandon()
            raise
        thread.join(JOIN_TIMEOUT)  # it has posted its result: only its return is left
        if error is not None:
            raise error

    # -- in the stream's thread ------------------------------------------------------------

    def _main(
        self, loop: asyncio.AbstractEventLoop, ended: asyncio.Future[BaseException | None]
    ) -> None:
        core = self.core
        error: BaseException | None = None
        try:
            core.notify("stream_started")
            error = self._loop_until_stop()
        except BaseException as exc:  # a bug here must still end the stream's task
            error = exc
        finally:
            with self._lock:
                self._call = None
            core.set_state(StreamState.STOPPED)
            core.notify("stream_stopped", error)
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, ended, error)

    def _call_listener(self, name: str, args: tuple[Any, ...]) -> Any:
        result = self._methods[name](*args)
        if inspect.isawaitable(result):  # an async method (or a sync one returning a coroutine)
            return self._on_loop(result)
        return result

    def _on_loop(self, awaitable: Any) -> Any:
        """Run an awaitable the listener returned on the event loop and wait for it here."""
        assert self._loop is not None

        async def wrapper() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result()

    def _drive(self, steps: Steps) -> Any:
        """Run a shared step, calling the listener methods it asks for in this thread."""
        try:
            op = next(steps)
            while True:
                try:
                    result = self._call_listener(*op)
                except BaseException as exc:
                    op = steps.throw(exc)
                else:
                    op = steps.send(result)
        except StopIteration as done:
            return done.value

    def _loop_until_stop(self) -> BaseException | None:
        core = self.core
        while not core.stopping:
            with self._lock:
                self._nudged = False
            # an operator released a held snapshot: apply it now, then a new call at once
            step = self._drive(core.released()) or self._one_call()
            if core.stopping:
                return None
            if step.action is Action.STOP:
                return step.error
            self._wait(core.schedule(step))
        return None

    def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds unless stop() or release() comes first."""
        wake = threading.Event()
        with self._lock:
            if self.core.stopping or self._nudged:
                return
            self._wake = wake
        if delay <= 0:
            return
        if self._sleep is None:
            wake.wait(delay)
            return
        assert self._loop is not None
        slept: concurrent.futures.Future[None] = asyncio.run_coroutine_threadsafe(
            _awaited(self._sleep, delay), self._loop
        )
        slept.add_done_callback(lambda _: wake.set())
        wake.wait()
        slept.cancel()

    def _one_call(self) -> Step:
        """Open one GetUpdates call and read it until something needs a decision."""
        request = self._drive(self.core.open())
        if isinstance(request, Step):
            return request
        channel = self._channel_for()
        # No deserializer: the shared core decodes, so both runners treat a bad message alike.
        call: Any = channel.unary_stream(
            METHOD, request_serializer=StreamRequest.SerializeToString, response_deserializer=None
        )(request)
        with self._lock:
            self._call = call
            stopping = self.core.stopping
        if stopping:
            call.cancel()
        try:
            return self._read(call)
        finally:
            with self._lock:
                self._call = None
            call.cancel()

    def _read(self, call: Any) -> Step:
        core = self.core
        call.initial_metadata()  # returns early when the call fails or is cancelled
        if core.stopping:
            return STOP
        done = call.done()
        core.established(done, not done or call.code() is grpc.StatusCode.OK)
        while True:
            try:
                raw = next(call)
            except StopIteration:
                return core.ended()
            except grpc.RpcError as exc:
                step: Step = self._drive(core.failed(exc))
                return step
            step_or_none: Step | None = self._drive(core.received(raw))
            if step_or_none is not None:
                return step_or_none


async def _awaited(sleep: Sleep, delay: float) -> None:
    await sleep(delay)


def _settle(fut: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not fut.done():
        fut.set_result(error)
