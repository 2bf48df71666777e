"""B1/B2: throughput of one stream into a no-op listener vs a bare grpc.aio read loop.

The server (push_server.py) runs in its own process and writes pre-serialized batches as fast as
flow control allows. Each round runs the bare loop, the project with a sync listener, the
project with an ``async def`` listener, and that again with the mass-change guard off (what the
guard's reading of every key costs), back to back on fresh channels; ratios are per round
(neighbours in time), reported as the median.

    .venv/bin/python benchmarks/bench_throughput.py [--quick] [--only B1|B2]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc.aio
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

# id -> (updates per batch, value bytes, batches per run (full), batches per run (quick), target)
CASES = {
    "B1": (100, 100, 2000, 600, 0.90),
    "B2": (1, 100, 6000, 2000, 0.80),
}


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


class AsyncNoopUnguarded(AsyncNoop):
    """The async listener with the mass-change guard off."""


async def project(address: str, stream: str, n: int, cls: type[SyncNoop]) -> tuple[float, float]:
    registry = StaticRegistry(address)
    guard = GuardPolicy(0.0) if cls is AsyncNoopUnguarded else None  # None: the default, on
    client = new_streamer_client(
        registry, streaming_interval=60.0, backoff=Backoff(maximum=60.0), guard=guard
    )
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    listener = cls(stream, n, lambda: loop.call_soon_threadsafe(finished.set))
    # Connect first (like the baseline's channel_ready) so both time the call, not the dial.
    await registry.get_channel("streamer", 0).channel_ready()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    task = asyncio.create_task(client.stream(listener))
    await finished.wait()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    client.remove_listener(listener)
    await task
    await client.close()
    return elapsed, cpu


async def run_case(cid: str, address: str, quick: bool) -> list[Row]:
    updates, size, full_n, quick_n, target = CASES[cid]
    n = quick_n if quick else full_n
    stream = f"flood/{n}/{updates}/{size}"
    cpu: dict[str, list[float]] = {"bare": [], "sync": [], "async": [], "unguarded": []}
    # Warm-up (imports, first connection) outside the measurement.
    await bare(address, f"flood/{min(n, 200)}/{updates}/{size}", min(n, 200))
    await project(address, f"flood/{min(n, 200)}/{updates}/{size}", min(n, 200), AsyncNoop)

    rounds = 3 if quick else 9
    results: dict[str, list[float]] = {k: [] for k in cpu}
    variants = [
        ("bare", None),
        ("sync", SyncNoop),
        ("async", AsyncNoop),
        ("unguarded", AsyncNoopUnguarded),
    ]
    for name, cls in in_turn(rounds, variants):
        if cls is None:
            elapsed, c = await bare(address, stream, n)
        else:
            elapsed, c = await project(address, stream, n, cls)
        results[name].append(n / elapsed)
        cpu[name].append(c)
    rows = []
    base = results["bare"]
    what = f"batches/s, {updates} x {size} B"
    labels = {
        "sync": "sync listener",
        "async": "async listener",
        "unguarded": "async listener, guard off",
    }
    for name, label in labels.items():
        ratio = median(ratios(results[name], base))
        cpu_ratio = median(ratios(cpu[name], cpu["bare"]))
        rows.append(
            Row(
                cid,
                f"{what}, {label}",
                fmt(median(base)),
                fmt(median(results[name])),
                f"{ratio:.2f} (>= {target:.2f})",
                verdict(ratio >= target),
                f"{label}: client CPU per batch {1e6 * median(cpu[name]) / n:.1f} us vs bare "
                f"{1e6 * median(cpu['bare']) / n:.1f} us (x{cpu_ratio:.2f}); {rounds} rounds, "
                f"{n} batches each",
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
