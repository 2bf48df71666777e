"""The ``[plugin.files]`` table, declared as a schema: pure, no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from streamer.host.schema import Doc, PluginConfig, StreamNames

__all__ = ["FilesConfig"]


class FilesConfig(PluginConfig):
    """One directory of files per stream under ``dir``, written atomically and privately."""

    streams: StreamNames
    dir: Annotated[
        Path,
        Doc("root directory; one subdirectory per stream", examples=["/var/lib/streamer/files"]),
    ]
    fsync: Annotated[
        bool,
        Doc(
            "flush to stable storage before a batch counts as applied "
            "(off only for a tmpfs or a disposable cache)"
        ),
    ] = True
    file_mode: Annotated[
        Literal["0600", "0640"],
        Doc(
            '"0600": only the host\'s user reads the mirror; "0640": its group may read too '
            "(directories 0750); group write and any world access are refused"
        ),
    ] = "0600"

    @property
    def mode(self) -> int:
        """``file_mode`` as permission bits."""
        return int(self.file_mode, 8)
