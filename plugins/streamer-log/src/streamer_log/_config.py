"""Validation of the ``[plugin.log]`` table: pure, no I/O."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LogConfig"]

_PLUGIN = "streamer-log"
_KEYS = ("streams", "max_keys", "level")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``streams``: stream names (one listener each); ``max_keys``: how many keys a line shows;
    ``level``: the logging level of the per-batch lines."""

    streams: tuple[str, ...]
    max_keys: int = 10
    level: int = logging.INFO

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> LogConfig:
        if not isinstance(table, Mapping):
            raise ValueError(f"{_PLUGIN}: the config must be a table, got {table!r}")
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise ValueError(
                f"{_PLUGIN}: unknown config key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(_KEYS)}"
            )
        streams = _streams(table)
        max_keys = table.get("max_keys", 10)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 0:
            raise ValueError(
                f"{_PLUGIN}: config key 'max_keys' must be an integer >= 0, got {max_keys!r}"
            )
        level_name = table.get("level", "INFO")
        level = logging.getLevelName(level_name.upper()) if isinstance(level_name, str) else None
        if not isinstance(level, int):
            raise ValueError(
                f"{_PLUGIN}: config key 'level' must be a logging level name "
                f"(DEBUG, INFO, WARNING, ERROR), got {level_name!r}"
            )
        return cls(streams=streams, max_keys=max_keys, level=level)


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
        if not isinstance(name, str) or not name or not name.isprintable():
            raise ValueError(
                f"{_PLUGIN}: config key 'streams' holds {name!r}; "
                "each stream name must be a non-empty printable string"
            )
        if name in seen:
            raise ValueError(f"{_PLUGIN}: config key 'streams' names {name!r} twice")
        seen.add(name)
    return tuple(value)
