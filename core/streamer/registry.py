"""Turn a service name ("streamer") into a grpc.aio channel: target, TLS, authority, keepalive.

Channels are created lazily on the event loop that asks for them (grpc.aio channels belong to
one loop) and reused by every stream: ``shard`` lets the client spread streams over several
connections when a front end limits concurrent streams per HTTP/2 connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import grpc.aio

from streamer.connection import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    RegistryError,
    is_loopback,
    load_tls_files,
    magma_settings,
    read_control_proxy,
)

__all__ = [
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH",
    "GatewayRegistry",
    "MagmaRegistry",
    "RegistryError",
    "StaticRegistry",
    "TLSConfig",
    "is_loopback",
    "read_control_proxy",
]

log = logging.getLogger("streamer.registry")

# gRPC's default receive limit is 4 MiB; Magma users hit it with ~18k subscribers.
DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH = 64 * 1024 * 1024


class GatewayRegistry(Protocol):
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
        if (self.client_cert is None) != (self.client_key is None):
            raise RegistryError("TLS client_cert and client_key must be given together")

    def credentials(self) -> grpc.ChannelCredentials:
        root, key, cert = load_tls_files(self.root_ca, self.client_cert, self.client_key)
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=cert
        )


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
        max_reconnect_backoff: float = 20.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not target or not isinstance(target, str):
            raise RegistryError(f"target must be a non-empty 'host:port' string, got {target!r}")
        if tls is None and not is_loopback(target):
            if not insecure:
                raise RegistryError(
                    f"refusing plaintext connection to non-loopback target {target!r}: "
                    "configure TLS, or set insecure = true to allow it explicitly"
                )
            log.warning("plaintext (insecure) connection to %s", target)
        if keepalive_time <= 0 or keepalive_timeout <= 0:
            raise RegistryError("keepalive_time and keepalive_timeout must be positive")
        if max_receive_message_length <= 0:
            raise RegistryError("max_receive_message_length must be positive")
        self.target = target
        self.tls = tls
        self.authority = authority
        self.max_receive_message_length = max_receive_message_length
        self._credentials = tls.credentials() if tls is not None else None
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
        }
        if authority:
            opts["grpc.default_authority"] = authority
            if tls is not None:
                opts["grpc.ssl_target_name_override"] = authority
        opts.update(dict(options))
        self.options: Mapping[str, Any] = opts
        self._channels: dict[tuple[str, int, int], tuple[asyncio.AbstractEventLoop, Any]] = {}

    def get_channel(self, service: str, shard: int = 0) -> grpc.aio.Channel:
        loop = asyncio.get_running_loop()
        key = (service, shard, id(loop))
        found = self._channels.get(key)
        if found is not None and found[0] is loop:
            channel: grpc.aio.Channel = found[1]
            return channel
        opts = dict(self.options)
        # A local subchannel pool gives each shard its own TCP connection.
        opts["grpc.use_local_subchannel_pool"] = 1
        items = list(opts.items())
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(self.target, self._credentials, options=items)
        else:
            channel = grpc.aio.insecure_channel(self.target, options=items)
        self._channels[key] = (loop, channel)
        return channel

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        loop = asyncio.get_running_loop()
        for owner, channel in channels.values():
            if owner is loop:
                await channel.close()

    def __repr__(self) -> str:
        mode = "tls" if self.tls else "plaintext"
        name = type(self).__name__
        return f"{name}({self.target!r}, {mode}, authority={self.authority!r})"


class MagmaRegistry(StaticRegistry):
    """Connect the way a Magma gateway does, from its ``control_proxy.yml``.

    Direct mode: TLS to ``cloud_address:cloud_port`` with ``rootca_cert``, ``gateway_cert`` and
    ``gateway_key``. Proxied mode (``proxy_cloud_connections: true``): plaintext to
    ``localhost:local_port``, where Magma's control_proxy adds TLS. Both send the
    ``:authority`` ``streamer-<cloud_address>`` the cloud routes on.
    """

    def __init__(self, path: str | Path, *, service: str = "streamer", **kwargs: Any) -> None:
        settings = magma_settings(Path(path), service)
        self.control_proxy = settings.path
        self.proxied = settings.proxied
        tls = None
        if not settings.proxied:
            tls = TLSConfig(settings.root_ca, settings.client_cert, settings.client_key)
        super().__init__(settings.target, tls=tls, authority=settings.authority, **kwargs)
