"""The streamer client: a set of listeners, one supervised GetUpdates stream each.

API shaped after Magma's Go ``streamer.Client`` (AddListener / Stream / RemoveListener), with
Python's asyncio in place of goroutines.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import grpc.aio

from streamer.base.errors import StreamerError
from streamer.client._core import StreamCore, is_async
from streamer.client._workers import WorkerPool
from streamer.client.backoff import Backoff, BackoffState
from streamer.client.defaults import MAX_STREAMS_PER_CHANNEL, STREAMING_INTERVAL
from streamer.client.events import NullObserver, StreamObserver
from streamer.client.gate import ReleaseResult
from streamer.client.guard import GuardPolicy
from streamer.client.listener import Listener, listener_problems
from streamer.client.registry import GatewayRegistry
from streamer.client.stream import Sleep, StreamRunner, on_loop
from streamer.client.threaded import ThreadedRunner

__all__ = ["STREAMING_INTERVAL", "Client", "DuplicateStreamError", "new_streamer_client"]

Runner = StreamRunner | ThreadedRunner

DEFAULT_MAX_STREAMS_PER_CHANNEL = MAX_STREAMS_PER_CHANNEL


class DuplicateStreamError(StreamerError):
    """A stream name is already held by another listener, or is already streaming."""

    def __init__(self, stream: str, message: str | None = None) -> None:
        super().__init__(message or f"stream {stream!r} already has a registered listener")
        self.stream = stream


class Client:
    """Holds listeners and runs their streams. Create with ``new_streamer_client``."""

    def __init__(
        self,
        registry: GatewayRegistry,
        *,
        streaming_interval: float = STREAMING_INTERVAL,
        backoff: Backoff | None = None,
        observer: StreamObserver | None = None,
        gateway_id: str = "",
        service: str = "streamer",
        max_streams_per_channel: int = DEFAULT_MAX_STREAMS_PER_CHANNEL,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        guard: GuardPolicy | None = None,
    ) -> None:
        """``sleep`` and ``rng`` are injectable so tests can drive waits and jitter
        deterministically. ``guard`` is the mass-change guard's policy for every stream
        (default: hold a batch deleting more than half the keys; ``GuardPolicy(0)`` is off);
        ``stream(listener, guard=...)`` overrides it for one stream."""
        if not streaming_interval > 0:
            raise ValueError(f"streaming_interval must be positive, got {streaming_interval!r}")
        if max_streams_per_channel < 1:
            raise ValueError("max_streams_per_channel must be >= 1")
        self.registry = registry
        self.streaming_interval = float(streaming_interval)
        self.backoff = backoff or Backoff()
        self.observer: StreamObserver = observer or NullObserver()
        self.gateway_id = gateway_id
        self.service = service
        self.max_streams_per_channel = max_streams_per_channel
        # Sync methods of listeners whose stream runs on the event loop (an async update with
        # a sync get_extra_args, or a registry without sync channels): daemon threads.
        self._executor = WorkerPool()
        self._sleep = sleep
        self._rng = rng
        self.guard = guard or GuardPolicy()
        self._listeners: dict[str, Listener] = {}
        self._runners: dict[str, Runner] = {}
        self._shard_load: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._none_running = asyncio.Event()
        self._none_running.set()

    # -- registration ----------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Register ``listener`` for its stream. DuplicateStreamError if the name is taken."""
        problems = listener_problems(listener)
        if problems:
            raise TypeError(f"not a valid Listener ({listener!r}): " + "; ".join(problems))
        name = listener.name
        held = self._listeners.get(name)
        if held is not None:
            raise DuplicateStreamError(
                name,
                f"stream {name!r} already has a registered listener {held!r}"
                if held is not listener
                else f"listener {listener!r} is already registered for stream {name!r}",
            )
        self._listeners[name] = listener

    def remove_listener(self, listener: Listener) -> bool:
        """Unregister ``listener`` and end its stream. The open call and any wait are cancelled
        at once; an ``update`` already running finishes first. False if it was not registered.
        The name is free again once ``stream()`` has returned."""
        name = listener.name
        if self._listeners.get(name) is not listener:
            return False
        loop = self._loop
        if loop is not None and not loop.is_closed() and not on_loop(loop):
            loop.call_soon_threadsafe(self._remove, listener)  # safe from any thread
        else:
            self._remove(listener)
        return True

    def _remove(self, listener: Listener) -> None:
        name = listener.name
        if self._listeners.get(name) is not listener:
            return
        runner = self._runners.get(name)
        if runner is None:
            del self._listeners[name]
        else:
            runner.stop()

    def listeners(self) -> list[Listener]:
        return list(self._listeners.values())

    def is_streaming(self, name: str) -> bool:
        return name in self._runners

    def runner(self, name: str) -> Runner | None:
        return self._runners.get(name)

    def release(self, name: str) -> ReleaseResult | None:
        """``streamer release``: apply stream ``name``'s held snapshot now. None when no such
        stream is running. Call on the client's event loop."""
        runner = self._runners.get(name)
        return None if runner is None else runner.release()

    # -- streaming -------------------------------------------------------------------------

    async def stream(self, listener: Listener, *, guard: GuardPolicy | None = None) -> None:
        """Run ``listener``'s stream until it ends (registering it first if needed); ``guard``
        overrides the client's mass-change guard policy for this stream.

        Returns None when ended by ``remove_listener``; raises the listener's chosen error when
        it stops itself (``report_error`` returned or raised an error). Either way the stream
        name is free again afterwards.
        """
        self._loop = asyncio.get_running_loop()
        name = listener.name
        held = self._listeners.get(name)
        if held is None:
            self.add_listener(listener)
        elif held is not listener:
            raise DuplicateStreamError(
                name, f"stream {name!r} is held by another listener {held!r}"
            )
        if name in self._runners:
            raise DuplicateStreamError(name, f"stream {name!r} is already streaming")
        shard = self._pick_shard()
        runner = self._runner_for(listener, shard, guard or self.guard)
        self._runners[name] = runner
        self._none_running.clear()
        self._shard_load[shard] = self._shard_load.get(shard, 0) + 1
        try:
            await runner.run()
        finally:
            self._shard_load[shard] -= 1
            del self._runners[name]
            if not self._runners:
                self._none_running.set()
            if self._listeners.get(name) is listener:
                del self._listeners[name]

    def _runner_for(self, listener: Listener, shard: int, guard: GuardPolicy) -> Runner:
        """A sync listener's stream reads its call in a thread of its own through gRPC's sync
        API (no per-batch hop between threads); an async listener's stays on the event loop.
        Both share one supervisor (``streamer.client._core``)."""
        registry, service = self.registry, self.service
        core = StreamCore(
            listener,
            observer=self.observer,
            backoff=BackoffState(self.backoff, self.streaming_interval, self._rng),
            interval=self.streaming_interval,
            clock=time.perf_counter,
            gateway_id=self.gateway_id,
            connection=getattr(registry, "connection", None),
            guard=guard,
        )
        sync_channel = getattr(registry, "get_sync_channel", None)
        if not is_async(listener.update) and sync_channel is not None:
            return ThreadedRunner(
                core, channel_for=lambda: sync_channel(service, shard), sleep=self._sleep
            )
        return StreamRunner(
            core,
            channel_for=self._channel_getter(shard),
            executor=self._executor,
            sleep=self._sleep,
        )

    def _pick_shard(self) -> int:
        """The first connection with room for one more stream."""
        shard = 0
        while self._shard_load.get(shard, 0) >= self.max_streams_per_channel:
            shard += 1
        return shard

    def _channel_getter(self, shard: int) -> Callable[[], grpc.aio.Channel]:
        registry, service = self.registry, self.service
        return lambda: registry.get_channel(service, shard)

    async def close(self, timeout: float | None = None) -> None:
        """Stop every stream, wait for them, close channels and worker threads.

        With ``timeout``, streams still running after that many seconds (an ``update`` that
        never returns) are cancelled: their ``stream()`` raises CancelledError and their thread
        is abandoned (it is a daemon thread), so shutdown stays bounded.
        """
        for runner in list(self._runners.values()):
            runner.stop()
        try:
            await asyncio.wait_for(self._none_running.wait(), timeout)
        except asyncio.TimeoutError:
            for runner in list(self._runners.values()):
                runner.cancel()
            await self._none_running.wait()
        await self.registry.close()
        self._executor.shutdown(wait=False)


new_streamer_client = Client
"""Magma's ``NewStreamerClient``: a client with no listeners, ready for ``add_listener`` /
``stream``. The same callable as :class:`Client`, so there is one signature to keep."""
