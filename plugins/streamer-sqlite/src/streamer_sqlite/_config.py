"""Validation of the ``[plugin.sqlite]`` table: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.sinks import TableReader

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
        read = TableReader(_PLUGIN, table, _KEYS)
        return cls(
            streams=read.streams(
                pattern=STREAM_NAME,
                why="becomes a table name",
                fold=str.casefold,  # SQLite table names ignore ASCII case
                clash="map to the same table (SQLite table names ignore case)",
            ),
            path=read.path(
                "path",
                what="the database file",
                must="a database file path",
                check=lambda path: not path.startswith(":"),
            ),
            synchronous=read.choice("synchronous", ("normal", "full"), "normal").upper(),
            busy_timeout=read.number("busy_timeout", 30.0, minimum=0, unit="seconds"),
        )
