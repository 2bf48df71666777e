"""Validation of the ``[plugin.files]`` table: pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        if not isinstance(table, Mapping):
            raise ValueError(f"{_PLUGIN}: the config must be a table, got {table!r}")
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise ValueError(
                f"{_PLUGIN}: unknown config key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(_KEYS)}"
            )
        streams = _streams(table)
        if "dir" not in table:
            raise ValueError(f"{_PLUGIN}: config key 'dir' is required (the root directory)")
        root = table["dir"]
        if not isinstance(root, str) or not root or "\0" in root:
            raise ValueError(
                f"{_PLUGIN}: config key 'dir' must be a non-empty path string, got {root!r}"
            )
        fsync = table.get("fsync", True)
        if not isinstance(fsync, bool):
            raise ValueError(f"{_PLUGIN}: config key 'fsync' must be true or false, got {fsync!r}")
        return cls(streams=streams, dir=Path(root).expanduser(), fsync=fsync)


def _streams(table: Mapping[str, Any]) -> tuple[str, ...]:
    if "streams" not in table:
        raise ValueError(f"{_PLUGIN}: config key 'streams' is required (a list of stream names)")
    value = table["streams"]
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"{_PLUGIN}: config key 'streams' must be a non-empty list of stream names, "
            f"got {value!r}"
        )
    seen: set[str] = set()
    for name in value:
        if not isinstance(name, str) or not name or not name.isprintable():
            raise ValueError(
                f"{_PLUGIN}: config key 'streams' holds {name!r}; "
                "each stream name must be a non-empty printable string"
            )
        if name in seen:
            raise ValueError(f"{_PLUGIN}: config key 'streams' names {name!r} twice")
        seen.add(name)
    return tuple(value)
