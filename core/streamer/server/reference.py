"""The reference Streamer server: serves ``/magma.orc8r.Streamer/GetUpdates`` from a data source.

Each stream is served in one of two modes:

- ``poll`` (Magma's cloud): one full snapshot (``resync=True``), then the call ends OK.
- ``push``: the snapshot, then the call stays open and every change is pushed as a
  ``resync=False`` batch of the changed keys (a deleted key is an update with an empty value).

A request whose ``extra_args`` is a ``google.protobuf.StringValue`` equal to the digest of the
current snapshot (:func:`streamer.wire.digest.snapshot_digest`) gets no snapshot: in poll
mode the call ends with no data, in push mode only later changes are sent.

Calls are plain coroutines on one event loop (no thread per call); a push call waiting for
changes costs one future. Data sources live in :mod:`streamer.server.sources`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import grpc
import grpc.aio
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.wrappers_pb2 import StringValue

from streamer.server.fleet import CurrentData, FleetView, identify
from streamer.server.sources import (
    SQLITE_SUFFIXES,
    Changes,
    DirectorySource,
    MemorySource,
    Snapshot,
    Source,
    SourceError,
    SourceUnavailable,
    SQLiteSource,
    UnknownStreamError,
)
from streamer.wire import METHOD, SERVICE
from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch, StreamRequest

__all__ = [
    "DEFAULT_MAX_CALLS",
    "MAX_RECEIVE_MESSAGE",
    "MAX_STREAM_NAME",
    "METHOD",
    "MODES",
    "SERVICE",
    "DirectorySource",
    "MemorySource",
    "Mode",
    "ReferenceServer",
    "SQLiteSource",
    "ServerTLS",
    "Source",
    "SourceError",
    "StreamSpec",
    "open_source",
    "requested_digest",
    "run_server",
    "shown",
]

logger = logging.getLogger("streamer.server.reference")


Mode = Literal["poll", "push"]
MODES: tuple[Mode, ...] = ("poll", "push")

# Push calls are quiet for long stretches; let clients keep them alive with pings every 10 s+
# instead of answering their keepalive with GOAWAY too_many_pings (gRPC's default is 5 min).
_DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
)

#: Longest stream name accepted (bytes of UTF-8); longer names get ``INVALID_ARGUMENT``.
MAX_STREAM_NAME = 255
#: Largest request accepted. A ``StreamRequest`` is a gateway id, a stream name and a digest;
#: 64 KiB leaves room for a plugin's ``extra_args`` and refuses megabyte-sized junk early.
MAX_RECEIVE_MESSAGE = 64 * 1024
#: Default cap on concurrent calls (``--max-calls``); calls beyond it get ``RESOURCE_EXHAUSTED``.
DEFAULT_MAX_CALLS = 1024
_SHOWN = 40  # characters of client-sent text echoed in status details and logs


def shown(text: str, limit: int = _SHOWN) -> str:
    """Client-sent ``text`` as it may appear in status details and logs: a short prefix, quoted
    and with control characters escaped (``repr``), so a client cannot forge log lines or make
    the server echo megabytes back."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text.encode('utf-8', 'replace'))} bytes)"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A per-stream mode override: ``ReferenceServer(source, modes=[StreamSpec("x", "poll")])``."""

    name: str
    mode: Mode


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """Server certificate (PEM files) and, optionally, the CA that signs client certificates.

    Giving ``client_ca_path`` means client certificates are *required*: a client that presents
    none, or one that CA did not sign, fails the handshake (as etcd and Consul do). There is no
    "ask but accept anyone" mode. ``require_client_cert`` is kept for compatibility; it adds
    nothing beyond ``client_ca_path`` and is an error without it.
    """

    cert_chain_path: str | Path
    key_path: str | Path
    client_ca_path: str | Path | None = None
    require_client_cert: bool = False

    def credentials(self) -> grpc.ServerCredentials:
        if self.require_client_cert and self.client_ca_path is None:
            raise ValueError("ServerTLS: require_client_cert=True needs client_ca_path")
        chain = _read_pem(self.cert_chain_path, "certificate chain")
        key = _read_pem(self.key_path, "private key")
        ca = None if self.client_ca_path is None else _read_pem(self.client_ca_path, "client CA")
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
        )


def _read_pem(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"ServerTLS: cannot read {what} {str(path)!r}: {exc}") from exc


def _check_mode(mode: str, where: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be 'poll' or 'push', got {mode!r}")
    return mode


def requested_digest(request: StreamRequest) -> str | None:
    """The snapshot digest a request carries in ``extra_args``, if any."""
    extra: AnyProto = request.extra_args
    if not request.HasField("extra_args") or not extra.Is(StringValue.DESCRIPTOR):
        return None
    value = StringValue()
    if not extra.Unpack(value):
        return None
    return value.value


GetUpdatesHandler = Callable[
    [StreamRequest, "grpc.aio.ServicerContext[StreamRequest, DataUpdateBatch]"], Awaitable[None]
]


def _serialize(message: DataUpdateBatch | bytes) -> bytes:
    """Messages are serialized here; bytes were serialized once for many calls already."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def bind_get_updates(
    server: grpc.aio.Server,
    handler: GetUpdatesHandler,
    bind: str,
    credentials: grpc.ServerCredentials | None = None,
    who: str = "server",
) -> int:
    """Serve ``/magma.orc8r.Streamer/GetUpdates`` with ``handler`` on ``server`` and bind
    ``bind`` (TLS when ``credentials`` is given). Returns the bound port; ``OSError`` naming
    ``who`` and the address when it cannot be bound. The server is not started."""
    method = grpc.unary_stream_rpc_method_handler(
        handler,
        request_deserializer=StreamRequest.FromString,
        response_serializer=_serialize,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"GetUpdates": method})]
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(bind)
        else:
            port = server.add_secure_port(bind, credentials)
    except RuntimeError as exc:
        raise OSError(f"{who} cannot listen on {bind!r}: {exc}") from exc
    if port == 0:
        raise OSError(f"{who} cannot listen on {bind!r}")
    return port


