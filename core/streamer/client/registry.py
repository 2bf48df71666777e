r"""Turn a service name ("streamer") into a channel: target, TLS, authority, keepalive.

Two kinds, built from one options list (``channel_options``): grpc.aio channels for streams on
the event loop, created lazily on the loop that asks for them (grpc.aio channels belong to one
loop), and sync ``grpc.Channel``\ s for sync listeners' streams, each read in a thread of its
own. Channels are reused by every stream: ``shard`` lets the client spread streams over several
connections when a front end limits concurrent streams per HTTP/2 connection.

TLS files are re-read whenever a stream opens a call: when their content changed (Magma's
bootstrapper rewrites the gateway certificate every few days) and the new set is usable, the
call gets a new channel with the new material; calls already open on the old channel are left
alone. A set that is not usable (half written, key not matching the certificate) is never used:
the last good one stays, with one warning, and the files are tried again at the next call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import grpc.aio

from streamer.client.connection import (
    CONTROL_PROXY_OVERRIDE,
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    RegistryError,
    ResolvedConnection,
    is_loopback,
    load_tls_files,
    magma_settings,
    read_control_proxy,
    resolve_target,
)
from streamer.client.defaults import MAX_RECEIVE_MESSAGE_MB, STREAMING_INTERVAL

__all__ = [
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH",
    "PICK_FIRST_SHUFFLED",
    "GatewayRegistry",
    "MagmaRegistry",
    "RegistryError",
    "ResolvedConnection",
    "StaticRegistry",
    "TLSConfig",
    "is_loopback",
    "read_control_proxy",
]

log = logging.getLogger("streamer.client.registry")

PICK_FIRST_SHUFFLED = json.dumps(
    {"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": True}}]}
)
"""The channels' service config (gRFC A62; honoured by grpcio 1.62 and later)."""

DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH = MAX_RECEIVE_MESSAGE_MB * 1024 * 1024


class GatewayRegistry(Protocol):
    """Where channels come from. A registry may also offer ``get_sync_channel(service,
    shard) -> grpc.Channel`` (the built-in ones do): sync listeners' streams then read their
    call in a thread of their own; without it they run on the event loop like async ones."""

    def get_channel(self, service: str, shard: int = 0) -> grpc.aio.Channel:
        """A channel to ``service``. The same (service, shard) returns the same channel."""

    async def close(self) -> None:
        """Close every channel handed out."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS settings. No ``root_ca`` means the system's trust store."""

    root_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def __post_init__(self) -> None:
        found = resolve_target(
            "tls", tls=True, client_cert=self.client_cert, client_key=self.client_key
        )
        if isinstance(found, tuple):
            raise RegistryError("TLS " + "; ".join(str(p) for p in found))

    def credentials(self) -> grpc.ChannelCredentials:
        return _credentials(load_tls_files(self.root_ca, self.client_cert, self.client_key))


Material = tuple[bytes | None, bytes | None, bytes | None]  # (root CA, key, cert chain) PEM


def _credentials(material: Material) -> grpc.ChannelCredentials:
    root, key, cert = material
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=cert
    )


class RotatingCredentials:
    """The last good content of a TLS file set, re-checked on demand.

    ``refresh()`` re-reads the files; new content that passes the checks (PEM, key matches
    certificate) becomes current and bumps ``generation``. Content that fails them is ignored
    with one warning per distinct problem; an unchanged content (a mere touch) changes nothing.
    """

    def __init__(self, tls: TLSConfig) -> None:
        self.tls = tls
        self._good: Material = self._load()  # RegistryError at start: refuse to run
        self.credentials = _credentials(self._good)
        self.generation = 0
        self._problem: str | None = None
        self._bad: Material | None = None  # content last found unusable (warned about)

    def _paths(self) -> tuple[Path | None, Path | None, Path | None]:
        return self.tls.root_ca, self.tls.client_key, self.tls.client_cert

    def _load(self) -> Material:
        return load_tls_files(self.tls.root_ca, self.tls.client_cert, self.tls.client_key)

    def refresh(self) -> bool:
        """True when new material was taken into use. Unchanged content costs three small
        reads; only new content is parsed and checked."""
        raw: Material | None
        try:
            root, key, cert = (p.read_bytes() if p is not None else None for p in self._paths())
            raw = (root, key, cert)
        except OSError:
            raw = None  # _load() says what is wrong
        if raw is not None and (raw == self._good or raw == self._bad):
            return False
        try:
            material = self._load()
        except RegistryError as exc:
            self._bad = raw
            if str(exc) != self._problem:
                self._problem = str(exc)
                log.warning(
                    "TLS files changed but are not usable: %s; new connections keep the "
                    "previous certificate and key, the files are checked again at the next one",
                    exc,
                )
            return False
        self._problem = None
        if material == self._good:
            return False
        changed = [
            str(path)
            for path, old, new in zip(
                self._paths(),
                self._good,
                material,
                strict=True,
            )
            if path is not None and old != new
        ]
        self._good = material
        self.credentials = _credentials(material)
        self.generation += 1
        log.info(
            "TLS files changed on disk (%s); new connections use them, open calls continue",
            ", ".join(changed),
        )
        return True


