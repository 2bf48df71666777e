"""A pytest plugin for listener authors: a scripted Streamer server, fixtures, ``run_listener``.

Registered as the ``streamer`` pytest11 entry point, so installing streamer makes the fixtures
available everywhere. Loading the plugin imports neither gRPC nor protobuf; they are imported when
a fixture or :class:`ScriptedServer` is first used.

Fixtures (async; they need pytest-asyncio):

- ``streamer_server``: a started :class:`ScriptedServer`, stopped at teardown.
- ``reference_server``: a factory, ``await reference_server(source, mode="push", **kwargs)``,
  returning a started :class:`streamer.server.reference.ReferenceServer`; all are stopped at
  teardown.
- ``redis_server`` (session scope): the URL of a private ``redis-server`` on an ephemeral
  loopback port, for sinks that write to Redis. Skipped when ``redis-server`` is not on PATH,
  unless ``STREAMER_REQUIRE_REDIS=1`` (CI), which makes that a failure.

Example::

    async def test_my_listener(streamer_server):
        listener = MyListener()
        task = asyncio.create_task(run_listener(listener, streamer_server.address,
                                                until=lambda: listener.seen))
        call = await streamer_server.next_call("subscribers")
        await call.push({"imsi1": b"on"}, resync=True)
        await task
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

import pytest

from streamer.base.errors import StreamerError

if TYPE_CHECKING:
    import grpc
    import grpc.aio

    from streamer.client.listener import Listener
    from streamer.client.registry import GatewayRegistry
    from streamer.server.reference import ReferenceServer, ServerTLS
    from streamer.server.sources import Source
    from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch, StreamRequest

try:
    from pytest_asyncio import fixture as _async_fixture

    _HAVE_PYTEST_ASYNCIO = True
except ImportError:  # pragma: no cover - the fixtures then need another async plugin
    _async_fixture = pytest.fixture  # type: ignore[assignment]
    _HAVE_PYTEST_ASYNCIO = False

__all__ = [
    "CallClosedError",
    "CallHandle",
    "ReferenceServerFactory",
    "ScriptedServer",
    "redis_server",
    "reference_server",
    "run_listener",
    "start_redis_server",
    "streamer_server",
]

logger = logging.getLogger("streamer.testing")
_THIS_MODULE = sys.modules[__name__]

Updates = Union[
    "DataUpdateBatch",
    Mapping[str, "bytes | str"],
    Iterable["DataUpdate | tuple[str, bytes | str]"],
]


class CallClosedError(StreamerError, RuntimeError):
    """A test tried to push on a call that already ended (or the client went away)."""


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def make_batch(updates: Updates, *, resync: bool = False) -> DataUpdateBatch:
    """A ``DataUpdateBatch`` from a batch (returned as is), a mapping or (key, value) pairs."""
    from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch

    if isinstance(updates, DataUpdateBatch):
        return updates
    pairs = updates.items() if isinstance(updates, Mapping) else updates
    out = []
    for item in pairs:
        if isinstance(item, DataUpdate):
            out.append(item)
        else:
            key, value = item
            out.append(DataUpdate(key=key, value=_as_bytes(value)))
    return DataUpdateBatch(updates=out, resync=resync)


class CallHandle:
    """One ``GetUpdates`` call on a :class:`ScriptedServer`, driven by the test.

    ``push`` returns once the batch is handed to gRPC (flow control applies), also when the
    client cancels the call while it is being sent; ``end`` and ``fail`` return once the call is
    over. On a call that is already over, ``end``/``fail`` do nothing and ``push`` raises
    :class:`CallClosedError`.
    """

    def __init__(
        self,
        request: StreamRequest,
        context: grpc.aio.ServicerContext[StreamRequest, DataUpdateBatch],
    ) -> None:
        self.request = request
        self.peer = context.peer()
        self.metadata: tuple[tuple[str, str | bytes], ...] = tuple(
            (key, value) for key, value in context.invocation_metadata() or ()
        )
        self._actions: asyncio.Queue[tuple[str, Any, asyncio.Future[None] | None]] = asyncio.Queue()
        self._closed = asyncio.Event()
        self._cancelled = False
        self._default_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "closed" if self.closed else "open"
        return f"<CallHandle stream={self.stream!r} {state}>"

    @property
    def stream(self) -> str:
        return self.request.stream_name

    @property
    def cancelled(self) -> bool:
        """True if the call ended because the client went away (or the server stopped)."""
        return self._cancelled

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def push(self, updates: Updates, resync: bool = False) -> None:
        """Send one batch: a ``DataUpdateBatch``, ``{key: value}`` or (key, value) pairs."""
        batch = make_batch(updates, resync=resync)
        if self.closed:
            raise CallClosedError(f"{self!r}: cannot push, the call is over")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._actions.put_nowait(("push", batch, done))
        await done

    async def end(self) -> None:
        """End the call with status OK (as Magma's cloud does after its one batch)."""
        if not self.closed:
            self._actions.put_nowait(("end", None, None))
        await self._closed.wait()

    async def fail(self, code: grpc.StatusCode, details: str = "") -> None:
        """End the call with an error status."""
        if not self.closed:
            self._actions.put_nowait(("fail", (code, details), None))
        await self._closed.wait()

    async def wait_closed(self, timeout: float | None = 5.0) -> None:
        """Wait until the call is over (ended, failed, or cancelled by the client)."""
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{self!r} still open after {timeout}s") from None

    async def _serve(
        self, context: grpc.aio.ServicerContext[StreamRequest, DataUpdateBatch]
    ) -> None:
        try:
            while True:
                action, arg, done = await self._actions.get()
                if action == "push":
                    assert done is not None
                    try:
                        await context.write(arg)
                    except asyncio.CancelledError:
                        # The client left while gRPC was sending the batch: it was handed
                        # over, and the client may have read it and left because of it (a
                        # listener that declines a batch ends the call at once).
                        if not done.done():
                            done.set_result(None)
                        raise
                    except BaseException as exc:
                        if not done.done():
                            done.set_exception(CallClosedError(f"{self!r}: push failed: {exc!r}"))
                        raise
                    if not done.done():
                        done.set_result(None)
                elif action == "end":
                    return
                else:
                    code, details = arg
                    await context.abort(code, details)
        except asyncio.CancelledError:
            self._cancelled = True
            raise
        finally:
            self._closed.set()
            while not self._actions.empty():
                _, _, done = self._actions.get_nowait()
                if done is not None and not done.done():
                    done.set_exception(CallClosedError(f"{self!r}: the call ended first"))


class ScriptedServer:
    """A real ``grpc.aio`` Streamer server whose calls the test drives.

    Every call is recorded (``requests``, ``calls``) and queued for :meth:`next_call`. If
    ``default`` is set, it is also called with each new :class:`CallHandle` (sync or async) and
    can drive it; otherwise a call nobody drives stays open until the client leaves or the server
    stops. ``port`` picks a fixed port on the address's host (e.g. to restart a server where a
    client is already retrying); ``options`` are gRPC server channel arguments (keepalive
    policy, ``grpc.max_concurrent_streams``, ...).
    """

    def __init__(
        self,
        address: str = "127.0.0.1:0",
        *,
        port: int | None = None,
        tls: ServerTLS | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if port is not None:
            address = f"{address.rsplit(':', 1)[0]}:{port}"
        self._bind = address
        self.tls = tls
        self.options = list(options)
        self.requests: list[StreamRequest] = []
        self.calls: list[CallHandle] = []
        self.default: Callable[[CallHandle], Awaitable[None] | None] | None = None
        self.port: int | None = None
        self._untaken: list[CallHandle] = []
        self._arrived: asyncio.Condition | None = None
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("ScriptedServer.address is known only after start()")
        return f"{self._bind.rsplit(':', 1)[0]}:{self.port}"

    async def start(self) -> int:
        import grpc.aio

        from streamer.server.reference import bind_get_updates

        self._arrived = asyncio.Condition()
        server = grpc.aio.server(options=list(self.options))
        credentials = self.tls.credentials() if self.tls is not None else None
        port = bind_get_updates(server, self._handle, self._bind, credentials, "ScriptedServer")
        await server.start()
        self._server, self.port = server, port
        return port

    async def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        for call in self.calls:
            if call._default_task is not None:
                call._default_task.cancel()
        if server is not None:
            await server.stop(grace)

    async def __aenter__(self) -> ScriptedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def next_call(self, stream: str | None = None, timeout: float = 5.0) -> CallHandle:
        """The oldest call not yet returned by ``next_call`` (for ``stream``, if given)."""
        cond = self._arrived
        if cond is None:
            raise RuntimeError("ScriptedServer.next_call() before start()")

        def take() -> CallHandle | None:
            for i, call in enumerate(self._untaken):
                if stream is None or call.stream == stream:
                    return self._untaken.pop(i)
            return None

        async def wait() -> CallHandle:
            async with cond:
                found: CallHandle | None = None

                def ready() -> bool:
                    nonlocal found
                    found = take()
                    return found is not None

                await cond.wait_for(ready)
                assert found is not None
                return found

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            which = "" if stream is None else f" for stream {stream!r}"
            seen = [r.stream_name for r in self.requests]
            raise TimeoutError(
                f"no new GetUpdates call{which} within {timeout}s (calls so far: {seen})"
            ) from None

    async def _handle(
        self,
        request: StreamRequest,
        context: grpc.aio.ServicerContext[StreamRequest, DataUpdateBatch],
    ) -> None:
        call = CallHandle(request, context)
        self.requests.append(request)
        self.calls.append(call)
        self._untaken.append(call)
        if self._arrived is not None:
            async with self._arrived:
                self._arrived.notify_all()
        if self.default is not None:
            call._default_task = asyncio.create_task(self._run_default(self.default, call))
        await call._serve(context)

    @staticmethod
    async def _run_default(
        default: Callable[[CallHandle], Awaitable[None] | None], call: CallHandle
    ) -> None:
        try:
            result = default(call)
            if inspect.isawaitable(result):
                await result
        except (CallClosedError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("ScriptedServer.default failed for %r", call)


class ReferenceServerFactory(Protocol):
    """Type of the ``reference_server`` fixture."""

    async def __call__(
        self, source: Source, mode: str = "push", **kwargs: Any
    ) -> ReferenceServer: ...


# -- collection: the kit's async tests run wherever the kit is installed -----------------------

_KIT_FIXTURES = frozenset({"streamer_server", "reference_server"})
_ASYNC_MARKS = frozenset({"asyncio", "anyio", "trio"})


def _uses_kit(collector: pytest.Collector, obj: object) -> bool:
    """Does this test request a kit fixture, or live in a module that imports the kit?"""
    try:
        params = inspect.signature(obj).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    if _KIT_FIXTURES.intersection(params):
        return True
    module = collector.getparent(pytest.Module)
    namespace = vars(module.obj) if module is not None else {}
    this = __name__
    return any(
        value is _THIS_MODULE or getattr(value, "__module__", None) == this
        for value in namespace.values()
    )


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Any:
    """Mark ``async def`` tests that use the kit with ``pytest.mark.asyncio``.

    pytest-asyncio's default (strict) mode runs only marked coroutines, so a plugin's tests
    that pass inside this repository (whose pyproject sets ``asyncio_mode = "auto"``) would fail
    in the plugin's own checkout with "async def functions are not natively supported". A test
    that already carries an asyncio, anyio or trio mark is left as it is.
    """
    if _HAVE_PYTEST_ASYNCIO and inspect.iscoroutinefunction(obj) and _uses_kit(collector, obj):
        marks = {m.name for m in getattr(obj, "pytestmark", ())}
        if not marks & _ASYNC_MARKS:
            pytest.mark.asyncio(obj)
    return (yield)


@_async_fixture
async def streamer_server() -> AsyncIterator[ScriptedServer]:
    """A started :class:`ScriptedServer` on 127.0.0.1, stopped at teardown."""
    server = ScriptedServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@_async_fixture
async def reference_server() -> AsyncIterator[ReferenceServerFactory]:
    """``await reference_server(source, mode="push", **kwargs)`` -> a started ReferenceServer."""
    from streamer.server.reference import ReferenceServer

    started: list[ReferenceServer] = []

    async def factory(source: Source, mode: str = "push", **kwargs: Any) -> ReferenceServer:
        server = ReferenceServer(source, mode, **kwargs)
        await server.start()
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in reversed(started):
            await server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(
    workdir: Path, exe: str = "redis-server"
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a throw-away ``redis-server`` (no persistence) on a free loopback port.

    Returns the process and its ``redis://`` URL; the caller terminates the process. Uses only
    the standard library, so streamer needs no Redis client.
    """
    for _ in range(5):  # another process may take the port between probe and bind
        port = _free_port()
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(workdir)]
        with open(workdir / f"redis-{port}.log", "wb") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if _redis_ping(port):
                return proc, f"redis://127.0.0.1:{port}/0"
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"redis-server did not start; see the logs in {workdir}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private redis-server for this test session."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("STREAMER_REQUIRE_REDIS") == "1":
            pytest.fail("STREAMER_REQUIRE_REDIS=1 but redis-server is not on PATH")
        pytest.skip("redis-server is not on PATH")
    proc, url = start_redis_server(tmp_path_factory.mktemp("redis"), exe)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run_listener(
    listener: Listener,
    server_address: str,
    *,
    until: Callable[[], bool | Awaitable[bool]] | None = None,
    timeout: float = 5.0,
    registry: GatewayRegistry | None = None,
    **client_kwargs: Any,
) -> BaseException | None:
    """Run one listener against a plaintext server with the project's client.

    Without ``until`` it runs until the stream stops on its own (the listener's
    ``report_error`` returned an error); with ``until`` it also stops as soon as ``until()``
    (sync or async, checked every 10 ms) is true, by removing the listener. Returns the exception
    that stopped the stream, or None when ``until`` did. Raises ``TimeoutError`` after
    ``timeout`` seconds. ``client_kwargs`` go to ``new_streamer_client``; ``streaming_interval``
    defaults to 0.1 s here so poll-mode servers are re-polled quickly. Pass ``registry`` (e.g. a
    ``StaticRegistry`` with TLS) to dial something other than plaintext ``server_address``.
    """
    from streamer.client.client import new_streamer_client
    from streamer.client.registry import StaticRegistry

    client_kwargs.setdefault("streaming_interval", 0.1)
    if registry is None:
        registry = StaticRegistry(server_address)
    client = new_streamer_client(registry, **client_kwargs)
    task = asyncio.create_task(client.stream(listener))
    name = getattr(listener, "name", listener)

    async def drive() -> BaseException | None:
        while not task.done():
            if until is not None:
                result = until()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    client.remove_listener(listener)
                    break
            await asyncio.wait({task}, timeout=0.01)
        await asyncio.wait({task})
        return None if task.cancelled() else task.exception()

    try:
        return await asyncio.wait_for(drive(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(
            f"run_listener: stream {name!r} still running after {timeout}s"
        ) from None
    finally:
        if not task.done():
            client.remove_listener(listener)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await client.close()
