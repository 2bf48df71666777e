"""The sqlite listener: the Listener face of a :class:`SqliteMirror`."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from streamer.host.schema import config_schema
from streamer.sink.mirror import MirrorListener
from streamer_sqlite._config import SqliteConfig, table_name
from streamer_sqlite._mirror import SqliteMirror, SyncStats

if TYPE_CHECKING:
    pass

__all__ = ["LOGGER_NAME", "SqliteListener", "create_listeners"]

LOGGER_NAME = "streamer.plugin.sqlite"


class SqliteListener(MirrorListener[SqliteMirror]):
    """Mirrors one stream into the table ``stream_<name>`` (columns ``key TEXT``, ``value BLOB``).

    The database is opened on first use (in the host's worker thread), not by the factory, so
    ``streamer check`` and ``streamer list`` create nothing; an open that fails raises from that
    call and is retried by the supervisor. Each batch is one transaction.
    ``get_extra_args()`` sends the digest of the table's rows. ``update`` raises on a sink
    failure (disk full, database locked past ``busy_timeout``, the table dropped, another
    writer changed the table); the supervisor reports it and retries.

    After an ``sqlite3.Error`` from ``update`` or ``get_extra_args`` the database is closed and
    opened again on the next call (which recreates a dropped table and reloads the cache): a
    connection that failed is not trusted to be usable.
    """

    reopen_on = (sqlite3.Error,)

    def __init__(
        self,
        path: str | os.PathLike[str],
        stream: str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        file_mode: int = 0o600,
    ) -> None:
        table_name(stream)  # a name that cannot be a table fails now, not at first use
        self.path = Path(path)
        self.file_mode = file_mode

        def open_mirror() -> SqliteMirror:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return SqliteMirror(
                self.path,
                stream,
                synchronous=synchronous,
                busy_timeout=busy_timeout,
                file_mode=file_mode,
            )

        super().__init__(stream, plugin="sqlite", open_store=open_mirror)

    @property
    def mirror(self) -> SqliteMirror:
        """The open :class:`SqliteMirror` (opened now if needed)."""
        return self.store

    def applied(self, resync: bool, changes: dict[str, bytes], result: object) -> None:
        if isinstance(result, SyncStats):
            self.log.debug(
                "stream=%s resync=%s updates=%d upserted=%d deleted=%d",
                self.name,
                resync,
                len(changes),
                result.upserted,
                result.deleted,
            )


@config_schema(SqliteConfig)
def create_listeners(config: SqliteConfig) -> list[SqliteListener]:
    """Entry point ``sqlite``: one :class:`SqliteListener` (one table) per name in ``streams``.

    Touches nothing on disk beyond checking that ``path`` is not a directory.
    """
    cfg = config
    if cfg.path.is_dir():
        raise ValueError(f"path: expected a database file, got {str(cfg.path)!r}, a directory")
    return [
        SqliteListener(
            cfg.path,
            stream,
            synchronous=cfg.synchronous_pragma,
            busy_timeout=cfg.busy_timeout,
            file_mode=cfg.mode,
        )
        for stream in cfg.streams
    ]
