"""B10 / B12: the fleet server (``streamer serve --source postgresql://``) under load.

A throwaway PostgreSQL cluster (initdb in a temp dir), two replicas (``streamer serve`` in their
own processes), and the gateways in a separate client process.

- B10 fan-out: N push calls for one stream, spread over both replicas. One committed transaction
  of 100 keys; the time from COMMIT returning until each call has the batch: p50 / p99 / max
  over several rounds. Then single-key transactions as fast as one writer commits them for a few
  seconds: commits/s, and how long after the last commit every call has it (lag). Also the
  replicas' RSS per attached call.
- B11 failover: N streams (one listener each, the project's client given both replicas as
  ``[cloud] targets`` would, default backoff: 1 s initial, 20 s cap) all on replica A while a
  writer commits continuously; A is SIGKILLed. Per stream, the time from the kill until its call
  is open again (response headers) on B: p50 / p99 / max against the backoff cap; how many moved
  without a snapshot (their digest matched); zero lost changes (every stream's final state equals
  the table). Also replica memory: RSS per stream held (one version each) and per attached
  stream.
- B12 database restart: N streams (one listener each, the project's own client, half on each
  replica) while a writer commits continuously; PostgreSQL is stopped (``-m fast``) and started
  again mid-run. Zero lost changes means every stream's final state (digest) equals the table;
  the replicas must recover by themselves.

    .venv/bin/python benchmarks/bench_fleet.py [--quick] [--only B10,B11,B12]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import PYTHON, Row, bench_main, fmt, free_port, parser, percentile, verdict  # noqa: E402

B10_P99_TARGET_MS = 250.0


# -- the gateways' process ---------------------------------------------------------------------


async def _commands() -> AsyncIterator[str]:
    """Say "ready", then yield each line the benchmark process sends until "quit" or EOF."""
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            return
        yield line


async def _client_fanout(addresses: list[str], n: int, stream: str) -> None:
    """N raw push calls; on stdin "mark TOKEN" print each call's arrival time of key TOKEN."""
    import grpc.aio

    from streamer.server.reference import METHOD
    from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest

    per_channel = 90
    channels: dict[tuple[str, int], Any] = {}
    arrivals: dict[str, list[float | None]] = {}
    ready = [False] * n

    async def read(i: int, channel: Any) -> None:
        call = channel.unary_stream(
            METHOD,
            request_serializer=StreamRequest.SerializeToString,
            response_deserializer=DataUpdateBatch.FromString,
        )(StreamRequest(stream_name=stream, gatewayId=f"gw{i}"))
        async for batch in call:
            now = time.time()
            ready[i] = True
            for u in batch.updates:
                slots = arrivals.get(u.key)
                if slots is not None and slots[i] is None:
                    slots[i] = now

    tasks = []
    for i in range(n):
        # Round-robin over the replicas, at most ``per_channel`` calls per connection.
        address = addresses[i % len(addresses)]
        key = (address, (i // len(addresses)) // per_channel)
        if key not in channels:
            # A distinct option per connection, so gRPC does not share one subchannel.
            channels[key] = grpc.aio.insecure_channel(address, options=[("x.conn", key[1])])
        tasks.append(asyncio.create_task(read(i, channels[key])))
    while not all(ready):
        await asyncio.sleep(0.01)
    async for line in _commands():
        _, token = line.split()
        arrivals[token] = [None] * n
        deadline = time.monotonic() + 30
        while any(t is None for t in arrivals[token]) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        print(json.dumps(arrivals.pop(token)), flush=True)
    for t in tasks:
        t.cancel()


class _Mirror:
    """Holds one stream's state; with ``digest`` it sends its digest, as a sink does (a gateway
    that moves to another replica then gets no snapshot when it is in sync)."""

    def __init__(self, name: str, digest: bool) -> None:
        self.name = name
        self.digest = digest
        self.data: dict[str, bytes] = {}

    def get_extra_args(self) -> Any:
        from google.protobuf.wrappers_pb2 import StringValue

        from streamer.wire.digest import snapshot_digest

        if not (self.digest and self.data):
            return None
        return StringValue(value=snapshot_digest(self.data.items()))

    async def update(self, batch: Any) -> bool:
        data = {} if batch.resync else self.data
        for u in batch.updates:
            if u.value:
                data[u.key] = u.value
            else:
                data.pop(u.key, None)
        self.data = data
        return True

    async def report_error(self, error: BaseException) -> None:
        return None


class _Watch:
    """Observer: when each stream's call was (re)established, and its snapshots."""

    def __init__(self) -> None:
        self.streaming: dict[str, list[float]] = {}
        self.resyncs: dict[str, list[float]] = {}

    def state_changed(self, stream: str, state: Any) -> None:
        if state.value == "streaming":
            self.streaming.setdefault(stream, []).append(time.time())

    def batch_received(self, stream: str, batch: Any) -> None:
        if batch.resync:
            self.resyncs.setdefault(stream, []).append(time.time())

    def __getattr__(self, name: str) -> Any:  # the other StreamObserver events: ignored
        return lambda *args: None


async def _client_mirror(addresses: list[str], n: int, failover: bool = False) -> None:
    """N streams s0..s{n-1}, one listener each (the project's client). Commands: "dump" prints
    each stream's digest; "since T" prints, per stream, the first time its call was open again
    after T and how many snapshots it got after T.

    Without ``failover`` the streams are spread over one client per replica, with a short
    backoff; with it, one client dials every replica as one address list (``[cloud] targets``)
    with the default backoff (1 s initial, capped at the 20 s streaming interval)."""
    from streamer import Backoff, StaticRegistry, new_streamer_client
    from streamer.client.connection import targets_uri
    from streamer.wire.digest import snapshot_digest

    watch = _Watch()
    listeners = [_Mirror(f"s{i}", digest=failover) for i in range(n)]
    if failover:
        clients = [new_streamer_client(StaticRegistry(targets_uri(addresses)), observer=watch)]
    else:
        clients = [
            new_streamer_client(
                StaticRegistry(a), streaming_interval=1.0, backoff=Backoff(initial=0.2, maximum=2.0)
            )
            for a in addresses
        ]
    tasks = [
        asyncio.create_task(clients[i % len(clients)].stream(listener))
        for i, listener in enumerate(listeners)
    ]
    while any(not m.data for m in listeners):  # every stream has its first snapshot
        await asyncio.sleep(0.01)
    async for line in _commands():
        if line.startswith("since"):
            t = float(line.split()[1])
            back = {m.name: next((x for x in watch.streaming.get(m.name, []) if x > t), None)
                    for m in listeners}  # fmt: skip
            snaps = {m.name: sum(1 for x in watch.resyncs.get(m.name, []) if x > t)
                     for m in listeners}  # fmt: skip
            print(json.dumps({"back": back, "snapshots": snaps}), flush=True)
        else:
            digests = {m.name: snapshot_digest(m.data.items()) for m in listeners}
            print(json.dumps(digests), flush=True)
    for c in clients:
        await c.close(timeout=2)
    await asyncio.gather(*tasks, return_exceptions=True)


# -- the benchmark process ---------------------------------------------------------------------


class Fleet:
    """A PostgreSQL cluster and two replicas."""

    def __init__(self) -> None:
        from tests.pg import PgCluster, find_pg_bindir

        bindir = find_pg_bindir()
        if bindir is None:
            raise SystemExit("bench_fleet: PostgreSQL (initdb, pg_ctl) is not installed")
        self.cluster = PgCluster(bindir)
        self.dsn = self.cluster.new_database()
        self.replicas: list[subprocess.Popen[str]] = []
        self.addresses: list[str] = []

    def free_port(self) -> int:
        port = free_port()
        while f"127.0.0.1:{port}" in self.addresses:
            port = free_port()
        return port

    def start_replicas(self, count: int = 2) -> None:
        for _ in range(count):
            self.start_replica(self.free_port())

    def start_replica(self, port: int) -> None:
        proc = subprocess.Popen(
            [PYTHON, "-m", "streamer.cli", "serve", "--source", self.dsn,
             "--address", f"127.0.0.1:{port}", "--mode", "push", "--log-level", "WARNING"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("streamer serve:"):
            raise RuntimeError(f"replica did not start: {line!r}")
        self.replicas.append(proc)
        self.addresses.append(f"127.0.0.1:{port}")

    def rss_kib(self) -> list[int]:
        out = []
        for proc in self.replicas:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]))
        return out

    def close(self) -> None:
        for proc in self.replicas:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.cluster.close()


class Gateways:
    """The client process, talked to over stdin/stdout."""

    def __init__(self, mode: str, addresses: list[str], n: int) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, __file__, "--client", mode, "--addresses", ",".join(addresses), "--n", str(n)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"client did not start: {line!r}")

    def ask(self, line: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _b10(quick: bool, procs: int) -> list[Row]:
    import asyncpg

    n = 200 if quick else 1000
    rounds = 3 if quick else 8
    burst_s = 2.0 if quick else 5.0
    fleet = Fleet()
    try:
        fleet.start_replicas()
        db = await asyncpg.connect(fleet.dsn)
        await db.executemany(
            "INSERT INTO streamer_data VALUES ('subs', $1, $2)",
            [(f"k{i}", b"x" * 200) for i in range(1000)],
        )
        rss_before = fleet.rss_kib()
        gateways = await asyncio.to_thread(Gateways, "fanout", fleet.addresses, n // procs)
        others = [
            await asyncio.to_thread(Gateways, "fanout", fleet.addresses, n // procs)
            for _ in range(procs - 1)
        ]
        await asyncio.sleep(0.5)
        rss_after = fleet.rss_kib()
        latencies: list[float] = []
        for r in range(rounds):
            token = f"m{r}"
            asks = [
                asyncio.create_task(asyncio.to_thread(g.ask, f"mark {token}"))
                for g in (gateways, *others)
            ]
            await asyncio.sleep(0.2)  # the client has registered the token
            async with db.transaction():
                await db.executemany(
                    "INSERT INTO streamer_data VALUES ('subs', $1, $2)",
                    [(token if i == 0 else f"{token}-{i}", b"y" * 200) for i in range(100)],
                )
            t0 = time.time()
            arrived = [t for got in await asyncio.gather(*asks) for t in got]
            missing = sum(1 for t in arrived if t is None)
            if missing:
                raise RuntimeError(f"B10: {missing} of {n} calls never got round {r}")
            latencies += [max(t - t0, 0.0) * 1000 for t in arrived]
        # Sustained single-key commits with every call attached.
        asks = [
            asyncio.create_task(asyncio.to_thread(g.ask, "mark last")) for g in (gateways, *others)
        ]
        await asyncio.sleep(0.2)
        commits = 0
        t_start = time.monotonic()
        while time.monotonic() - t_start < burst_s:
            await db.execute(
                "INSERT INTO streamer_data VALUES ('subs', $1, 'v') "
                "ON CONFLICT (stream, key) DO UPDATE SET value = excluded.value",
                f"burst{random.randrange(5000)}",
            )
            commits += 1
        rate = commits / (time.monotonic() - t_start)
        await db.execute("INSERT INTO streamer_data VALUES ('subs', 'last', 'z')")
        t_last = time.time()
        arrived = [t for got in await asyncio.gather(*asks) for t in got]
        lag_ms = max((t or float("inf")) - t_last for t in arrived) * 1000
        for g in (gateways, *others):
            g.close()
        await db.close()
    finally:
        fleet.close()
    p50, p99, worst = (percentile(latencies, p) for p in (50, 99, 100))
    per_call = (sum(rss_after) - sum(rss_before)) / n
    return [
        Row("B10", f"fan-out p50 / p99 / max, {n} push calls, 2 replicas, 100-key tx",
            "-", f"{fmt(p50)} / {fmt(p99)} / {fmt(worst)} ms",
            f"p99 {fmt(p99)} vs <= {B10_P99_TARGET_MS:g} ms", verdict(p99 <= B10_P99_TARGET_MS),
            f"{rounds} rounds; time from COMMIT returning to each call holding the batch"),
        Row("B10", f"sustained single-key commits/s, {n} calls attached", "-",
            f"{fmt(rate)} commits/s", f"lag after last commit {fmt(lag_ms)} ms", "info",
            "one writer connection, each commit a transaction"),
        Row("B10", "replica RSS per attached push call", "-", f"{fmt(per_call)} KiB",
            f"{fmt(sum(rss_after) / 1024)} MiB for 2 replicas", "info"),
    ]  # fmt: skip


async def _write_one(db: Any, n: int) -> None:
    """One committed change to a random key of a random stream s0..s{n-1}: 80 % upserts,
    20 % deletes."""
    stream = f"s{random.randrange(n)}"
    key = f"k{random.randrange(50)}"
    if random.random() < 0.2:
        await db.execute("DELETE FROM streamer_data WHERE stream = $1 AND key = $2", stream, key)
    else:
        await db.execute(
            "INSERT INTO streamer_data VALUES ($1, $2, $3) ON CONFLICT (stream, key) "
            "DO UPDATE SET value = excluded.value",
            stream, key, os.urandom(8),
        )  # fmt: skip


async def _converged(db: Any, gateways: Gateways, n: int) -> tuple[int, float]:
    """(streams whose state differs from the table, seconds until none did or 30 s passed)."""
    from streamer.wire.digest import snapshot_digest

    rows = await db.fetch("SELECT stream, key, value FROM streamer_data")
    table: dict[str, dict[str, bytes]] = {f"s{i}": {} for i in range(n)}
    for r in rows:
        table[r["stream"]][r["key"]] = bytes(r["value"])
    want = {s: snapshot_digest(d.items()) for s, d in table.items()}
    t_end = time.monotonic()
    mismatched = n
    while time.monotonic() - t_end < 30:
        got = await asyncio.to_thread(gateways.ask, "dump")
        mismatched = sum(1 for s in want if got.get(s) != want[s])
        if not mismatched:
            break
        await asyncio.sleep(0.2)
    return mismatched, time.monotonic() - t_end


async def _first_batch(address: str, stream: str) -> int:
    """Open a call for ``stream`` and return the key count of its first batch (-1 while the
    replica does not know the stream yet)."""
    import grpc.aio

    from streamer.server.reference import METHOD
    from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest

    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_stream(
            METHOD,
            request_serializer=StreamRequest.SerializeToString,
            response_deserializer=DataUpdateBatch.FromString,
        )(StreamRequest(stream_name=stream))
        try:
            batch = await call.read()
        except grpc.aio.AioRpcError:
            return -1
        call.cancel()
        return len(batch.updates)


async def _b11(quick: bool) -> list[Row]:
    import asyncpg

    n = 100 if quick else 500
    write_s = 3.0 if quick else 8.0
    keys = 10
    cap = 20.0  # the client's backoff cap: Backoff() default, the 20 s streaming interval
    fleet = Fleet()
    writes = 0
    try:
        port_b = fleet.free_port()
        fleet.start_replica(fleet.free_port())  # A, alone: every stream lands on it
        address_a = fleet.addresses[0]
        rss_empty = fleet.rss_kib()[0]
        db = await asyncpg.connect(fleet.dsn)
        for i in range(n):  # one transaction per stream: each its own version
            await db.executemany(
                "INSERT INTO streamer_data VALUES ($1, $2, $3)",
                [(f"s{i}", f"k{j}", os.urandom(50)) for j in range(keys)],
            )
        while await _first_batch(address_a, f"s{n - 1}") != keys:  # A holds every stream
            await asyncio.sleep(0.05)
        rss_held = fleet.rss_kib()[0]
        gateways = await asyncio.to_thread(
            Gateways, "failover", [address_a, f"127.0.0.1:{port_b}"], n
        )
        await asyncio.sleep(0.5)
        rss_attached = fleet.rss_kib()[0]
        fleet.start_replica(port_b)
        t0 = time.monotonic()
        killed_at = 0.0
        while time.monotonic() - t0 < write_s:
            if not killed_at and time.monotonic() - t0 > write_s / 3:
                killed_at = time.time()
                fleet.replicas[0].kill()  # SIGKILL
                fleet.replicas[0].wait()
            await _write_one(db, n)
            writes += 1
        mismatched, converge = await _converged(db, gateways, n)
        await db.close()
        moved = await asyncio.to_thread(gateways.ask, f"since {killed_at}")
        gateways.close()
    finally:
        fleet.close()
    back = [t - killed_at if t is not None else float("inf") for t in moved["back"].values()]
    stuck = sum(1 for t in back if t == float("inf"))
    p50, p99, worst = (percentile(back, p) for p in (50, 99, 100))
    no_snapshot = sum(1 for c in moved["snapshots"].values() if c == 0)
    per_stream = (rss_held - rss_empty) / n
    per_call = (rss_attached - rss_held) / n
    return [
        Row("B11", f"failover: SIGKILL the replica holding {n} streams, time until each "
            "streams again on the other", "-",
            f"{fmt(p50)} / {fmt(p99)} / {fmt(worst)} s",
            f"max {fmt(worst)} s vs backoff cap {cap:g} s", verdict(not stuck and worst <= cap),
            f"p50 / p99 / max; {n - no_snapshot} of {n} needed a snapshot (changed while "
            "moving), the rest resumed by digest"),
        Row("B11", f"failover under continuous writes, {n} streams", "-",
            f"{mismatched} of {n} streams differ from the table",
            f"converged {fmt(converge)} s after the last write", verdict(mismatched == 0),
            f"{writes} commits during the run"),
        Row("B11", "replica RSS per stream held (one version each)", "-",
            f"{fmt(per_stream)} KiB", f"{keys} keys x 50 B per stream", "info",
            f"{n} streams; RSS growth as the replica loaded them"),
        Row("B11", "replica RSS per attached stream (project's client, push)", "-",
            f"{fmt(per_call)} KiB", f"{fmt(rss_attached / 1024)} MiB in all", "info",
            f"{n} calls from one gateway process over {-(-n // 100)} connections"),
    ]  # fmt: skip


async def _b12(quick: bool) -> list[Row]:
    import asyncpg

    n = 100 if quick else 1000
    write_s = 3.0 if quick else 8.0
    fleet = Fleet()
    writes = 0
    try:
        fleet.start_replicas()
        db = await asyncpg.connect(fleet.dsn)
        await db.executemany(
            "INSERT INTO streamer_data VALUES ($1, 'init', 'v')", [(f"s{i}",) for i in range(n)]
        )
        gateways = await asyncio.to_thread(Gateways, "mirror", fleet.addresses, n)
        restarted = False
        t0 = time.monotonic()
        restart_at = write_s / 3
        down_s = 0.0
        while time.monotonic() - t0 < write_s:
            if not restarted and time.monotonic() - t0 > restart_at:
                await db.close()
                t_down = time.monotonic()
                await asyncio.to_thread(fleet.cluster.stop, "fast")
                await asyncio.to_thread(fleet.cluster.start)
                down_s = time.monotonic() - t_down
                db = await asyncpg.connect(fleet.dsn)
                restarted = True
            await _write_one(db, n)
            writes += 1
        mismatched, converge = await _converged(db, gateways, n)
        await db.close()
        gateways.close()
    finally:
        fleet.close()
    return [
        Row("B12", f"database restart under {n} streams, continuous writes", "-",
            f"{mismatched} of {n} streams differ from the table",
            f"converged {fmt(converge)} s after the last write", verdict(mismatched == 0),
            f"{writes} commits; PostgreSQL down and up again in {fmt(down_s)} s"),
    ]  # fmt: skip


async def _run(args: Any) -> list[Row]:
    wanted = {x.strip().upper() for x in args.only.split(",")}
    rows: list[Row] = []
    if "B10" in wanted:
        rows += await _b10(args.quick, args.client_procs)
    if "B11" in wanted:
        rows += await _b11(args.quick)
    if "B12" in wanted:
        rows += await _b12(args.quick)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        mode, addresses, n = argv[1], argv[3].split(","), int(argv[5])
        if mode == "fanout":
            asyncio.run(_client_fanout(addresses, n, "subs"))
        else:
            asyncio.run(_client_mirror(addresses, n, failover=mode == "failover"))
        return 0
    p = parser(__doc__ or "")
    p.add_argument("--only", default="B10,B11,B12", help="some of B10, B11, B12")
    p.add_argument(
        "--client-procs", type=int, default=1, help="B10: gateway processes sharing the calls"
    )
    return bench_main(p, argv, _run)


if __name__ == "__main__":
    sys.exit(main())
