"""B5: ``remove_listener`` on a quiet open stream until ``stream()`` returns.

Each sample opens a stream on the server process (``hold``: one batch, then the call stays
open with nothing to send), waits until the batch's ``update`` is done and the stream is idle in
its read, then times ``remove_listener`` -> ``stream()`` returning. A second variant removes a
stream sleeping out its streaming interval (the call ended, as Magma's cloud does).

Baseline (a schedule, not run): Magma's Go client checks its flag only between reads, so removal
waits for the next batch, and on Magma's cloud that is the next poll, up to 20 s away.

    .venv/bin/python benchmarks/bench_remove.py [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Idle, Row, ServerProcess, bench_main, fmt, parser, percentile, verdict

from streamer import StaticRegistry, StreamState, new_streamer_client
from streamer.client.events import NullObserver

TARGET_P99_MS = 50.0
MAGMA_GO_WORST_S = 20.0


class Watch(NullObserver):
    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}

    def expect(self, stream: str) -> asyncio.Event:
        self.events[stream] = asyncio.Event()
        return self.events[stream]

    def update_done(self, stream: str, duration: float, verdict: bool | None) -> None:
        if stream.startswith("hold") and stream in self.events:
            self.events[stream].set()

    def state_changed(self, stream: str, state: StreamState) -> None:
        if stream.startswith("flood") and state is StreamState.WAITING and stream in self.events:
            self.events[stream].set()


async def sample(client, watch: Watch, name: str) -> float:  # type: ignore[no-untyped-def]
    listener = Idle(name)
    ready = watch.expect(name)
    task = asyncio.create_task(client.stream(listener))
    await asyncio.wait_for(ready.wait(), 10)
    await asyncio.sleep(0.01)  # idle in call.read() / in the interval sleep
    t0 = time.perf_counter()
    client.remove_listener(listener)
    await task
    return (time.perf_counter() - t0) * 1000


async def run(quick: bool) -> list[Row]:
    n = 30 if quick else 200
    ms: dict[str, list[float]] = {"open": [], "interval": []}
    with ServerProcess() as server:
        watch = Watch()
        client = new_streamer_client(
            StaticRegistry(server.address), streaming_interval=20.0, observer=watch
        )
        for i in range(n):  # alternate the two situations
            ms["open"].append(await sample(client, watch, f"hold/{i}"))
            ms["interval"].append(await sample(client, watch, f"flood/1/1/10/{i}"))
        await client.close()
    rows = []
    for name, what in (("open", "quiet open call"), ("interval", "interval wait")):
        p50, p99 = percentile(ms[name], 50), percentile(ms[name], 99)
        rows.append(
            Row(
                "B5",
                f"remove_listener -> stream() returns, {what}: ms p50 / p99",
                f"<= {MAGMA_GO_WORST_S * 1000:,.0f} (Magma Go, schedule)",
                f"{fmt(p50)} / {fmt(p99)}",
                f"p99 <= {TARGET_P99_MS:g} ms",
                verdict(p99 <= TARGET_P99_MS),
                f"{what}: {n} samples, max {fmt(max(ms[name]))} ms",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(parser(__doc__ or ""), argv, lambda args: run(args.quick))


if __name__ == "__main__":
    sys.exit(main())
