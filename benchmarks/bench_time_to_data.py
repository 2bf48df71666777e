"""B7: time-to-data after the cloud publishes a change.

In one process: ``ReferenceServer`` over a ``MemorySource``, a client with one listener. Each
sample sets a key on the source and times how long until ``update()`` sees the new value.

- push mode: the server pushes the change on the open call;
- poll mode (Magma's cloud: one snapshot per call, then the call ends): changes are published
  at random moments, so the wait is ~uniform in [0, streaming interval] (1 s here).

Magma's baselines are schedules, computed, not run: the Go client sleeps 20 s after a batch and
20 s after the call ends (a ~40 s cycle), the Python client polls every 60 s; a change at a
random moment waits cycle/2 on average and a full cycle at worst.

    .venv/bin/python benchmarks/bench_time_to_data.py [--quick]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Idle, Row, bench_main, fmt, parser, percentile, verdict

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.server.reference import ReferenceServer
from streamer.server.sources import MemorySource

PUSH_TARGET_MS = 10.0
POLL_SLACK_S = 0.05  # one call's round trip on loopback
MAGMA = {"Go": 40.0, "Python": 60.0}


class Seer(Idle):
    """Sets ``seen`` when ``update`` delivers the awaited value of key ``k``."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.want: bytes | None = None
        self.seen_at = 0.0
        self.seen = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def _check(self, batch) -> bool:  # type: ignore[no-untyped-def]
        for u in batch.updates:
            if u.key == "k" and u.value == self.want:
                self.seen_at = time.perf_counter()
                self._loop.call_soon_threadsafe(self.seen.set)
        return True

    def update(self, batch) -> bool:  # type: ignore[no-untyped-def]
        return self._check(batch)


class AsyncSeer(Seer):
    async def update(self, batch) -> bool:  # type: ignore[no-untyped-def, override]
        return self._check(batch)


async def measure(
    mode: str, cls: type[Seer], samples: int, interval: float, pause: float
) -> list[float]:
    source = MemorySource({"s": {"k": b"start"}})
    out: list[float] = []
    async with ReferenceServer(source, mode, record_requests=False) as server:
        client = new_streamer_client(
            StaticRegistry(server.address),
            streaming_interval=interval,
            backoff=Backoff(initial=min(1.0, interval), maximum=interval),
        )
        listener = cls("s")
        listener.want = b"start"
        task = asyncio.create_task(client.stream(listener))
        await asyncio.wait_for(listener.seen.wait(), 10)
        rng = random.Random(7)
        for i in range(samples):
            await asyncio.sleep(rng.uniform(0, pause))
            listener.seen.clear()
            listener.want = f"v{i}".encode()
            t0 = time.perf_counter()
            source.set("s", "k", listener.want)
            await asyncio.wait_for(listener.seen.wait(), interval + 10)
            out.append(listener.seen_at - t0)
        client.remove_listener(listener)
        await task
        await client.close()
    return out


async def run(quick: bool) -> list[Row]:
    rows = []
    n_push = 50 if quick else 300
    for kind, cls in (("sync", Seer), ("async", AsyncSeer)):
        ms = [1000 * s for s in await measure("push", cls, n_push, 20.0, 0.005)]
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        rows.append(
            Row(
                "B7",
                f"push: ms from source.set to update(), p50 / p99, {kind} listener",
                "Go ~20 / 40 s, Py ~30 / 60 s",
                f"{fmt(p50)} / {fmt(p99)}",
                f"p99 < {PUSH_TARGET_MS:g} ms",
                verdict(p99 < PUSH_TARGET_MS),
                f"push {kind}: {len(ms)} samples, max {fmt(max(ms))} ms",
            )
        )
    interval = 0.5 if quick else 1.0
    n_poll = 6 if quick else 24
    secs = await measure("poll", Seer, n_poll, interval, interval)
    mean = sum(secs) / len(secs)
    worst = max(secs)
    go, py = MAGMA["Go"], MAGMA["Python"]
    rows.append(
        Row(
            "B7",
            f"poll, interval {interval:g} s: s to update(), mean / max",
            f"Go {go / 2:g} / {go:g}, Py {py / 2:g} / {py:g} (schedule)",
            f"{fmt(mean)} / {fmt(worst)}",
            f"max <= interval (+{POLL_SLACK_S * 1000:g} ms)",
            verdict(worst <= interval + POLL_SLACK_S),
            f"poll: {n_poll} samples at random moments; min {fmt(min(secs))} s, p50 "
            f"{fmt(percentile(secs, 50))} s (uniform in [0, {interval:g}] has mean "
            f"{interval / 2:g}); with the default 20 s interval: mean ~10 s, max 20 s",
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(parser(__doc__ or ""), argv, lambda args: run(args.quick))


if __name__ == "__main__":
    sys.exit(main())
