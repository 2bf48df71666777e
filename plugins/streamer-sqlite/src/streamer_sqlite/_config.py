"""Validation of the ``[plugin.sqlite]`` table: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["STREAM_NAME", "SqliteConfig", "table_name"]

_PLUGIN = "streamer-sqlite"
_KEYS = ("streams", "path", "synchronous", "busy_timeout")

STREAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}")
"""Stream names this plugin accepts: they become part of a table name."""


def table_name(stream: str) -> str:
    """``stream_<name>``; always used as a quoted identifier."""
    if not STREAM_NAME.fullmatch(stream):
        raise ValueError(f"{_PLUGIN}: stream name {stream!r} must match {STREAM_NAME.pattern}")
    return f"stream_{stream}"


@dataclass(frozen=True, slots=True)
class SqliteConfig:
    """``streams``: one table each; ``path``: the database file; ``synchronous``: ``normal``
    (default) or ``full``; ``busy_timeout``: seconds to wait for another writer's lock."""

    streams: tuple[str, ...]
    path: Path
    synchronous: str = "NORMAL"
    busy_timeout: float = 30.0

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> SqliteConfig:
        if not isinstance(table, Mapping):
            raise ValueError(f"{_PLUGIN}: the config must be a table, got {table!r}")
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise ValueError(
                f"{_PLUGIN}: unknown config key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(_KEYS)}"
            )
        streams = _streams(table)
        if "path" not in table:
            raise ValueError(f"{_PLUGIN}: config key 'path' is required (the database file)")
        path = table["path"]
        if not isinstance(path, str) or not path or "\0" in path or path.startswith(":"):
            raise ValueError(
                f"{_PLUGIN}: config key 'path' must be a database file path, got {path!r}"
            )
        sync = table.get("synchronous", "normal")
        if not isinstance(sync, str) or sync.upper() not in ("NORMAL", "FULL"):
            raise ValueError(
                f'{_PLUGIN}: config key \'synchronous\' must be "normal" or "full", got {sync!r}'
            )
        timeout = table.get("busy_timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(
                f"{_PLUGIN}: config key 'busy_timeout' must be a number of seconds >= 0, "
                f"got {timeout!r}"
            )
        return cls(
            streams=streams,
            path=Path(path).expanduser(),
            synchronous=sync.upper(),
            busy_timeout=float(timeout),
        )


def _streams(table: Mapping[str, Any]) -> tuple[str, ...]:
    if "streams" not in table:
        raise ValueError(f"{_PLUGIN}: config key 'streams' is required (a list of stream names)")
    value = table["streams"]
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"{_PLUGIN}: config key 'streams' must be a non-empty list of stream names, "
            f"got {value!r}"
        )
    seen: dict[str, str] = {}
    for name in value:
        if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
            raise ValueError(
                f"{_PLUGIN}: config key 'streams' holds {name!r}; each stream name becomes a "
                f"table name and must match {STREAM_NAME.pattern}"
            )
        folded = name.casefold()  # SQLite table names ignore ASCII case
        if folded in seen:
            raise ValueError(
                f"{_PLUGIN}: config key 'streams' names {seen[folded]!r} and {name!r}, which "
                "map to the same table (SQLite table names ignore case)"
            )
        seen[folded] = name
    return tuple(value)
