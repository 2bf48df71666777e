"""The files listener: the Listener face of a :class:`FileStore`."""

from __future__ import annotations

import os
from pathlib import Path

from streamer.host.schema import config_schema
from streamer.sink.mirror import MirrorListener
from streamer_files._config import FilesConfig
from streamer_files._store import FileStore

__all__ = ["LOGGER_NAME", "FilesListener", "create_listeners"]

LOGGER_NAME = "streamer.plugin.files"


class FilesListener(MirrorListener[FileStore]):
    """Mirrors one stream into ``<dir>/<stream>/current/``, one file per key (see FileStore).

    The directory is opened on first use (in the host's worker thread), not by the factory, so
    ``streamer check`` and ``streamer list`` neither create directories nor collide with the
    lock of a running host; an open that fails (disk not mounted yet, another writer, an
    unsafe stream directory) raises from that call and is retried by the supervisor, while the
    other streams carry on.

    ``get_extra_args()`` sends the digest of what the directory holds, so a server that
    understands digests skips a snapshot the sink already has. ``update`` raises on a sink
    failure (disk full, permissions): the supervisor reports it and retries, and the batch is
    either fully applied or not at all.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        stream: str,
        *,
        fsync: bool = True,
        file_mode: int = 0o600,
    ) -> None:
        self.root = Path(root)
        super().__init__(
            stream,
            plugin="files",
            open_store=lambda: FileStore(self.root, stream, fsync=fsync, file_mode=file_mode),
        )


@config_schema(FilesConfig)
def create_listeners(config: FilesConfig) -> list[FilesListener]:
    """Entry point ``files``: one :class:`FilesListener` per name in ``streams``.

    Touches nothing on disk beyond checking that ``dir`` is not a file.
    """
    if config.dir.exists() and not config.dir.is_dir():
        raise ValueError(f"dir: expected a directory, got {str(config.dir)!r}, a file")
    return [
        FilesListener(config.dir, stream, fsync=config.fsync, file_mode=config.mode)
        for stream in config.streams
    ]
