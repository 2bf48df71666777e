"""B3: 1,000 concurrent streams in one host process: time until all stream, RSS per stream.

Every measurement is a fresh client process (VmRSS from /proc/self/status after imports, then
again once every stream has its first batch); the server (push_server.py, ``hold`` streams: one
batch, then the call stays open) is another process. Variants, alternated per round:

- ``bare``: bare grpc.aio, one channel, N calls each reading its first message;
- ``project``: ``new_streamer_client`` with the default ``max_streams_per_channel=100``
  (N/100 connections), sync listeners (what most plugins are) and async listeners;
- ``project-1ch``: ``max_streams_per_channel`` >= N (one connection, like the baseline).

    .venv/bin/python benchmarks/bench_streams.py [--quick] [--streams 1000]
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    AsyncIdle,
    Idle,
    Row,
    ServerProcess,
    bench_main,
    fmt,
    in_turn,
    median,
    parser,
    ratios,
    rss_kib,
    run_child,
    verdict,
)

TARGET_SECONDS = 2.0
TARGET_RSS_RATIO = 2.0
VARIANTS = {
    "bare": [],
    "project-sync": ["--per-channel", "100"],
    "project-async": ["--per-channel", "100", "--async-listener"],
    "project-sync-1ch": ["--per-channel", "100000"],
}


# -- child processes --------------------------------------------------------------------------


async def child_bare(address: str, n: int) -> dict[str, float]:
    import grpc.aio

    from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest

    rss0 = rss_kib()
    t0 = time.perf_counter()
    channel = grpc.aio.insecure_channel(address)
    method = channel.unary_stream(
        "/magma.orc8r.Streamer/GetUpdates",
        request_serializer=StreamRequest.SerializeToString,
        response_deserializer=DataUpdateBatch.FromString,
    )
    calls = [method(StreamRequest(stream_name=f"hold/{i}")) for i in range(n)]
    first = await asyncio.gather(*(c.read() for c in calls))
    elapsed = time.perf_counter() - t0
    assert all(isinstance(b, DataUpdateBatch) for b in first)
    rss1 = rss_kib()
    for c in calls:
        c.cancel()
    await channel.close()
    return {"seconds": elapsed, "rss0": rss0, "rss1": rss1, "threads": threading.active_count()}


async def child_project(
    address: str, n: int, per_channel: int, use_async: bool
) -> dict[str, float]:
    from streamer import StaticRegistry, StreamState, new_streamer_client
    from streamer.client.events import NullObserver

    loop = asyncio.get_running_loop()
    all_streaming = asyncio.Event()

    class Counter(NullObserver):
        streaming = 0

        def state_changed(self, stream: str, state: StreamState) -> None:
            if state is StreamState.STREAMING:
                self.streaming += 1
                if self.streaming == n:
                    all_streaming.set()

    cls = AsyncIdle if use_async else Idle
    listeners = [cls(f"hold/{i}") for i in range(n)]
    rss0 = rss_kib()
    t0 = time.perf_counter()
    client = new_streamer_client(
        StaticRegistry(address), observer=Counter(), max_streams_per_channel=per_channel
    )
    tasks = [loop.create_task(client.stream(listener)) for listener in listeners]
    await all_streaming.wait()
    elapsed = time.perf_counter() - t0
    # Let every update() finish (the STREAMING state is set before update runs).
    await asyncio.sleep(0.2)
    rss1 = rss_kib()
    threads = threading.active_count()
    for listener in listeners:
        client.remove_listener(listener)
    await asyncio.gather(*tasks)
    await client.close()
    return {"seconds": elapsed, "rss0": rss0, "rss1": rss1, "threads": threads}


def child_main(args: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--child", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--per-channel", type=int, default=100)
    p.add_argument("--async-listener", action="store_true")
    a = p.parse_args(args)
    # Import everything the variant needs before the "before" RSS reading.
    import grpc.aio  # noqa: F401

    import streamer.client.client  # noqa: F401
    from streamer.wire import streamer_pb2  # noqa: F401

    if a.child == "bare":
        out = asyncio.run(child_bare(a.address, a.streams))
    else:
        out = asyncio.run(child_project(a.address, a.streams, a.per_channel, a.async_listener))
    print(json.dumps(out))


# -- the parent ---------------------------------------------------------------------------------


def run(quick: bool, streams: int) -> list[Row]:
    n = 200 if quick else streams
    rounds = 1 if quick else 3
    data: dict[str, list[dict[str, float]]] = {k: [] for k in VARIANTS}
    with ServerProcess() as server:
        for name, extra in in_turn(rounds, list(VARIANTS.items())):
            kind = "bare" if name == "bare" else "project"
            data[name].append(
                run_child(
                    [
                        __file__,
                        "--child",
                        kind,
                        "--address",
                        server.address,
                        "--streams",
                        str(n),
                        *extra,
                    ]
                )
            )

    def per_stream(d: dict[str, float]) -> float:
        return (d["rss1"] - d["rss0"]) / n

    base_rss = [per_stream(d) for d in data["bare"]]
    base_s = [d["seconds"] for d in data["bare"]]
    rows = []
    for name in VARIANTS:
        if name == "bare":
            continue
        rss = [per_stream(d) for d in data[name]]
        secs = [d["seconds"] for d in data[name]]
        ratio = median(ratios(rss, base_rss))
        worst = max(secs)
        threads = median([d["threads"] for d in data[name]])
        rows.append(
            Row(
                "B3",
                f"{n} streams, {name}: RSS KiB/stream",
                fmt(median(base_rss)),
                fmt(median(rss)),
                f"{ratio:.2f} (<= {TARGET_RSS_RATIO:.1f})",
                verdict(ratio <= TARGET_RSS_RATIO),
                f"{name}: all streaming in {fmt(median(secs))} s median / {fmt(worst)} s worst "
                f"(bare {fmt(median(base_s))} s); {threads:.0f} threads; {rounds} rounds",
            )
        )
        rows.append(
            Row(
                "B3",
                f"{n} streams, {name}: s until all streaming (worst)",
                fmt(max(base_s)),
                fmt(worst),
                f"<= {TARGET_SECONDS:.0f} s",
                verdict(worst <= TARGET_SECONDS),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        child_main(argv)
        return 0
    p = parser(__doc__ or "")
    p.add_argument("--streams", type=int, default=1000)
    return bench_main(p, argv, lambda args: run(args.quick, args.streams))


if __name__ == "__main__":
    sys.exit(main())
