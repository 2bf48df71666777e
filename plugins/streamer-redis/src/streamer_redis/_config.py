"""Validation of the ``[plugin.redis]`` table: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamer.sinks import TableReader

__all__ = ["STREAM_NAME", "RedisConfig"]

_PLUGIN = "streamer-redis"
_KEYS = ("streams", "url", "key_prefix", "timeout")
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
    ``timeout``: seconds for connecting and for each reply."""

    streams: tuple[str, ...]
    url: str = _DEFAULT_URL
    key_prefix: str = _DEFAULT_PREFIX
    timeout: float = _DEFAULT_TIMEOUT

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> RedisConfig:
        read = TableReader(_PLUGIN, table, _KEYS)
        return cls(
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
        )