class StaticRegistry:
    """Every service lives at one target.

    Plaintext is allowed only to loopback unless ``insecure=True`` (then a warning is logged).
    """

    def __init__(
        self,
        target: str,
        *,
        tls: TLSConfig | None = None,
        authority: str | None = None,
        insecure: bool = False,
        keepalive_time: float = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        max_receive_message_length: int = DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH,
        max_reconnect_backoff: float = STREAMING_INTERVAL,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        resolved = resolve_target(
            target,
            tls=tls is not None,
            insecure=insecure,
            root_ca=tls.root_ca if tls else None,
            client_cert=tls.client_cert if tls else None,
            client_key=tls.client_key if tls else None,
            authority=authority,
        )
        if isinstance(resolved, tuple):
            raise RegistryError("; ".join(str(p) for p in resolved))
        if tls is None and not is_loopback(target):
            log.warning("plaintext (insecure) connection to %s", target)
        if keepalive_time <= 0 or keepalive_timeout <= 0:
            raise RegistryError("keepalive_time and keepalive_timeout must be positive")
        if max_receive_message_length <= 0:
            raise RegistryError("max_receive_message_length must be positive")
        self.target = target
        self.tls = tls
        self.authority = authority
        self.max_receive_message_length = max_receive_message_length
        self._tls = RotatingCredentials(tls) if tls is not None else None
        self.connection = resolved
        opts: dict[str, Any] = {
            "grpc.keepalive_time_ms": int(keepalive_time * 1000),
            "grpc.keepalive_timeout_ms": int(keepalive_timeout * 1000),
            # gRPC now bounds an unanswered ping by this one (default 60 s), not by
            # keepalive_timeout_ms alone (grpc/grpc#34647; seen with grpcio 1.85): set both.
            "grpc.http2.ping_timeout_ms": int(keepalive_timeout * 1000),
            # Keep pinging on a quiet stream (the default stops after 2 pings without data).
            "grpc.http2.max_pings_without_data": 0,
            "grpc.keepalive_permit_without_calls": 0,
            "grpc.max_receive_message_length": max_receive_message_length,
            # The channel's own reconnect backoff (default: 1 s, growing to 120 s) must not
            # hide a returning server: while the channel waits, every call fails at once and
            # the stream waits a whole further backoff step. The streams' own jittered backoff
            # spreads a fleet's reconnects, so the channel retries fast: 100 ms, growing to
            # at most 1 s (one connection attempt per second per connection in an outage).
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.min_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": int(min(max(max_reconnect_backoff, 0.1), 1.0) * 1000),
            # Several server addresses (an ``ipv4:A,B`` list from [cloud] targets, or a DNS
            # name with several records): one connection at a time, to the first address that
            # answers, the next when it fails; each connection shuffles the list first, so a
            # fleet spreads over the replicas instead of all landing on the first.
            "grpc.service_config": PICK_FIRST_SHUFFLED,
        }
        if authority:
            opts["grpc.default_authority"] = authority
            if tls is not None:
                opts["grpc.ssl_target_name_override"] = authority
        opts.update(dict(options))
        self.options: Mapping[str, Any] = opts
        # (service, shard, loop id) -> (loop, channel, TLS generation it was made with)
        self._channels: dict[tuple[str, int, int], tuple[asyncio.AbstractEventLoop, Any, int]] = {}
        # Channels made with older TLS material: open calls may still use them.
        self._retired: list[tuple[asyncio.AbstractEventLoop, Any]] = []
        self._closing: set[asyncio.Task[None]] = set()
        # Guards the TLS material and the sync channels (asked for from streams' threads).
        self._lock = threading.Lock()
        # Sync channels (for sync listeners' threads): (service, shard) -> (channel, generation)
        self._sync_channels: dict[tuple[str, int], tuple[grpc.Channel, int]] = {}
        self._sync_retired: list[grpc.Channel] = []

    def get_channel(self, service: str, shard: int = 0) -> grpc.aio.Channel:
        """The channel for a new call. Re-checks the TLS files first (see the module doc)."""
        loop = asyncio.get_running_loop()
        generation = 0
        if self._tls is not None:
            with self._lock:  # sync channels refresh from streams' threads
                self._tls.refresh()
                generation = self._tls.generation
        key = (service, shard, id(loop))
        found = self._channels.get(key)
        if found is not None and found[0] is loop:
            if found[2] == generation:
                channel: grpc.aio.Channel = found[1]
                return channel
            self._retired.append((loop, found[1]))
        self._close_idle_retired(loop)
        items = self.channel_options()
        if self._tls is not None:
            channel = grpc.aio.secure_channel(self.target, self._tls.credentials, options=items)
        else:
            channel = grpc.aio.insecure_channel(self.target, options=items)
        self._channels[key] = (loop, channel, generation)
        return channel

    def channel_options(self) -> list[tuple[str, Any]]:
        """The options of every channel this registry makes, grpc.aio and sync alike (one
        list, so both ways of running a stream get the same keepalive, authority, receive
        limit and reconnect backoff)."""
        opts = dict(self.options)
        # A local subchannel pool gives each shard its own TCP connection.
        opts["grpc.use_local_subchannel_pool"] = 1
        return list(opts.items())

    def get_sync_channel(self, service: str, shard: int = 0) -> grpc.Channel:
        """The sync ``grpc.Channel`` for a new call of a sync listener's stream (read in its
        own thread): same target, credentials, options and shards as ``get_channel``, and the
        same re-check of the TLS files. Safe from any thread."""
        with self._lock:
            generation = 0
            if self._tls is not None:
                self._tls.refresh()
                generation = self._tls.generation
            found = self._sync_channels.get((service, shard))
            if found is not None:
                if found[1] == generation:
                    return found[0]
                # Calls still open on it keep it; it is closed with the registry.
                self._sync_retired.append(found[0])
            items = self.channel_options()
            if self._tls is not None:
                channel = grpc.secure_channel(self.target, self._tls.credentials, options=items)
            else:
                channel = grpc.insecure_channel(self.target, options=items)
            self._sync_channels[(service, shard)] = (channel, generation)
            return channel

    def _close_idle_retired(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close old-material channels gRPC has put to sleep (no call for its idle timeout,
        30 min by default): nothing uses them any more."""
        keep: list[tuple[asyncio.AbstractEventLoop, Any]] = []
        for owner, channel in self._retired:
            idle = grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.SHUTDOWN
            if owner is loop and channel.get_state(try_to_connect=False) in idle:
                task = loop.create_task(channel.close())
                self._closing.add(task)  # the loop keeps only a weak reference
                task.add_done_callback(self._closing.discard)
            else:
                keep.append((owner, channel))
        self._retired = keep

    async def close(self) -> None:
        with self._lock:
            sync = [c for c, _ in self._sync_channels.values()] + self._sync_retired
            self._sync_channels, self._sync_retired = {}, []
        for sync_channel in sync:
            sync_channel.close()
        channels, self._channels = self._channels, {}
        retired, self._retired = self._retired, []
        loop = asyncio.get_running_loop()
        for owner, channel, _ in channels.values():
            if owner is loop:
                await channel.close()
        for owner, channel in retired:
            if owner is loop:
                await channel.close()

    def __repr__(self) -> str:
        mode = "tls" if self.tls else "plaintext"
        name = type(self).__name__
        return f"{name}({self.target!r}, {mode}, authority={self.authority!r})"


class MagmaRegistry(StaticRegistry):
    """Connect the way a Magma gateway does, from its ``control_proxy.yml`` with the
    operator's ``override`` (default ``/var/opt/magma/configs/control_proxy.yml``, absent is
    fine) laid over it key by key.

    Direct mode: TLS to ``cloud_address:cloud_port`` with ``rootca_cert``, ``gateway_cert`` and
    ``gateway_key``. Proxied mode (``proxy_cloud_connections`` true or absent, as in Magma):
    plaintext to ``127.0.0.1:local_port``, where Magma's control_proxy adds TLS. Both send the
    ``:authority`` ``streamer-<cloud_address>`` the cloud routes on.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        service: str = "streamer",
        override: str | Path | None = CONTROL_PROXY_OVERRIDE,
        **kwargs: Any,
    ) -> None:
        settings = magma_settings(
            Path(path), service, Path(override) if override is not None else None
        )
        self.control_proxy = settings.path
        self.proxied = settings.proxied
        tls = None
        if not settings.proxied:
            tls = TLSConfig(settings.root_ca, settings.client_cert, settings.client_key)
        super().__init__(settings.target, tls=tls, authority=settings.authority, **kwargs)
        self.connection = settings.connection()
