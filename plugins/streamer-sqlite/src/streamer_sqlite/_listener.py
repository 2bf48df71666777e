"""The sqlite listener: the Listener face of a :class:`SqliteMirror`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf.wrappers_pb2 import StringValue

from streamer_sqlite._config import SqliteConfig
from streamer_sqlite._mirror import SqliteMirror

if TYPE_CHECKING:
    from streamer.proto.streamer_pb2 import DataUpdateBatch

__all__ = ["LOGGER_NAME", "SqliteListener", "create_listeners"]

LOGGER_NAME = "streamer.plugin.sqlite"
_log = logging.getLogger(LOGGER_NAME)


class SqliteListener:
    """Mirrors one stream into the table ``stream_<name>`` (columns ``key TEXT``, ``value BLOB``).

    Each batch is one transaction. ``get_extra_args()`` sends the digest of the table's rows.
    ``update`` raises on a sink failure (disk full, database locked past ``busy_timeout``); the
    supervisor reports it and retries.
    """

    def __init__(self, mirror: SqliteMirror) -> None:
        self.name = mirror.stream
        self.mirror = mirror
        self._lock = threading.Lock()

    def get_extra_args(self) -> StringValue:
        with self._lock:
            return StringValue(value=self.mirror.digest())

    def update(self, batch: DataUpdateBatch) -> bool:
        items = {u.key: u.value for u in batch.updates}
        with self._lock:
            if batch.resync:
                stats = self.mirror.sync_snapshot(items)
            else:
                stats = self.mirror.apply_changes(items)
        _log.debug(
            "stream=%s resync=%s updates=%d upserted=%d deleted=%d",
            self.name,
            batch.resync,
            len(items),
            stats.upserted,
            stats.deleted,
        )
        return True

    def report_error(self, error: BaseException) -> None:
        _log.warning("stream=%s error reported by the streamer: %r", self.name, error)
        return None

    def close(self) -> None:
        with self._lock:
            self.mirror.close()


def create_listeners(config: Mapping[str, Any]) -> list[SqliteListener]:
    """Entry point ``sqlite``: one :class:`SqliteListener` (one table) per name in ``streams``.

    Opens the database now, so a bad ``path`` fails at load.
    """
    cfg = SqliteConfig.from_table(config)
    cfg.path.parent.mkdir(parents=True, exist_ok=True)
    listeners: list[SqliteListener] = []
    try:
        for stream in cfg.streams:
            mirror = SqliteMirror(
                cfg.path, stream, synchronous=cfg.synchronous, busy_timeout=cfg.busy_timeout
            )
            listeners.append(SqliteListener(mirror))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners
