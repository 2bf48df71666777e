"""streamer-sqlite: mirror streams into SQLite tables, one transaction per batch.

Entry point ``sqlite`` in the ``streamer.listeners`` group points at :func:`create_listeners`.
:func:`benchmark_resync` compares :meth:`SqliteMirror.sync_snapshot` (writes only changed rows)
with the rewrite-everything baseline :meth:`SqliteMirror.rewrite_snapshot`.
"""

from __future__ import annotations

from streamer_sqlite._bench import ResyncBenchmark, benchmark_resync, make_snapshots
from streamer_sqlite._config import SqliteConfig, table_name
from streamer_sqlite._listener import LOGGER_NAME, SqliteListener, create_listeners
from streamer_sqlite._mirror import SqliteDataChanged, SqliteMirror, SyncStats, quote_identifier

__all__ = [
    "LOGGER_NAME",
    "ResyncBenchmark",
    "SqliteConfig",
    "SqliteDataChanged",
    "SqliteListener",
    "SqliteMirror",
    "SyncStats",
    "benchmark_resync",
    "create_listeners",
    "make_snapshots",
    "quote_identifier",
    "table_name",
]
