"""Validation of the ``[plugin.log]`` table: pure, no I/O."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamer.sinks import TableReader

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
        read = TableReader(_PLUGIN, table, _KEYS)
        streams = read.streams()
        max_keys = read.integer("max_keys", 10, minimum=0)
        name = read.string(
            "level",
            "INFO",
            must="a logging level name (DEBUG, INFO, WARNING, ERROR)",
            check=lambda name: isinstance(logging.getLevelName(name.upper()), int),
        )
        level: int = logging.getLevelName(name.upper())  # a number: checked above
        return cls(streams=streams, max_keys=max_keys, level=level)
