"""The reference Streamer server (``streamer serve``), its data sources (memory, directory,
SQLite, PostgreSQL), the fleet view, and the embedded demo.

May import anything below it (``streamer.observability``, ``streamer.host``, ``streamer.client``,
``streamer.wire``, ``streamer.base``); nothing in the runtime imports it. Server-only
dependencies (asyncpg) come with the ``server`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamer.base.lazy import lazy_getattr

if TYPE_CHECKING:
    from streamer.server.reference import (
        MODES,
        Mode,
        ReferenceServer,
        ServerTLS,
        StreamSpec,
        open_source,
        run_server,
    )
    from streamer.server.sources import (
        DirectorySource,
        MemorySource,
        Source,
        SourceError,
        SQLiteSource,
    )

__all__ = [
    "MODES",
    "DirectorySource",
    "MemorySource",
    "Mode",
    "ReferenceServer",
    "SQLiteSource",
    "ServerTLS",
    "Source",
    "SourceError",
    "StreamSpec",
    "open_source",
    "run_server",
]

_SOURCES = {
    "DirectorySource",
    "MemorySource",
    "SQLiteSource",
    "Source",
    "SourceError",
    "open_source",
}

__getattr__ = lazy_getattr(
    __name__,
    {
        n: "streamer.server.sources" if n in _SOURCES else "streamer.server.reference"
        for n in __all__
    },
)
