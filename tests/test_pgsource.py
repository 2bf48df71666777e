"""The PostgreSQL source against a real PostgreSQL: one batch per committed transaction,
replicas that all see every commit, catch-up after a lost connection, schema versioning."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import grpc.aio
import pytest

from streamer.server.pgsource import SCHEMA_VERSION, PostgresSource, redact_dsn
from streamer.server.reference import METHOD, ReferenceServer, open_source
from streamer.server.sources import SourceError, UnknownStreamError
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest
from tests.helpers import eventually, free_port, streamer_env
from tests.pg import PgCluster, find_pg_bindir

pytestmark = pytest.mark.postgres


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


def holds(source: PostgresSource, stream: str) -> dict[str, bytes] | None:
    try:
        return source.get(stream)
    except UnknownStreamError:
        return None


async def started(dsn: str, **kwargs: Any) -> PostgresSource:
    source = PostgresSource(dsn, **kwargs)
    await source.start()
    return source


class Reader:
    """A push-mode GetUpdates call, its batches collected as they arrive; a call that fails
    (e.g. the replica does not know the stream yet) is made again, as a gateway would."""

    def __init__(self, address: str, stream: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stream = stream
        self.batches: list[DataUpdateBatch] = []
        self.failures: list[grpc.StatusCode] = []
        self.call: Any = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            self.call = self.channel.unary_stream(
                METHOD,
                request_serializer=StreamRequest.SerializeToString,
                response_deserializer=DataUpdateBatch.FromString,
            )(StreamRequest(stream_name=self.stream))
            try:
                async for batch in self.call:
                    self.batches.append(batch)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    return
                self.failures.append(exc.code())
                await asyncio.sleep(0.05)

    def state(self) -> dict[str, bytes]:
        held: dict[str, bytes] = {}
        for b in self.batches:
            if b.resync:
                held.clear()
            for u in b.updates:
                if u.value:
                    held[u.key] = u.value
                else:
                    held.pop(u.key, None)
        return held

    async def close(self) -> None:
        self.task.cancel()
        if self.call is not None:
            self.call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()


async def test_schema_is_created_once_and_a_newer_one_is_refused(
    pg_dsn: str, db: asyncpg.Connection
) -> None:
    a = await started(pg_dsn)
    b = await started(pg_dsn)  # a second replica: migration is idempotent
    await a.stop()
    await b.stop()
    assert await db.fetchval("SELECT array_agg(version) FROM streamer_schema") == [SCHEMA_VERSION]
    await db.execute("UPDATE streamer_schema SET version = $1", SCHEMA_VERSION + 1)
    newer = PostgresSource(pg_dsn)
    with pytest.raises(SourceError, match=f"schema version {SCHEMA_VERSION + 1}, newer than"):
        await newer.start()


async def test_unreachable_database_is_a_clear_error_without_the_password() -> None:
    dsn = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/fleet"
    with pytest.raises(SourceError) as info:
        await PostgresSource(dsn, connect_timeout=5).start()
    text = str(info.value)
    assert text.startswith("cannot connect to database postgresql://app:***@127.0.0.1:")
    assert "s3cret" not in text
    assert redact_dsn("postgresql://u@h/d") == "postgresql://u@h/d"
    assert isinstance(open_source(dsn), PostgresSource)


async def test_one_committed_transaction_is_one_batch(pg_dsn: str, db: asyncpg.Connection) -> None:
    source = await started(pg_dsn)  # creates the schema
    await db.executemany(
        "INSERT INTO streamer_data VALUES ('subs', $1, $2)", [("a", b"A"), ("b", b"B"), ("c", b"C")]
    )
    # The stream exists on the replica once the inserts' notification is handled.
    await eventually(lambda: holds(source, "subs") == {"a": b"A", "b": b"B", "c": b"C"}, "load")
    server = ReferenceServer(source, "push")
    await server.start()
    reader = Reader(server.address, "subs")
    try:
        await eventually(lambda: reader.state() == {"a": b"A", "b": b"B", "c": b"C"}, "snapshot")
        seen = len(reader.batches)
        async with db.transaction():
            await db.execute(
                "INSERT INTO streamer_data VALUES ('subs', 'd', 'D'), ('subs', 'e', 'E')"
            )
            await db.execute(
                "UPDATE streamer_data SET value = 'A2' WHERE stream = 'subs' AND key = 'a'"
            )
            await db.execute("DELETE FROM streamer_data WHERE stream = 'subs' AND key = 'b'")
            await db.execute("INSERT INTO streamer_data VALUES ('other', 'x', 'X')")
        await eventually(lambda: len(reader.batches) > seen, "the transaction's batch")
        await asyncio.sleep(0.2)  # nothing else may follow
        (batch,) = reader.batches[seen:]
        assert not batch.resync
        assert {u.key: u.value for u in batch.updates} == {
            "a": b"A2", "b": b"", "d": b"D", "e": b"E"
        }  # fmt: skip
        assert source.get("other") == {"x": b"X"}
        # Rolled back: nothing is sent.
        with pytest.raises(RuntimeError):
            async with db.transaction():
                await db.execute("INSERT INTO streamer_data VALUES ('subs', 'z', 'Z')")
                raise RuntimeError("roll back")
        await db.execute("DELETE FROM streamer_data WHERE stream = 'subs' AND key = 'c'")
        await eventually(lambda: "c" not in reader.state(), "the delete")
        assert "z" not in reader.state() and len(reader.batches) == seen + 2
    finally:
        await reader.close()
        await server.stop()


async def test_two_replicas_see_every_commit_and_copy_and_truncate(
    pg_dsn: str, db: asyncpg.Connection
) -> None:
    a = await started(pg_dsn)
    b = await started(pg_dsn)
    try:
        await db.copy_records_to_table(
            "streamer_data", records=[("subs", f"k{i}", b"v%d" % i) for i in range(1000)]
        )
        want = {f"k{i}": b"v%d" % i for i in range(1000)}
        for replica in (a, b):
            await eventually(lambda r=replica: holds(r, "subs") == want, "the COPY on both")
        version = a.snapshot_now("subs").version
        await db.execute("TRUNCATE streamer_data")
        await db.execute("INSERT INTO streamer_data VALUES ('subs', 'only', '1')")
        for replica in (a, b):
            await eventually(lambda r=replica: holds(r, "subs") == {"only": b"1"}, "truncate")
        assert a.snapshot_now("subs").version > version
        # Both replicas hold the same content, so a gateway can move between them.
        assert a.snapshot_now("subs").digest == b.snapshot_now("subs").digest
    finally:
        await a.stop()
        await b.stop()


async def test_lost_connection_serves_unavailable_then_catches_up(
    pg_dsn: str, db: asyncpg.Connection
) -> None:
    source = await started(pg_dsn, reconnect_delay=0.05, retain=3600)
    try:
        await db.execute("INSERT INTO streamer_data VALUES ('subs', 'a', '1')")
        await eventually(lambda: holds(source, "subs") == {"a": b"1"}, "first insert")
        catchups = source.catchups
        assert source._conn is not None
        await db.execute("SELECT pg_terminate_backend($1)", source._conn.get_server_pid())
        # Changes made while the replica is disconnected: no notification reaches it.
        await db.execute("INSERT INTO streamer_data VALUES ('subs', 'b', '2')")
        await db.execute("UPDATE streamer_data SET value = '3' WHERE key = 'a'")
        await eventually(lambda: source.catchups > catchups, "reconnect", timeout=15)
        await eventually(lambda: source.get("subs") == {"a": b"3", "b": b"2"}, "catch-up")
        # Pruning the change log raises each stream's floor; catching up still works.
        pruned = await source.prune(db, now=lambda: 4e9)
        assert pruned >= 1
        assert await db.fetchval("SELECT floor FROM streamer_streams WHERE stream = 'subs'") >= 2
        await db.execute("DELETE FROM streamer_data WHERE key = 'b'")
        await eventually(lambda: source.get("subs") == {"a": b"3"}, "delete after prune")
    finally:
        await source.stop()


async def test_database_restart_unavailable_meanwhile_nothing_lost() -> None:
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL not installed")
    cluster = PgCluster(bindir)
    try:
        dsn = cluster.new_database()
        source = await started(dsn, reconnect_delay=0.05)
        server = ReferenceServer(source, "poll")
        await server.start()
        try:
            conn = await asyncpg.connect(dsn)
            await conn.execute("INSERT INTO streamer_data VALUES ('s', 'k', 'v1')")
            await conn.close()
            await eventually(lambda: holds(source, "s") == {"k": b"v1"}, "insert")
            await asyncio.to_thread(cluster.stop, "immediate")
            await eventually(lambda: not source.ready, "replica notices", timeout=15)
            async with grpc.aio.insecure_channel(server.address) as ch:
                call = ch.unary_stream(
                    METHOD,
                    request_serializer=StreamRequest.SerializeToString,
                    response_deserializer=DataUpdateBatch.FromString,
                )(StreamRequest(stream_name="s"))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _ in call:
                        pass
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.to_thread(cluster.start)
            conn = await asyncpg.connect(dsn)
            await conn.execute("UPDATE streamer_data SET value = 'v2'")
            await conn.close()
            await eventually(lambda: source.ready, "replica reconnects", timeout=20)
            await eventually(lambda: source.get("s") == {"k": b"v2"}, "catch-up", timeout=20)
        finally:
            await server.stop()
            await source.stop()
    finally:
        cluster.close()


async def _serve(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer.cli", "serve", *args,
        env=streamer_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_serve_source_postgresql_two_replicas(pg_dsn: str, db: asyncpg.Connection) -> None:
    ports = [free_port()]
    while len(ports) < 2:  # two distinct ports: the same free port can come back twice
        port = free_port()
        if port not in ports:
            ports.append(port)
    procs = [
        await _serve("--source", pg_dsn, "--address", f"127.0.0.1:{p}", "--mode", "push")
        for p in ports
    ]
    readers: list[Reader] = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            if not line:
                assert proc.stderr is not None
                raise AssertionError((await proc.stderr.read()).decode())
            assert line.startswith(f"streamer serve: {pg_dsn} on 127.0.0.1:"), line
        await db.execute("INSERT INTO streamer_data VALUES ('subs', 'a', '1')")
        readers = [Reader(f"127.0.0.1:{p}", "subs") for p in ports]
        for r in readers:
            await eventually(lambda r=r: r.state() == {"a": b"1"}, "snapshot", timeout=30)
        await db.execute("INSERT INTO streamer_data VALUES ('subs', 'b', '2')")
        for r in readers:
            await eventually(lambda r=r: r.state() == {"a": b"1", "b": b"2"}, "push", timeout=30)
    finally:
        for r in readers:
            await r.close()
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 15)


async def test_serve_refuses_an_unreachable_database_without_showing_the_password() -> None:
    dsn = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/fleet"
    proc = await _serve("--source", dsn, "--address", f"127.0.0.1:{free_port()}")
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    text = (out + err).decode()
    assert "cannot connect to database postgresql://app:***@127.0.0.1:" in text
    assert "s3cret" not in text and "Traceback" not in text
