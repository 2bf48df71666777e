"""Fault injection on loopback: a TCP proxy that can forward, blackhole and reset connections,
and servers the scripted test server cannot be (custom channel options, raw response bytes).

``FaultProxy`` sits between a client and a real server::

    proxy = FaultProxy(server.port); await proxy.start()   # dial proxy.address instead
    proxy.blackhole()   # open connections go silent: nothing forwarded, nothing closed (no RST,
                        # no FIN), like a NAT box that forgot the flow or a cable pulled
    proxy.reset()       # open connections are aborted with RST (SO_LINGER 0)
    proxy.reset_after(n_bytes)  # RST once n more bytes went server -> client (mid-message)

New connections are always forwarded, so a client that notices the fault and reconnects gets
through. ``proxy.accepted`` counts connections.

``make_sink_site`` writes real plugin distributions for host-level fault tests. ``eventually``
and ``write_config`` (from tests.helpers) are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from streamer.server.reference import SERVICE
from streamer.testing import ScriptedServer
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest
from tests.helpers import eventually, write_config
from tests.plugin_fixtures import make_dist

__all__ = [
    "PERMIT_FAST_PINGS",
    "FaultProxy",
    "OptionsScriptedServer",
    "RawServer",
    "abort_with_rst",
    "eventually",
    "make_sink_site",
    "write_config",
]

# Server options that accept a client pinging every second on a quiet stream (the default policy
# answers that with GOAWAY too_many_pings).
PERMIT_FAST_PINGS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 100),
    ("grpc.http2.min_ping_interval_without_data_ms", 100),
    ("grpc.http2.max_ping_strikes", 0),
)


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close a connection with RST instead of FIN (SO_LINGER on, timeout 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied connection: two pumps, client -> server and server -> client."""

    def __init__(
        self,
        proxy: FaultProxy,
        down_r: asyncio.StreamReader,
        down_w: asyncio.StreamWriter,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.down_w, self.up_w = down_w, up_w
        self.reset_budget: int | None = None  # bytes still allowed server -> client
        self.tasks = [
            asyncio.create_task(self._pump(down_r, up_w, to_client=False)),
            asyncio.create_task(self._pump(up_r, down_w, to_client=True)),
        ]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, to_client: bool
    ) -> None:
        try:
            while True:
                data = await reader.read(16384)
                if not data:
                    writer.close()
                    return
                if to_client and self.reset_budget is not None:
                    if len(data) >= self.reset_budget:
                        writer.write(data[: self.reset_budget])
                        with contextlib.suppress(ConnectionError):
                            await writer.drain()
                        self.proxy.resets += 1
                        self.abort()
                        return
                    self.reset_budget -= len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            self.abort()

    def silence(self) -> None:
        """Stop forwarding in both directions; the sockets stay open."""
        for task in self.tasks:
            task.cancel()

    def abort(self) -> None:
        self.silence()
        abort_with_rst(self.down_w)
        abort_with_rst(self.up_w)


class FaultProxy:
    """A loopback TCP proxy to ``127.0.0.1:upstream_port`` that injects faults on demand."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.host = host
        self.port: int | None = None
        self.accepted = 0
        self.resets = 0
        self.links: list[_Link] = []
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("FaultProxy.address is known only after start()")
        return f"{self.host}:{self.port}"

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _accept(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            abort_with_rst(down_w)
            return
        self.links.append(_Link(self, down_r, down_w, up_r, up_w))

    def open_links(self) -> list[_Link]:
        return [link for link in self.links if not link.down_w.is_closing()]

    def blackhole(self) -> int:
        """Silence every open connection (no RST, no FIN). Returns how many."""
        links = self.open_links()
        for link in links:
            link.silence()
        return len(links)

    def reset(self) -> int:
        """Abort every open connection with RST. Returns how many."""
        links = self.open_links()
        for link in links:
            link.abort()
        return len(links)

    def reset_after(self, n_bytes: int) -> None:
        """Abort each open connection with RST after ``n_bytes`` more bytes reach the client."""
        for link in self.open_links():
            link.reset_budget = n_bytes

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in self.links:
            link.abort()
        await asyncio.sleep(0)
        self.links.clear()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class OptionsScriptedServer(ScriptedServer):
    """``ScriptedServer`` that also records each call's TLS auth context (``auth_contexts``,
    in call order)."""

    def __init__(self, address: str = "127.0.0.1:0", **kw: Any) -> None:
        super().__init__(address, **kw)
        self.auth_contexts: list[dict[str, list[bytes]]] = []

    async def __aenter__(self) -> OptionsScriptedServer:
        await self.start()
        return self

    async def _handle(
        self,
        request: StreamRequest,
        context: grpc.aio.ServicerContext[StreamRequest, DataUpdateBatch],
    ) -> None:
        self.auth_contexts.append({k: list(v) for k, v in context.auth_context().items()})
        await super()._handle(request, context)


class RawServer:
    """A GetUpdates server whose responses are raw bytes, sent as they are (the response
    serializer is the identity): for feeding the client bytes that are not a DataUpdateBatch."""

    def __init__(self, script: Callable[[StreamRequest], AsyncIterator[bytes]]) -> None:
        self.script = script
        self.requests: list[StreamRequest] = []
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, request: StreamRequest, context: object) -> AsyncIterator[bytes]:
        self.requests.append(request)
        async for chunk in self.script(request):
            yield chunk

    async def start(self) -> int:
        server = grpc.aio.server()
        handler = grpc.unary_stream_rpc_method_handler(
            self._handle,
            request_deserializer=StreamRequest.FromString,
            response_serializer=lambda b: b,
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, {"GetUpdates": handler})]
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    async def __aenter__(self) -> RawServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# A listener plugin for host-level tests: appends {"stream", "keys"} (never values) to ``out`` per
# batch; ``raises = true`` makes update() raise on every batch.
SINK_MODULE = """
import json, pathlib


class Sink:
    def __init__(self, name, out, raises):
        self.name, self.out, self.raises = name, pathlib.Path(out), raises

    def get_extra_args(self):
        return None

    def update(self, batch):
        if self.raises:
            raise ValueError(f"{self.name}: this listener fails on every batch")
        with self.out.open("a") as f:
            f.write(json.dumps({"stream": self.name, "keys": [u.key for u in batch.updates]}))
            f.write("\\n")
        return True

    def report_error(self, error):
        return None


def factory(config):
    return [Sink(s, config["out"], config.get("raises", False)) for s in config["streams"]]
"""


def make_sink_site(site: Path, names: Sequence[str], broken: Sequence[str] = ()) -> Path:
    """Distributions ``plug-<name>`` (entry point ``<name>``) running SINK_MODULE, and for each
    of ``broken`` one whose module cannot be imported."""
    broken_module = "import reliability_no_such_module_anywhere\n"
    sources = {name: SINK_MODULE for name in names} | {name: broken_module for name in broken}
    for name, source in sources.items():
        module = f"reliability_{name}"
        make_dist(
            site,
            f"plug-{name}",
            entry_points={name: f"{module}:factory"},
            modules={module: source},
        )
    return site
