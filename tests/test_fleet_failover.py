"""The fleet end to end: two ``streamer serve --source postgresql://`` replicas (processes)
over a real PostgreSQL, a real ``streamer run`` (process) with the files plugin naming both
replicas in ``[cloud] targets``, and writes through plain SQL. The replica the host is on is
SIGKILLed while writes go on, then PostgreSQL is restarted: each time, the files on disk
converge to the table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from streamer_files import read_stream

from tests.helpers import FAST_STREAMING, RunningHost, eventually, free_port, streamer_env
from tests.pg import PgCluster

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

STREAMS = ("subs", "policies")


def attached(port: int) -> int:
    """Established TCP connections whose local end is 127.0.0.1:``port`` (a replica's clients;
    its own database connection is outgoing, so it does not count). gRPC's sockets are IPv6
    ones with IPv4-mapped addresses, so both tables are read."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if local.endswith(f"0100007F:{port:04X}") and state == "01":
                count += 1
    return count


async def replica(dsn: str, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer.cli", "serve", "--source", dsn,
        "--address", f"127.0.0.1:{port}", "--mode", "push", "--log-level", "WARNING",
        env=streamer_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    if not line.startswith("streamer serve:"):
        raise AssertionError(line + (await proc.stderr.read()).decode())
    return proc


class Writer:
    """Commits random changes to STREAMS through plain SQL (upserts, deletes, multi-row
    transactions) until paused; rides out a database restart by reconnecting."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.commits = 0
        self.running = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        rng = random.Random(15)
        db: asyncpg.Connection | None = None
        while True:
            await self.running.wait()
            try:
                if db is None or db.is_closed():
                    db = await asyncpg.connect(self.dsn)
                stream = rng.choice(STREAMS)
                async with db.transaction():
                    for _ in range(rng.randint(1, 3)):
                        key = f"k{rng.randrange(40)}"
                        if rng.random() < 0.25:
                            await db.execute(
                                "DELETE FROM streamer_data WHERE stream = $1 AND key = $2",
                                stream, key,
                            )  # fmt: skip
                        else:
                            await db.execute(
                                "INSERT INTO streamer_data VALUES ($1, $2, $3) ON CONFLICT "
                                "(stream, key) DO UPDATE SET value = excluded.value",
                                stream, key, rng.randbytes(12),
                            )  # fmt: skip
                self.commits += 1
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError):  # fmt: skip
                # The database is restarting (asyncpg may fail a transaction cut off mid-way
                # with InternalClientError): drop the connection, make a new one.
                if db is not None:
                    db.terminate()
                db = None
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.002)

    async def commit(self, count: int) -> None:
        """Run until ``count`` more transactions have committed, then pause."""
        target = self.commits + count
        self.running.set()
        await eventually(lambda: self.commits >= target, f"{count} commits", timeout=30)
        self.running.clear()
        await asyncio.sleep(0.05)  # a transaction in flight finishes

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def table(dsn: str) -> dict[str, dict[str, bytes]]:
    db = await asyncpg.connect(dsn)
    try:
        rows = await db.fetch("SELECT stream, key, value FROM streamer_data")
    finally:
        await db.close()
    out: dict[str, dict[str, bytes]] = {s: {} for s in STREAMS}
    for r in rows:
        out[r["stream"]][r["key"]] = bytes(r["value"])
    return out


async def converged(dsn: str, files: Path, what: str) -> None:
    """The files sink holds exactly what the table holds, for every stream."""
    want = await table(dsn)

    def same() -> bool:
        return all(read_stream(files, s) == want[s] for s in STREAMS)

    await eventually(same, f"files == table {what}", timeout=20, interval=0.05)


@contextlib.asynccontextmanager
async def processes(
    cluster: PgCluster, tmp_path: Path
) -> AsyncIterator[tuple[str, list[int], list[asyncio.subprocess.Process], Path, RunningHost]]:
    dsn = cluster.new_database()
    ports = [free_port()]
    while len(ports) < 2:
        port = free_port()
        if port not in ports:
            ports.append(port)
    replicas = list(await asyncio.gather(*(replica(dsn, p) for p in ports)))
    files = tmp_path / "files"
    cfg = tmp_path / "streamer.toml"
    cfg.write_text(
        'plugins = ["files"]\n[cloud]\n'
        f"targets = {json.dumps([f'127.0.0.1:{p}' for p in ports])}\n[streaming]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in FAST_STREAMING.items())
        + f'[plugin.files]\nstreams = {json.dumps(list(STREAMS))}\ndir = "{files}"\n'
        + "fsync = false\n"
    )
    host = await RunningHost.start(cfg, tmp_path / "host.log")
    try:
        yield dsn, ports, replicas, files, host
    finally:
        code = await host.stop()
        for proc in replicas:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                await asyncio.wait_for(proc.wait(), 15)
        assert code == 0, host.logtext()


async def test_files_converge_through_a_replica_kill_and_a_database_restart(
    own_pg_cluster: PgCluster, tmp_path: Path
) -> None:
    async with processes(own_pg_cluster, tmp_path) as (dsn, ports, replicas, files, host):
        db = await asyncpg.connect(dsn)
        await db.executemany(
            "INSERT INTO streamer_data VALUES ($1, $2, 'seed')",
            [(s, f"k{i}") for s in STREAMS for i in range(20)],
        )
        await db.close()
        await converged(dsn, files, "at start")
        # The host holds one connection, to one replica: that one dies, mid-writes.
        on = [attached(p) for p in ports]
        assert sorted(on) == [0, 1], (on, host.logtext())
        doomed = on.index(1)
        survivor = ports[1 - doomed]
        writer = Writer(dsn)
        try:
            await writer.commit(30)
            writer.running.set()
            replicas[doomed].send_signal(signal.SIGKILL)
            await replicas[doomed].wait()
            await writer.commit(60)  # keeps writing while the host fails over
            await converged(dsn, files, "after the replica kill")
            assert attached(survivor) == 1, host.logtext()

            # The database restarts under the surviving replica, writes before and after.
            writer.running.set()
            await asyncio.to_thread(own_pg_cluster.restart)
            await writer.commit(60)
            await converged(dsn, files, "after the database restart")
        finally:
            await writer.close()
