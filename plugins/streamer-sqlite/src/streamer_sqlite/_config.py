"""The ``[plugin.sqlite]`` table, declared as a schema: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from streamer.host.schema import UNIQUE, Before, Doc, PluginConfig, Rule

__all__ = ["STREAM_NAME", "SqliteConfig", "table_name"]

_PLUGIN = "streamer-sqlite"
_FILE_MODE = re.compile(r"0?[0-7]{3}")

STREAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}")
"""Stream names this plugin accepts: they become part of a table name."""


def table_name(stream: str) -> str:
    """``stream_<name>``; always used as a quoted identifier."""
    if not STREAM_NAME.fullmatch(stream):
        raise ValueError(f"{_PLUGIN}: stream name {stream!r} must match {STREAM_NAME.pattern}")
    return f"stream_{stream}"


_PATH_RULE = Rule("a database file path", lambda path: not str(path).startswith(":"))
_MODE_RULE = Rule(
    'an octal mode string such as "0600" or "0640"',
    lambda text: _FILE_MODE.fullmatch(text) is not None,
)

_TableStreams = Annotated[
    tuple[Annotated[str, Meta(pattern=f"^{STREAM_NAME.pattern}$")], ...],
    Doc(
        "stream names to receive, one table each (stream_<name>)",
        min_length=1,
        examples=[["example"]],
    ),
    UNIQUE,
]


class SqliteConfig(PluginConfig):
    """One table per stream in one SQLite database, each batch one transaction."""

    streams: _TableStreams
    path: Annotated[
        Path,
        Doc("the database file", examples=["/var/lib/streamer/mirror.db"]),
        _PATH_RULE,
    ]
    synchronous: Annotated[
        Literal["normal", "full"], Doc("SQLite's synchronous setting, any case"), Before(str.lower)
    ] = "normal"
    busy_timeout: Annotated[
        float, Doc("seconds to wait for another writer's lock", ge=0, le=2**31 // 1000)
    ] = 30.0
    file_mode: Annotated[
        str,
        Doc(
            'permissions of the database and its -wal/-shm files: "0600", or "0640" to share '
            "read access with the file's group; access for other users, execute bits or less "
            "than read-write for the owner are refused"
        ),
        _MODE_RULE,
    ] = "0600"

    def check(self) -> Iterator[tuple[str, str]]:
        seen: dict[str, str] = {}
        for name in self.streams:
            first = seen.setdefault(name.casefold(), name)
            if first != name:
                yield (
                    "streams",
                    f"names {first!r} and {name!r}, which map to the same table "
                    "(SQLite table names ignore case)",
                )
        if self.mode & 0o007:
            yield (
                "file_mode",
                f"{self.file_mode!r} gives other users access to the mirrored data; "
                'use "0600", or "0640" to share with the group',
            )
        elif self.mode & 0o111 or self.mode & 0o600 != 0o600:
            yield (
                "file_mode",
                f"{self.file_mode!r}: the owner needs read and write and nobody needs execute "
                '(e.g. "0600" or "0640")',
            )

    @property
    def mode(self) -> int:
        """``file_mode`` as permission bits."""
        return int(self.file_mode, 8)

    @property
    def synchronous_pragma(self) -> str:
        """``NORMAL`` or ``FULL``."""
        return self.synchronous.upper()
