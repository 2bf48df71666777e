"""The files listener: the Listener face of a :class:`FileStore`."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
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

    The directory is opened on first use (in the host's worker thread), not by the factory, so
    ``streamer check`` and ``streamer list`` neither create directories nor collide with the
    lock of a running host; an open that fails (disk not mounted yet, another writer) raises
    from that call and is retried by the supervisor.

    ``get_extra_args()`` sends the digest of what the directory holds, so a server that
    understands digests skips a snapshot the sink already has. ``update`` raises on a sink
    failure (disk full, permissions): the supervisor reports it and retries, and the batch is
    either fully applied or not at all.
    """

    def __init__(self, root: str | os.PathLike[str], stream: str, *, fsync: bool = True) -> None:
        self.name = stream
        self.root = Path(root)
        self._fsync = fsync
        self._store: FileStore | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def store(self) -> FileStore:
        """The open :class:`FileStore` (opened now if needed)."""
        if self._store is None:
            if self._closed:
                raise RuntimeError(f"the files listener of stream {self.name!r} is closed")
            self._store = FileStore(self.root, self.name, fsync=self._fsync)
        return self._store

    def get_extra_args(self) -> StringValue:
        with self._lock:
            return StringValue(value=self.store.digest())

    def update(self, batch: DataUpdateBatch) -> bool:
        changes = {u.key: u.value for u in batch.updates}
        with self._lock:
            self.store.apply(batch.resync, changes)
        return True

    def report_error(self, error: BaseException) -> BaseException | None:
        _log.warning("stream=%s error reported by the streamer: %r", self.name, error)
        return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._store is not None:
                self._store.close()
                self._store = None


def create_listeners(config: Mapping[str, Any]) -> list[FilesListener]:
    """Entry point ``files``: one :class:`FilesListener` per name in ``streams``.

    Validates only; touches nothing on disk beyond checking that ``dir`` is not a file.
    """
    cfg = FilesConfig.from_table(config)
    if cfg.dir.exists() and not cfg.dir.is_dir():
        raise ValueError(f"streamer-files: config key 'dir' is {str(cfg.dir)!r}, not a directory")
    return [FilesListener(cfg.dir, stream, fsync=cfg.fsync) for stream in cfg.streams]
