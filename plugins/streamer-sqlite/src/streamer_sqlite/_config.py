"""Validation of the ``[plugin.sqlite]`` table: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.sink.mirror import TableReader

__all__ = ["STREAM_NAME", "SqliteConfig", "table_name"]

_PLUGIN = "streamer-sqlite"
_KEYS = ("streams", "path", "synchronous", "busy_timeout", "file_mode")
_FILE_MODE = re.compile(r"0?[0-7]{3}")
_DEFAULT_FILE_MODE = 0o600

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
    (default) or ``full``; ``busy_timeout``: seconds to wait for another writer's lock;
    ``file_mode``: the database's (and its -wal/-shm files') permissions, ``"0600"`` by
    default; ``"0640"`` shares read access with the file's group on purpose. A mode that grants
    anything to other users, any execute bit, or less than read-write for the owner is
    refused."""

    streams: tuple[str, ...]
    path: Path
    synchronous: str = "NORMAL"
    busy_timeout: float = 30.0
    file_mode: int = _DEFAULT_FILE_MODE

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
            file_mode=_file_mode(read),
        )


def _file_mode(read: TableReader) -> int:
    text = read.string(
        "file_mode",
        "0600",
        must='an octal mode string such as "0600" or "0640"',
        check=lambda v: _FILE_MODE.fullmatch(v) is not None,
    )
    mode = int(text, 8)
    if mode & 0o007:
        raise read.error(
            f"config key 'file_mode' is {text!r}, which gives other users access to the "
            'mirrored data; use "0600", or "0640" to share with the group'
        )
    if mode & 0o111 or mode & 0o600 != 0o600:
        raise read.error(
            f"config key 'file_mode' is {text!r}; the owner needs read and write and nobody "
            'needs execute (e.g. "0600" or "0640")'
        )
    return mode
