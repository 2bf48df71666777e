"""streamer-files: mirror streams into a directory, one file per key, one atomic swap per batch.

Entry point ``files`` in the ``streamer.listeners`` group points at :func:`create_listeners`.
Readers use :func:`read_stream`, or open ``<dir>/<key_to_filename(stream)>/current/`` and map
file names back with :func:`filename_to_key`.
"""

from __future__ import annotations

from streamer_files._config import FilesConfig
from streamer_files._listener import LOGGER_NAME, FilesListener, create_listeners
from streamer_files._names import MAX_NAME, filename_to_key, key_to_filename
from streamer_files._store import FileStore, StoreLockedError, read_stream, stream_path

__all__ = [
    "LOGGER_NAME",
    "MAX_NAME",
    "FileStore",
    "FilesConfig",
    "FilesListener",
    "StoreLockedError",
    "create_listeners",
    "filename_to_key",
    "key_to_filename",
    "read_stream",
    "stream_path",
]
