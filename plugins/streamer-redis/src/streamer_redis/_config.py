"""Validation of the ``[plugin.redis]`` table: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
        if not isinstance(table, Mapping):
            raise ValueError(f"{_PLUGIN}: the config must be a table, got {table!r}")
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise ValueError(
                f"{_PLUGIN}: unknown config key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(_KEYS)}"
            )
        streams = _streams(table)
        url = table.get("url", _DEFAULT_URL)
        if not isinstance(url, str) or not url.startswith(_SCHEMES):
            raise ValueError(
                f"{_PLUGIN}: config key 'url' must be a redis://, rediss:// or unix:// URL, "
                f"got {url!r}"
            )
        prefix = table.get("key_prefix", _DEFAULT_PREFIX)
        if not isinstance(prefix, str):
            raise ValueError(f"{_PLUGIN}: config key 'key_prefix' must be a string, got {prefix!r}")
        timeout = table.get("timeout", _DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(
                f"{_PLUGIN}: config key 'timeout' must be a number of seconds > 0, got {timeout!r}"
            )
        return cls(streams=streams, url=url, key_prefix=prefix, timeout=float(timeout))


def _streams(table: Mapping[str, Any]) -> tuple[str, ...]:
    if "streams" not in table:
        raise ValueError(f"{_PLUGIN}: config key 'streams' is required (a list of stream names)")
    value = table["streams"]
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"{_PLUGIN}: config key 'streams' must be a non-empty list of stream names, "
            f"got {value!r}"
        )
    seen: set[str] = set()
    for name in value:
        if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
            raise ValueError(
                f"{_PLUGIN}: config key 'streams' holds {name!r}; each stream name becomes part "
                f"of a Redis key and must match {STREAM_NAME.pattern}"
            )
        if name in seen:
            raise ValueError(f"{_PLUGIN}: config key 'streams' names {name!r} twice")
        seen.add(name)
    return tuple(value)
