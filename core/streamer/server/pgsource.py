"""A PostgreSQL data source for the reference server: one database, many stateless replicas.

The public write API is one table, written with plain SQL in the application's own
transactions::

    streamer_data(stream text, key text, value bytea NOT NULL, PRIMARY KEY (stream, key))

INSERT / UPDATE / DELETE / COPY / TRUNCATE all work. Statement-level triggers (with transition
tables, so a COPY of 100,000 rows costs one trigger call per statement) record every changed
key in ``streamer_changes`` under a per-stream version and ``pg_notify`` the stream's name.

Why versions are gap-free and in commit order: a transaction takes the version of a stream by
updating that stream's row in ``streamer_streams``; the row lock is held until it commits, so
a second writer of the same stream waits and then numbers its change after the first one's.
(Writers of one stream therefore serialize; writers of different streams do not.)

Each replica holds every stream in memory (a :class:`~streamer.server.sources.StreamStore`: one
snapshot per stream version, shared by all callers, and a bounded change log for push calls).
On a notification it reads, in one REPEATABLE READ transaction, the keys changed after the
version it holds and their current values, and applies them as one change: a committed
transaction reaches a push call as one batch, never half of one. A notification missed while
the replica's connection was down is never a missed change: on reconnecting it listens first,
then re-reads every stream (the database may have restarted, failed over to a standby or lost
its last commits, so the versions it held prove nothing) and pushes only the differences,
before it serves again; meanwhile calls get UNAVAILABLE, so gateways retry elsewhere. A replica
further behind than the retained change log (see ``retain``) reloads the stream whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from streamer.server.sources import Changes, Snapshot, SourceError, SourceUnavailable, StreamStore

if TYPE_CHECKING:
    import asyncpg

__all__ = ["SCHEMA_VERSION", "PostgresSource", "redact_dsn"]

logger = logging.getLogger("streamer.server.reference")

SCHEMA_VERSION = 1
CHANNEL = "streamer_changes"
# Notification payloads are limited to 8000 bytes; a longer stream name is sent as "" (= all).
_MAX_PAYLOAD = 7000

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS streamer_schema (
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS streamer_data (
    stream text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (stream, key)
);
CREATE TABLE IF NOT EXISTS streamer_streams (
    stream text PRIMARY KEY,
    version bigint NOT NULL,
    txid xid8 NOT NULL,
    floor bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS streamer_changes (
    stream text NOT NULL,
    version bigint NOT NULL,
    key text,                      -- NULL: the whole stream changed (TRUNCATE)
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS streamer_changes_stream_version
    ON streamer_changes (stream, version);

-- The version this transaction gives p_stream (the same for every statement of it).
CREATE OR REPLACE FUNCTION streamer_bump(p_stream text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
    INSERT INTO streamer_streams AS s (stream, version, txid)
        VALUES (p_stream, 1, pg_current_xact_id())
    ON CONFLICT (stream) DO UPDATE SET
        version = CASE WHEN s.txid = pg_current_xact_id() THEN s.version ELSE s.version + 1 END,
        txid = pg_current_xact_id()
    RETURNING s.version INTO v;
    PERFORM pg_notify('streamer_changes',
                      CASE WHEN octet_length(p_stream) < 7000 THEN p_stream ELSE '' END);
    RETURN v;
END $$;

CREATE OR REPLACE FUNCTION streamer_log_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH v AS (SELECT stream, streamer_bump(stream) AS version
               FROM (SELECT DISTINCT stream FROM new_rows ORDER BY stream) s)
    INSERT INTO streamer_changes (stream, version, key)
        SELECT n.stream, v.version, n.key FROM new_rows n JOIN v USING (stream);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION streamer_log_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changed AS (SELECT stream, key FROM new_rows UNION SELECT stream, key FROM old_rows),
    v AS (SELECT stream, streamer_bump(stream) AS version
          FROM (SELECT DISTINCT stream FROM changed ORDER BY stream) s)
    INSERT INTO streamer_changes (stream, version, key)
        SELECT c.stream, v.version, c.key FROM changed c JOIN v USING (stream);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION streamer_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH v AS (SELECT stream, streamer_bump(stream) AS version
               FROM (SELECT DISTINCT stream FROM old_rows ORDER BY stream) s)
    INSERT INTO streamer_changes (stream, version, key)
        SELECT o.stream, v.version, o.key FROM old_rows o JOIN v USING (stream);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION streamer_log_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO streamer_changes (stream, version, key)
        SELECT stream, streamer_bump(stream), NULL
        FROM (SELECT stream FROM streamer_streams ORDER BY stream) s;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS streamer_insert ON streamer_data;
CREATE TRIGGER streamer_insert AFTER INSERT ON streamer_data
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION streamer_log_insert();
DROP TRIGGER IF EXISTS streamer_update ON streamer_data;
CREATE TRIGGER streamer_update AFTER UPDATE ON streamer_data
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION streamer_log_update();
DROP TRIGGER IF EXISTS streamer_delete ON streamer_data;
CREATE TRIGGER streamer_delete AFTER DELETE ON streamer_data
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION streamer_log_delete();
DROP TRIGGER IF EXISTS streamer_truncate ON streamer_data;
CREATE TRIGGER streamer_truncate AFTER TRUNCATE ON streamer_data
    FOR EACH STATEMENT EXECUTE FUNCTION streamer_log_truncate();
"""