class ReferenceServer:
    """A real ``grpc.aio`` Streamer server over a :class:`streamer.server.sources.Source`.

    ``mode`` is the default for every stream; ``modes`` overrides it per stream (a mapping of
    stream name to mode, or :class:`StreamSpec` records). ``requests`` records every received
    ``StreamRequest`` unless ``record_requests=False`` (long-running servers).
    """

    def __init__(
        self,
        source: Source,
        mode: Mode | str = "push",
        *,
        modes: Mapping[str, Mode | str] | Sequence[StreamSpec] | None = None,
        address: str = "127.0.0.1:0",
        tls: ServerTLS | None = None,
        max_send_message_length: int | None = None,
        options: Sequence[tuple[str, Any]] = (),
        record_requests: bool = True,
        max_calls: int | None = DEFAULT_MAX_CALLS,
    ) -> None:
        self.source = source
        # Which gateway has applied what (streamer.server.fleet), when the source can say what its
        # data is now (every StreamStore can).
        self.fleet: FleetView | None = (
            FleetView(source) if isinstance(source, CurrentData) else None
        )
        self.mode: Mode = _check_mode(mode, "ReferenceServer")
        pairs = (
            modes.items() if isinstance(modes, Mapping) else ((s.name, s.mode) for s in modes or ())
        )
        self.modes: dict[str, Mode] = {
            name: _check_mode(m, f"ReferenceServer stream {name!r}") for name, m in pairs
        }
        self._bind = address
        self.tls = tls
        if max_calls is not None and max_calls < 1:
            raise ValueError(f"ReferenceServer: max_calls must be >= 1, got {max_calls}")
        self.max_calls = max_calls
        self._options = list(_DEFAULT_OPTIONS)
        self._options.append(("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE))
        if max_send_message_length is not None:
            self._options.append(("grpc.max_send_message_length", max_send_message_length))
        self._options.extend(options)
        self._record = record_requests
        self.requests: list[StreamRequest] = []
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._source_started = False
        self._batches: dict[str, tuple[int, DataUpdateBatch]] = {}
        self._change_batches: dict[int, tuple[Changes, bytes]] = {}

    @property
    def address(self) -> str:
        """``host:port`` to dial, with the bound port (valid after :meth:`start`)."""
        if self.port is None:
            raise RuntimeError("ReferenceServer.address is known only after start()")
        host = self._bind.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def mode_for(self, stream: str) -> Mode:
        return self.modes.get(stream, self.mode)

    async def start(self) -> int:
        """Start the source and the server; returns the bound port.

        If the server cannot start (say the port is taken), the source is stopped again and the
        error is raised (``OSError`` for an address that cannot be bound).
        """
        if self._server is not None:
            raise RuntimeError("ReferenceServer already started")
        credentials = self.tls.credentials() if self.tls is not None else None
        await self.source.start()
        self._source_started = True
        server: grpc.aio.Server | None = None
        try:
            server = grpc.aio.server(options=self._options, maximum_concurrent_rpcs=self.max_calls)
            port = bind_get_updates(
                server, self._observed_get_updates, self._bind, credentials, "ReferenceServer"
            )
            await server.start()
        except BaseException:
            try:
                if server is not None:
                    await asyncio.shield(server.stop(None))
            finally:
                await asyncio.shield(self._stop_source())
            raise
        self._server, self.port = server, port
        logger.info("reference Streamer server listening on %s (%s)", self.address, self.mode)
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving; with ``grace=None`` open calls are cancelled at once."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        await self._stop_source()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> ReferenceServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _stop_source(self) -> None:
        if self._source_started:
            self._source_started = False
            await self.source.stop()

    def _snapshot_batch(self, stream: str, snap: Snapshot) -> DataUpdateBatch:
        cached = self._batches.get(stream)
        if cached is not None and cached[0] == snap.version:
            return cached[1]
        if self._batches:  # a miss: drop the batches of streams that are gone
            known = set(self.source.streams())
            for name in [name for name in self._batches if name not in known]:
                del self._batches[name]
        batch = DataUpdateBatch(
            updates=[DataUpdate(key=k, value=v) for k, v in snap.items], resync=True
        )
        self._batches[stream] = (snap.version, batch)
        return batch

    def _changes_bytes(self, changes: Changes) -> bytes:
        """One serialized batch per :class:`Changes` object: the calls waiting on a stream at
        the same version share it (the source hands them the same object), so a commit fanned
        out to 1,000 calls builds and serializes one message, not 1,000."""
        key = id(changes)
        cached = self._change_batches.get(key)
        if cached is not None and cached[0] is changes:
            return cached[1]
        raw = DataUpdateBatch(
            updates=[DataUpdate(key=k, value=v) for k, v in changes.items],
            resync=changes.resync,
        ).SerializeToString()
        if len(self._change_batches) >= 256:
            self._change_batches.clear()
        self._change_batches[key] = (changes, raw)
        return raw

    async def _observed_get_updates(
        self,
        request: StreamRequest,
        context: grpc.aio.ServicerContext[StreamRequest, DataUpdateBatch],
    ) -> None:
        if self.fleet is None:
            await self._get_updates(request, context, None)
            return
        who = identify(context.auth_context(), request.gatewayId, context.peer())
        try:
            await self._get_updates(request, context, who)
        finally:
            self.fleet.call_ended(who[0], request.stream_name)

    async def _get_updates(
        self,
        request: StreamRequest,
        context: grpc.aio.ServicerContext[StreamRequest, DataUpdateBatch],
        who: tuple[str, str] | None,
    ) -> None:
        """``who``: the gateway's identity and how it was established, for the fleet view."""
        if self._record:
            self.requests.append(request)
        stream = request.stream_name
        if len(stream) > MAX_STREAM_NAME or len(stream.encode()) > MAX_STREAM_NAME:
            logger.info(
                "GetUpdates stream=%s peer=%s: stream name too long",
                _Shown(stream),
                context.peer(),
            )
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"stream name {shown(stream)} is longer than {MAX_STREAM_NAME} bytes",
            )
        mode = self.mode_for(stream)
        digest = requested_digest(request)
        try:
            snap = await self.source.snapshot(stream)
        except SourceUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except UnknownStreamError:
            self._batches.pop(stream, None)
            logger.info(
                "GetUpdates stream=%s gatewayId=%s peer=%s: unknown stream",
                _Shown(stream),
                _Shown(request.gatewayId),
                context.peer(),
            )
            await context.abort(grpc.StatusCode.UNAVAILABLE, _no_such_stream(stream))
        matched = digest is not None and digest == snap.digest
        fleet = self.fleet if who is not None else None
        gateway = who[0] if who is not None else ""
        if fleet is not None and who is not None:
            fleet.call_started(gateway, who[1], stream, digest)
        logger.info(
            "GetUpdates stream=%s gatewayId=%s peer=%s mode=%s digest_matched=%s keys=%d",
            _Shown(stream),
            _Shown(request.gatewayId),
            context.peer(),
            mode,
            matched,
            len(snap.items),
        )
        if not matched:
            await context.write(self._snapshot_batch(stream, snap))
        if fleet is not None:
            fleet.delivered(gateway, stream, snap.version)
        if mode == "poll":
            return
        if matched:  # headers now, so the client knows the call is live before any change
            await context.send_initial_metadata(())
        version = snap.version
        while True:
            try:
                changes = await self.source.changes_since(stream, version)
            except SourceUnavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            except UnknownStreamError:
                self._batches.pop(stream, None)
                await context.abort(grpc.StatusCode.UNAVAILABLE, _no_such_stream(stream))
            # The same bytes for every call waiting at this version (cast: gRPC takes bytes
            # through _serialize unchanged).
            await context.write(cast(DataUpdateBatch, self._changes_bytes(changes)))
            version = changes.version
            if fleet is not None:
                fleet.delivered(gateway, stream, version)


class _Shown:
    """:func:`shown`, formatted only if the log record is emitted."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return shown(self.text)


def _no_such_stream(stream: str) -> str:
    """orc8r's answer to an unknown stream. It never lists the server's other streams: which
    streams exist is for the server's operator, not for whoever can open a connection."""
    return f"stream {shown(stream)} does not exist"


def open_source(spec: str | os.PathLike[str], *, poll_interval: float = 0.5) -> Source:
    """A source from a command-line spec: a directory, a ``.sqlite``/``.db`` file, or a
    ``postgresql://`` DSN (see :mod:`streamer.server.pgsource`)."""
    if isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://")):
        from streamer.server.pgsource import PostgresSource

        return PostgresSource(spec)
    path = Path(spec)
    if path.suffix.lower() in SQLITE_SUFFIXES:
        if not path.is_file():
            raise SourceError(f"SQLite database {str(path)!r} does not exist")
        return SQLiteSource(path, poll_interval=poll_interval)
    if path.is_dir():
        return DirectorySource(path, poll_interval=poll_interval)
    raise SourceError(
        f"data source {str(path)!r} is neither a directory nor a SQLite file "
        f"({', '.join(SQLITE_SUFFIXES)})"
    )


async def run_server(
    source_spec: str,
    address: str = "127.0.0.1:50051",
    mode: str = "poll",
    tls: ServerTLS | None = None,
    *,
    modes: Mapping[str, str] | None = None,
    poll_interval: float = 0.5,
    max_send_message_length: int | None = None,
    max_calls: int | None = DEFAULT_MAX_CALLS,
    on_started: Callable[[ReferenceServer], None] | None = None,
    status_address: str | None = None,
) -> None:
    """Serve ``source_spec`` (a directory or a ``.sqlite``/``.db`` file) until cancelled.

    For ``streamer serve``. Raises :class:`streamer.server.sources.SourceError` for a bad source and
    ``ValueError`` for a bad mode or TLS file; ``on_started`` sees the started server (its
    ``address`` has the bound port). Cancelling the task stops the server with a 1 s grace.
    """
    source = open_source(source_spec, poll_interval=poll_interval)
    server = ReferenceServer(
        source,
        mode,
        modes=modes,
        address=address,
        tls=tls,
        max_send_message_length=max_send_message_length,
        options=[("grpc.so_reuseport", 0)],
        record_requests=False,
        max_calls=max_calls,
    )
    await server.start()
    endpoint = None
    try:
        if status_address is not None and server.fleet is not None:
            from streamer.observability.http import ObservabilityServer

            host, _, port = status_address.rpartition(":")
            endpoint = ObservabilityServer(server.fleet, host.strip("[]"), int(port))
            endpoint.start()
            logger.info("fleet status on http://%s/status", endpoint.address)
        if on_started is not None:
            on_started(server)
        await server.wait_for_termination()
    finally:
        if endpoint is not None:
            endpoint.stop()
        await asyncio.shield(server.stop(grace=1.0))
