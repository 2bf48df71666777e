"""The files listener: the Listener face of a :class:`FileStore`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf.wrappers_pb2 import StringValue

from streamer_files._config import FilesConfig
from streamer_files._store import FileStore

if TYPE_CHECKING:
    from streamer.proto.streamer_pb2 import DataUpdateBatch

__all__ = ["LOGGER_NAME", "FilesListener", "create_listeners"]

LOGGER_NAME = "streamer.plugin.files"
_log = logging.getLogger(LOGGER_NAME)


class FilesListener:
    """Mirrors one stream into ``<dir>/<stream>/current/``, one file per key.

    ``get_extra_args()`` sends the digest of what the directory holds, so a server that
    understands digests skips a snapshot the sink already has. ``update`` raises on a sink
    failure (disk full, permissions): the supervisor reports it and retries, and the batch is
    either fully applied or not at all.
    """

    def __init__(self, store: FileStore) -> None:
        self.name = store.stream
        self.store = store
        self._lock = threading.Lock()

    def get_extra_args(self) -> StringValue:
        with self._lock:
            return StringValue(value=self.store.digest())

    def update(self, batch: DataUpdateBatch) -> bool:
        changes = {u.key: u.value for u in batch.updates}
        with self._lock:
            self.store.apply(batch.resync, changes)
        return True

    def report_error(self, error: BaseException) -> None:
        _log.warning("stream=%s error reported by the streamer: %r", self.name, error)
        return None

    def close(self) -> None:
        with self._lock:
            self.store.close()


def create_listeners(config: Mapping[str, Any]) -> list[FilesListener]:
    """Entry point ``files``: one :class:`FilesListener` per name in ``streams``.

    Opens (and if needed creates) each stream's directory now, so a bad ``dir`` fails at load.
    """
    cfg = FilesConfig.from_table(config)
    listeners: list[FilesListener] = []
    try:
        for stream in cfg.streams:
            listeners.append(FilesListener(FileStore(cfg.dir, stream, fsync=cfg.fsync)))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners
