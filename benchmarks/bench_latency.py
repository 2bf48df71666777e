"""B4: push-to-update latency at 100 batches/s over loopback.

The server process (push_server.py, ``rate/100/N``) stamps every one-update batch with
``time.monotonic_ns()`` just before writing it; the listener subtracts that from its own clock
when ``update()`` starts (CLOCK_MONOTONIC is system-wide on Linux). A bare grpc.aio read loop
on the same server is shown for context (the time gRPC itself takes). Variants alternate.

    .venv/bin/python benchmarks/bench_latency.py [--quick]
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc.aio
from _common import Idle, Row, ServerProcess, bench_main, fmt, in_turn, parser, percentile, verdict

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest

RATE = 100
SKIP = 5  # the first batches include connection warm-up
TARGET_P50_MS, TARGET_P99_MS = 1.0, 5.0


def latency_ms(batch: DataUpdateBatch) -> float:
    (sent,) = struct.unpack(">Q", batch.updates[0].value)
    return (time.monotonic_ns() - sent) / 1e6


async def bare(address: str, n: int) -> list[float]:
    out: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_stream(
            "/magma.orc8r.Streamer/GetUpdates",
            request_serializer=StreamRequest.SerializeToString,
            response_deserializer=DataUpdateBatch.FromString,
        )(StreamRequest(stream_name=f"rate/{RATE}/{n}"))
        async for batch in call:
            out.append(latency_ms(batch))
    return out[SKIP:]


class SyncRecorder(Idle):
    def __init__(self, name: str, n: int, done: asyncio.Event) -> None:
        super().__init__(name)
        self.n, self.lat = n, []
        self._done, self._loop = done, asyncio.get_running_loop()

    def _record(self, batch: DataUpdateBatch) -> bool:
        self.lat.append(latency_ms(batch))
        if len(self.lat) == self.n:
            self._loop.call_soon_threadsafe(self._done.set)
        return True

    def update(self, batch: DataUpdateBatch) -> bool:
        return self._record(batch)


class AsyncRecorder(SyncRecorder):
    async def update(self, batch: DataUpdateBatch) -> bool:  # type: ignore[override]
        return self._record(batch)


async def project(address: str, n: int, cls: type[SyncRecorder]) -> list[float]:
    client = new_streamer_client(
        StaticRegistry(address), streaming_interval=60.0, backoff=Backoff(maximum=60.0)
    )
    done = asyncio.Event()
    listener = cls(f"rate/{RATE}/{n}", n, done)
    task = asyncio.create_task(client.stream(listener))
    await done.wait()
    client.remove_listener(listener)
    await task
    await client.close()
    return listener.lat[SKIP:]


async def run(quick: bool) -> list[Row]:
    n = 100 if quick else 300
    rounds = 1 if quick else 2
    lat: dict[str, list[float]] = {"bare": [], "sync": [], "async": []}
    with ServerProcess() as server:
        variants = [("bare", None), ("sync", SyncRecorder), ("async", AsyncRecorder)]
        for name, cls in in_turn(rounds, variants):
            if cls is None:
                lat[name] += await bare(server.address, n)
            else:
                lat[name] += await project(server.address, n, cls)
    rows = []
    b50, b99 = percentile(lat["bare"], 50), percentile(lat["bare"], 99)
    for name in ("sync", "async"):
        p50, p99 = percentile(lat[name], 50), percentile(lat[name], 99)
        rows.append(
            Row(
                "B4",
                f"push->update ms p50 / p99 @{RATE}/s, {name} listener",
                f"{fmt(b50)} / {fmt(b99)} (bare)",
                f"{fmt(p50)} / {fmt(p99)}",
                f"<= {TARGET_P50_MS:g} / <= {TARGET_P99_MS:g} ms",
                verdict(p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS),
                f"{name}: {len(lat[name])} samples, max {fmt(max(lat[name]))} ms",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(parser(__doc__ or ""), argv, lambda args: run(args.quick))


if __name__ == "__main__":
    sys.exit(main())
