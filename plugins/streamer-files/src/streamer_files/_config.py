"""Validation of the ``[plugin.files]`` table: pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.sinks import TableReader

__all__ = ["FilesConfig"]

_PLUGIN = "streamer-files"
_KEYS = ("streams", "dir", "fsync")


@dataclass(frozen=True, slots=True)
class FilesConfig:
    """``streams``: stream names (one listener and one subdirectory each); ``dir``: the root
    directory; ``fsync``: flush files and directories to stable storage before a batch counts
    as applied (turn off only for a tmpfs or a disposable cache)."""

    streams: tuple[str, ...]
    dir: Path
    fsync: bool = True

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> FilesConfig:
        read = TableReader(_PLUGIN, table, _KEYS)
        return cls(
            streams=read.streams(),
            dir=read.path("dir", what="the root directory"),
            fsync=read.boolean("fsync", True),
        )
