"""streamer-files: mirror streams into a directory, one file per key, one journal record per batch.

Entry point ``files`` in the ``streamer.listeners`` group points at :func:`create_listeners`.
Readers use :func:`read_snapshot` / :func:`read_stream` for a consistent snapshot, or open one
key's file ``<dir>/<key_to_filename(stream)>/current/<key_to_filename(key)>`` (each file is
replaced atomically); see the README's "Reading" section.
"""

from __future__ import annotations

from streamer_files._config import FilesConfig
from streamer_files._listener import LOGGER_NAME, FilesListener, create_listeners
from streamer_files._names import MAX_NAME, filename_to_key, key_to_filename
from streamer_files._reader import Snapshot, read_snapshot, read_stream, stream_path
from streamer_files._store import (
    CHECKPOINT_BYTES,
    FileStore,
    StoreLockedError,
    UnsafeDirectoryError,
)

__all__ = [
    "CHECKPOINT_BYTES",
    "LOGGER_NAME",
    "MAX_NAME",
    "FileStore",
    "FilesConfig",
    "FilesListener",
    "Snapshot",
    "StoreLockedError",
    "UnsafeDirectoryError",
    "create_listeners",
    "filename_to_key",
    "key_to_filename",
    "read_snapshot",
    "read_stream",
    "stream_path",
]
