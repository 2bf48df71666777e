"""The sqlite listener: the Listener face of a :class:`SqliteMirror`."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.wrappers_pb2 import StringValue

from streamer_sqlite._config import SqliteConfig, table_name
from streamer_sqlite._mirror import SqliteMirror

if TYPE_CHECKING:
    from streamer.proto.streamer_pb2 import DataUpdateBatch

__all__ = ["LOGGER_NAME", "SqliteListener", "create_listeners"]

LOGGER_NAME = "streamer.plugin.sqlite"
_log = logging.getLogger(LOGGER_NAME)


class SqliteListener:
    """Mirrors one stream into the table ``stream_<name>`` (columns ``key TEXT``, ``value BLOB``).

    The database is opened on first use (in the host's worker thread), not by the factory, so
    ``streamer check`` and ``streamer list`` create nothing; an open that fails raises from that
    call and is retried by the supervisor. Each batch is one transaction.
    ``get_extra_args()`` sends the digest of the table's rows. ``update`` raises on a sink
    failure (disk full, database locked past ``busy_timeout``); the supervisor reports it and
    retries.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        stream: str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
    ) -> None:
        table_name(stream)  # a name that cannot be a table fails now, not at first use
        self.name = stream
        self.path = Path(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._mirror: SqliteMirror | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def mirror(self) -> SqliteMirror:
        """The open :class:`SqliteMirror` (opened now if needed)."""
        if self._mirror is None:
            if self._closed:
                raise RuntimeError(f"the sqlite listener of stream {self.name!r} is closed")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._mirror = SqliteMirror(
                self.path,
                self.name,
                synchronous=self._synchronous,
                busy_timeout=self._busy_timeout,
            )
        return self._mirror

    def get_extra_args(self) -> StringValue:
        with self._lock:
            return StringValue(value=self.mirror.digest())

    def update(self, batch: DataUpdateBatch) -> bool:
        items = {u.key: u.value for u in batch.updates}
        with self._lock:
            mirror = self.mirror
            apply = mirror.sync_snapshot if batch.resync else mirror.apply_changes
            stats = apply(items)
        _log.debug(
            "stream=%s resync=%s updates=%d upserted=%d deleted=%d",
            self.name,
            batch.resync,
            len(items),
            stats.upserted,
            stats.deleted,
        )
        return True

    def report_error(self, error: BaseException) -> BaseException | None:
        _log.warning("stream=%s error reported by the streamer: %r", self.name, error)
        return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._mirror is not None:
                self._mirror.close()
                self._mirror = None


def create_listeners(config: Mapping[str, Any]) -> list[SqliteListener]:
    """Entry point ``sqlite``: one :class:`SqliteListener` (one table) per name in ``streams``.

    Validates only; touches nothing on disk beyond checking that ``path`` is not a directory.
    """
    cfg = SqliteConfig.from_table(config)
    if cfg.path.is_dir():
        raise ValueError(
            f"streamer-sqlite: config key 'path' is {str(cfg.path)!r}, a directory, "
            "not a database file"
        )
    return [
        SqliteListener(cfg.path, stream, synchronous=cfg.synchronous, busy_timeout=cfg.busy_timeout)
        for stream in cfg.streams
    ]
