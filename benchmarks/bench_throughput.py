"""B1/B2: throughput of one stream into a no-op listener vs a bare grpc.aio read loop.

The server (push_server.py) runs in its own process and writes pre-serialized batches as fast as
flow control allows. Each round runs, back to back on fresh channels: the bare grpc.aio loop
(the baseline), two bare consumers of gRPC's sync API in a thread (default, and with the
``SingleThreadedUnaryStream`` channel option: the fastest way to read a call from Python we
know, shown so the distance to the limit is visible), the project with a sync listener (its
stream reads in a thread of its own) and with an ``async def`` listener (on the loop), each
also with the mass-change guard off (what the guard's reading of every key costs). Ratios
are per round (neighbours in time), reported as the median. Client CPU is the process's.

    .venv/bin/python benchmarks/bench_throughput.py [--quick] [--only B1|B2]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
import grpc.aio
import grpc.experimental
from _common import (
    Idle,
    Row,
    ServerProcess,
    bench_main,
    cpu_seconds,
    fmt,
    in_turn,
    median,
    parser,
    ratios,
    verdict,
)

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.client.guard import GuardPolicy
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest

METHOD = "/magma.orc8r.Streamer/GetUpdates"

# id -> (updates per batch, value bytes, batches per run (full), batches per run (quick))
CASES = {
    "B1": (100, 100, 2000, 600),
    "B2": (1, 100, 6000, 2000),
}
TARGETS = {"sync": 1.00, "async": 0.95}  # ratio to bare grpc.aio (issue 14)
SINGLE_THREADED = grpc.experimental.ChannelOptions.SingleThreadedUnaryStream


async def bare(address: str, stream: str, n: int) -> tuple[float, float]:
    """The baseline: a bare grpc.aio loop reading the same call. Returns (seconds, cpu s)."""
    async with grpc.aio.insecure_channel(address) as channel:
        await channel.channel_ready()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        call = channel.unary_stream(
            METHOD,
            request_serializer=StreamRequest.SerializeToString,
            response_deserializer=DataUpdateBatch.FromString,
        )(StreamRequest(stream_name=stream))
        got = 0
        while True:
            batch = await call.read()
            if batch is grpc.aio.EOF:
                break
            got += 1
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    assert got == n, (got, n)
    return elapsed, cpu


def bare_sync_in_thread(address: str, stream: str, n: int, single: bool) -> tuple[float, float]:
    """A bare consumer of gRPC's sync API (run in a thread of its own by the caller)."""
    options = [(SINGLE_THREADED, 1)] if single else []
    with grpc.insecure_channel(address, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        call = channel.unary_stream(
            METHOD,
            request_serializer=StreamRequest.SerializeToString,
            response_deserializer=DataUpdateBatch.FromString,
        )(StreamRequest(stream_name=stream))
        got = sum(1 for _ in call)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    assert got == n, (got, n)
    return elapsed, cpu


async def bare_sync(address: str, stream: str, n: int, single: bool) -> tuple[float, float]:
    return await asyncio.to_thread(bare_sync_in_thread, address, stream, n, single)


class SyncNoop(Idle):
    def __init__(self, name: str, n: int, done: Callable[[], None]) -> None:
        super().__init__(name)
        self.left, self._done = n, done

    def update(self, batch: DataUpdateBatch) -> bool:
        self.left -= 1
        if self.left == 0:
            self._done()
        return True


class AsyncNoop(SyncNoop):
    async def update(self, batch: DataUpdateBatch) -> bool:  # type: ignore[override]
        self.left -= 1
        if self.left == 0:
            self._done()
        return True


async def project(
    address: str, stream: str, n: int, cls: type[SyncNoop], guard_off: bool = False
) -> tuple[float, float]:
    registry = StaticRegistry(address)
    guard = GuardPolicy(0.0) if guard_off else None  # None: the default, on
    client = new_streamer_client(
        registry, streaming_interval=60.0, backoff=Backoff(maximum=60.0), guard=guard
    )
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    listener = cls(stream, n, lambda: loop.call_soon_threadsafe(finished.set))
    # Connect first (like the baseline's channel_ready) so both time the call, not the dial.
    await registry.get_channel("streamer", 0).channel_ready()
    sync_channel = registry.get_sync_channel("streamer", 0)
    await asyncio.to_thread(grpc.channel_ready_future(sync_channel).result, 10)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    task = asyncio.create_task(client.stream(listener))
    await finished.wait()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    client.remove_listener(listener)
    await task
    await client.close()
    return elapsed, cpu


async def run_case(cid: str, address: str, quick: bool) -> list[Row]:
    updates, size, full_n, quick_n = CASES[cid]
    n = quick_n if quick else full_n
    stream = f"flood/{n}/{updates}/{size}"
    names = ("bare", "bare-sync", "bare-sync-st", "sync", "async", "sync-off", "async-off")
    # Warm-up (imports, first connection) outside the measurement.
    warm = f"flood/{min(n, 200)}/{updates}/{size}"
    await bare(address, warm, min(n, 200))
    await bare_sync(address, warm, min(n, 200), True)
    await project(address, warm, min(n, 200), AsyncNoop)
    await project(address, warm, min(n, 200), SyncNoop)

    rounds = 3 if quick else 9
    results: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for name in in_turn(rounds, names):
        if name == "bare":
            elapsed, c = await bare(address, stream, n)
        elif name.startswith("bare-sync"):
            elapsed, c = await bare_sync(address, stream, n, name.endswith("-st"))
        else:
            cls = SyncNoop if name.startswith("sync") else AsyncNoop
            elapsed, c = await project(address, stream, n, cls, name.endswith("-off"))
        results[name].append(n / elapsed)
        cpu[name].append(c)
    rows = []
    base = results["bare"]
    what = f"batches/s, {updates} x {size} B"

    def us(name: str) -> str:
        return f"{1e6 * median(cpu[name]) / n:.1f} us"

    fastest = max(("bare-sync", "bare-sync-st"), key=lambda k: median(results[k]))
    labels = {
        "sync": "sync listener",
        "async": "async listener",
        "sync-off": "sync listener, guard off",
        "async-off": "async listener, guard off",
    }
    for name, label in labels.items():
        target = TARGETS[name.removesuffix("-off")]
        ratio = median(ratios(results[name], base))
        limit = median(ratios(results[name], results[fastest]))
        rows.append(
            Row(
                cid,
                f"{what}, {label}",
                fmt(median(base)),
                fmt(median(results[name])),
                f"{ratio:.2f} (>= {target:.2f})",
                verdict(ratio >= target),
                f"{name}: client CPU per batch {us(name)} vs bare aio {us('bare')}; "
                f"{limit:.2f} of the fastest bare consumer ({fastest}, "
                f"{fmt(median(results[fastest]))}/s, {us(fastest)}); {rounds} rounds, "
                f"{n} batches each",
            )
        )
    for name in ("bare-sync", "bare-sync-st"):
        ratio = median(ratios(results[name], base))
        rows.append(
            Row(
                cid,
                f"{what}, {name} (bare sync API in a thread"
                + (", single-threaded)" if name.endswith("st") else ")"),
                fmt(median(base)),
                fmt(median(results[name])),
                f"{ratio:.2f}",
                "info",
                f"{name}: client CPU per batch {us(name)}",
            )
        )
    return rows


async def main_async(only: str, quick: bool) -> list[Row]:
    rows: list[Row] = []
    with ServerProcess() as server:
        for cid in (i for i in only.split(",") if i in CASES):
            rows += await run_case(cid, server.address, quick)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--only", default="B1,B2")
    return bench_main(p, argv, lambda args: main_async(args.only, args.quick))


if __name__ == "__main__":
    sys.exit(main())
