"""Validation of the ``[plugin.redis]`` table: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from streamer.client.connection import is_loopback
from streamer.sink.mirror import TableReader

__all__ = ["STREAM_NAME", "RedisConfig", "plaintext_remote_host"]

_PLUGIN = "streamer-redis"
_KEYS = ("streams", "url", "key_prefix", "timeout", "insecure")
_SCHEMES = ("redis://", "rediss://", "unix://")
_DEFAULT_URL = "redis://127.0.0.1:6379/0"
_DEFAULT_PREFIX = "streamer:"
_DEFAULT_TIMEOUT = 30.0

STREAM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
"""Stream names this plugin accepts. No ``:``, so ``<prefix><stream>:digest`` and
``<prefix><stream>:resync`` can never be another stream's hash."""


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """``streams``: one hash each, named ``<key_prefix><stream>``; ``url``: the server;
    ``timeout``: seconds for connecting and for each reply; ``insecure``: allow a plaintext
    ``redis://`` URL to a host that is not loopback (anyone on the path reads the mirrored
    data and the password; prefer ``rediss://``)."""

    streams: tuple[str, ...]
    url: str = _DEFAULT_URL
    key_prefix: str = _DEFAULT_PREFIX
    timeout: float = _DEFAULT_TIMEOUT
    insecure: bool = False

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> RedisConfig:
        read = TableReader(_PLUGIN, table, _KEYS)
        config = cls(
            streams=read.streams(pattern=STREAM_NAME, why="becomes part of a Redis key"),
            url=read.string(
                "url",
                _DEFAULT_URL,
                must="a redis://, rediss:// or unix:// URL",
                check=lambda url: url.startswith(_SCHEMES),
            ),
            key_prefix=read.string("key_prefix", _DEFAULT_PREFIX),
            timeout=read.number(
                "timeout", _DEFAULT_TIMEOUT, minimum=0, strict=True, unit="seconds"
            ),
            insecure=read.boolean("insecure", False),
        )
        host = plaintext_remote_host(config.url)
        if host is not None and not config.insecure:
            raise read.error(
                f"config key 'url' is plaintext redis:// to {host!r}, which is not loopback; "
                "use rediss:// (TLS), or set insecure = true to send the data unencrypted"
            )
        return config


def plaintext_remote_host(url: str) -> str | None:
    """The host of a ``redis://`` URL that leaves this machine (None for loopback, TLS or
    a unix socket)."""
    if not url.startswith("redis://"):
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host or is_loopback(f"[{host}]:0" if ":" in host else host):
        return None
    return host
