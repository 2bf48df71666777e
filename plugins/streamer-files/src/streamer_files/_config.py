"""Validation of the ``[plugin.files]`` table: pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.sink.mirror import TableReader

__all__ = ["FilesConfig"]

_PLUGIN = "streamer-files"
_KEYS = ("streams", "dir", "fsync", "file_mode")
_FILE_MODES = {"0600": 0o600, "0640": 0o640}


@dataclass(frozen=True, slots=True)
class FilesConfig:
    """``streams``: stream names (one listener and one subdirectory each); ``dir``: the root
    directory; ``fsync``: flush files and directories to stable storage before a batch counts
    as applied (turn off only for a tmpfs or a disposable cache); ``file_mode``: ``"0600"``
    (default: only the host's user reads the mirror) or ``"0640"`` (its group may read too;
    directories become 0750). Group write and any world access are refused."""

    streams: tuple[str, ...]
    dir: Path
    fsync: bool = True
    file_mode: int = 0o600

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> FilesConfig:
        read = TableReader(_PLUGIN, table, _KEYS)
        return cls(
            streams=read.streams(),
            dir=read.path("dir", what="the root directory"),
            fsync=read.boolean("fsync", True),
            file_mode=_FILE_MODES[
                read.string(
                    "file_mode",
                    "0600",
                    must='"0600" or "0640" (group write and world access are refused)',
                    check=_FILE_MODES.__contains__,
                )
            ],
        )