# Serializes schema creation between replicas starting at the same moment.
_SCHEMA_LOCK = 0x5354524D  # "STRM"


def redact_dsn(dsn: str) -> str:
    """The DSN with its password shown as ``***``."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "postgresql://***"
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class PostgresSource(StreamStore):
    """Streams from a PostgreSQL table; see the module docstring for the contract.

    ``retain``: seconds of change log kept (older entries are pruned by any replica every
    ``prune_interval`` seconds; a replica further behind reloads whole streams).
    ``reconnect_delay``: first wait before reconnecting a lost connection (doubles to 5 s).
    """

    def __init__(
        self,
        dsn: str,
        *,
        retain: float = 3600.0,
        prune_interval: float = 60.0,
        reconnect_delay: float = 0.1,
        log_limit: int = 100_000,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(log_limit=log_limit)
        self.dsn = dsn
        self.retain = retain
        self.prune_interval = prune_interval
        self.reconnect_delay = reconnect_delay
        self.connect_timeout = connect_timeout
        self._pg_versions: dict[str, int] = {}
        self._conn: asyncpg.Connection | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._dirty: set[str] = set()
        self._all_dirty = False
        self._wakeup = asyncio.Event()
        self._lost = asyncio.Event()
        self._ready = False
        self.catchups = 0  # how many times the whole database was caught up (observability)

    # -- Source --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create or migrate the schema, listen, load every stream. Idempotent."""
        if self._listener is not None:
            return
        conn = await self._connect()
        try:
            await self._migrate(conn)
        except BaseException:
            await conn.close()
            raise
        await self._attach(conn)
        self._listener = asyncio.create_task(self._run(), name="streamer-pg-listener")
        if self.prune_interval > 0:
            self._pruner = asyncio.create_task(self._prune_loop(), name="streamer-pg-pruner")

    async def stop(self) -> None:
        for task in (self._listener, self._pruner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._pruner = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
        self._ready = False

    async def snapshot(self, stream: str) -> Snapshot:
        self._require_ready()
        return self.snapshot_now(stream)

    async def changes_since(self, stream: str, version: int) -> Changes:
        self._require_ready()
        return await super().changes_since(stream, version)

    @property
    def ready(self) -> bool:
        """True while connected and caught up."""
        return self._ready

    # -- connection ----------------------------------------------------------------------

    def _require_ready(self) -> None:
        if not self._ready:
            raise SourceUnavailable(
                f"database {redact_dsn(self.dsn)} unreachable or catching up; try again"
            )

    async def _connect(self) -> asyncpg.Connection:
        try:
            import asyncpg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise SourceError(
                "a postgresql:// source needs asyncpg: pip install 'streamer[server]'"
            ) from exc
        try:
            return await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            raise SourceError(
                f"cannot connect to database {redact_dsn(self.dsn)}: {type(exc).__name__}: {exc}"
            ) from exc
        except ValueError as exc:  # a malformed DSN
            raise SourceError(f"invalid database DSN {redact_dsn(self.dsn)}: {exc}") from exc

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            exists = await conn.fetchval("SELECT to_regclass('streamer_schema') IS NOT NULL")
            found = (
                await conn.fetchval("SELECT max(version) FROM streamer_schema") if exists else None
            )
            if found is not None and found > SCHEMA_VERSION:
                raise SourceError(
                    f"database {redact_dsn(self.dsn)} has streamer schema version {found}, "
                    f"newer than this server's {SCHEMA_VERSION}: upgrade streamer"
                )
            await conn.execute(_SCHEMA_SQL)
            if found is None:
                await conn.execute("INSERT INTO streamer_schema VALUES ($1)", SCHEMA_VERSION)
            elif found < SCHEMA_VERSION:
                await conn.execute("UPDATE streamer_schema SET version = $1", SCHEMA_VERSION)

    async def _attach(self, conn: asyncpg.Connection) -> None:
        """Listen first, then catch up every stream: nothing committed in between is missed."""
        lost = asyncio.Event()  # this connection's own: an old one's end must not count
        await conn.add_listener(CHANNEL, self._notified)
        conn.add_termination_listener(lambda _c: lost.set())
        self._lost = lost
        self._conn = conn
        await self._catch_up(conn, None, reload=True)
        self.catchups += 1
        self._ready = True

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload:
            self._dirty.add(payload)
        else:
            self._all_dirty = True
        self._wakeup.set()

    async def _run(self) -> None:
        delay = self.reconnect_delay
        while True:
            conn = self._conn
            try:
                if conn is None or conn.is_closed():
                    raise ConnectionError("connection closed")
                lost = asyncio.create_task(self._lost.wait())
                woke = asyncio.create_task(self._wakeup.wait())
                try:
                    await asyncio.wait((lost, woke), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    woke.cancel()
                if self._lost.is_set():
                    raise ConnectionError("connection lost")
                self._wakeup.clear()
                streams = None if self._all_dirty else set(self._dirty)
                self._dirty.clear()
                self._all_dirty = False
                await self._catch_up(conn, streams)
                delay = self.reconnect_delay
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._ready:
                    logger.warning(
                        "database %s: %s; serving UNAVAILABLE until reconnected and caught up",
                        redact_dsn(self.dsn),
                        _one_line(exc),
                    )
                self._ready = False
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.terminate()
                    self._conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                try:
                    new = await self._connect()
                    await self._attach(new)
                    logger.info("database %s: reconnected and caught up", redact_dsn(self.dsn))
                except asyncio.CancelledError:
                    raise
                except Exception as again:
                    logger.debug("database reconnect failed: %s", _one_line(again))

    # -- catching up ---------------------------------------------------------------------

    async def _catch_up(
        self, conn: asyncpg.Connection, streams: set[str] | None, *, reload: bool = False
    ) -> None:
        """Bring ``streams`` (every stream when None) to the database's committed state: from
        the change log, or with ``reload`` by reading each stream whole (after a reconnect: the
        database may have restarted, failed over or lost commits, so versions prove nothing).
        Either way only real differences reach push calls (:meth:`StreamStore.apply`)."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(
                "SELECT stream, version, floor FROM streamer_streams"
                + ("" if streams is None else " WHERE stream = ANY($1::text[])"),
                *(() if streams is None else (sorted(streams),)),
            )
            for row in rows:
                await self._catch_up_stream(
                    conn, row["stream"], row["version"], row["floor"], reload
                )

    async def _catch_up_stream(
        self, conn: asyncpg.Connection, stream: str, version: int, floor: int, reload: bool
    ) -> None:
        held = self._pg_versions.get(stream)
        if not reload and held is not None and held >= version:
            return
        if reload or held is None or held < floor:
            await self._reload(conn, stream)
            self._pg_versions[stream] = version
            return
        changed = await conn.fetch(
            "SELECT key FROM streamer_changes WHERE stream = $1 AND version > $2",
            stream,
            held,
        )
        keys = {r["key"] for r in changed}
        if None in keys:  # TRUNCATE: reload the stream whole
            await self._reload(conn, stream)
        elif keys:
            current = await conn.fetch(
                "SELECT key, value FROM streamer_data WHERE stream = $1 AND key = ANY($2::text[])",
                stream,
                sorted(keys),
            )
            values: dict[str, bytes | None] = dict.fromkeys(keys)
            values.update({r["key"]: bytes(r["value"]) for r in current})
            self.apply(stream, values)
        self._pg_versions[stream] = version

    async def _reload(self, conn: asyncpg.Connection, stream: str) -> None:
        """Make the held copy of ``stream`` exactly the table's rows (only the differences
        reach push calls)."""
        data = await conn.fetch("SELECT key, value FROM streamer_data WHERE stream = $1", stream)
        self.apply(stream, {r["key"]: bytes(r["value"]) for r in data}, replace=True)

    # -- pruning -------------------------------------------------------------------------

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval)
            conn = self._conn
            if conn is None or not self._ready:
                continue
            try:
                await self.prune(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("change log pruning failed: %s", _one_line(exc))

    async def prune(
        self, conn: asyncpg.Connection | None = None, *, now: Callable[[], float] = time.time
    ) -> int:
        """Delete change-log entries older than ``retain`` seconds; raise each stream's floor
        so a replica behind it reloads the stream whole. Returns the entries deleted."""
        conn = conn or self._conn
        if conn is None:
            return 0
        async with conn.transaction():
            rows = await conn.fetch(
                "DELETE FROM streamer_changes WHERE at < to_timestamp($1) "
                "RETURNING stream, version",
                now() - self.retain,
            )
            floors: dict[str, int] = {}
            for r in rows:
                floors[r["stream"]] = max(floors.get(r["stream"], 0), r["version"])
            for stream, floor in sorted(floors.items()):
                await conn.execute(
                    "UPDATE streamer_streams SET floor = greatest(floor, $2) WHERE stream = $1",
                    stream,
                    floor,
                )
        return len(rows)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]
