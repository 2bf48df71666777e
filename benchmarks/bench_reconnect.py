"""B6: the server goes away for 10 s and comes back; how do 1,000 streams return?

The server process (push_server.py, ``hold`` streams) listens on a fixed port; 1,000 streams
open, the server is SIGKILLed, stays down ``--outage`` seconds (10 by default), and restarts on
the same port. An observer records when each stream is STREAMING again. Targets: every stream
back within the backoff cap x (1 + jitter) of the server's return; no 100 ms window holds more
than 20 % of the reconnects (the fleet does not arrive in one wave).

The documented run uses the defaults (Backoff(): 1 s x1.6, +/-20 %, cap = streaming interval
20 s; default 100 streams per connection). ``--quick`` uses 200 streams, a 2 s outage and a 2 s
cap.

    .venv/bin/python benchmarks/bench_reconnect.py [--quick] [--outage S] [--streams N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from _common import (
    Idle,
    Row,
    ServerProcess,
    bench_main,
    fmt,
    free_port,
    parser,
    percentile,
    verdict,
)

from streamer import Backoff, StaticRegistry, StreamState, new_streamer_client
from streamer.client.events import NullObserver

WINDOW = 0.1
MAX_WINDOW_SHARE = 0.20


class Recorder(NullObserver):
    def __init__(self, n: int) -> None:
        self.n = n
        self.streaming: dict[str, list[float]] = {}
        self.all_streaming = asyncio.Event()
        self.backoffs = 0
        self.since: float = float("inf")
        self.back: set[str] = set()
        self.all_back = asyncio.Event()

    def state_changed(self, stream: str, state: StreamState) -> None:
        if state is not StreamState.STREAMING:
            return
        now = time.monotonic()
        self.streaming.setdefault(stream, []).append(now)
        if len(self.streaming) == self.n:
            self.all_streaming.set()
        if now >= self.since:
            self.back.add(stream)
            if len(self.back) == self.n:
                self.all_back.set()

    def reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        if reason == "backoff":
            self.backoffs += 1


async def run(n: int, outage: float, cap: float, jitter: float = 0.2) -> list[Row]:
    port = free_port()
    server = ServerProcess(port).start()
    rec = Recorder(n)
    client = new_streamer_client(
        StaticRegistry(server.address, max_reconnect_backoff=cap),
        streaming_interval=cap,
        backoff=Backoff(jitter=jitter),
        observer=rec,
    )
    listeners = [Idle(f"hold/{i}") for i in range(n)]
    tasks = [asyncio.create_task(client.stream(x)) for x in listeners]
    try:
        await asyncio.wait_for(rec.all_streaming.wait(), 30)
        server.kill()
        t_down = time.monotonic()
        rec.since = t_down + 0.5  # STREAMING after this is a reconnect
        await asyncio.sleep(outage)
        server = ServerProcess(port)
        await asyncio.get_running_loop().run_in_executor(None, server.start)
        t_up = time.monotonic()
        bound = cap * (1 + jitter)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(rec.all_back.wait(), bound + 10)
    finally:
        for x in listeners:
            client.remove_listener(x)
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        server.stop()
    back = [
        min(t for t in ts if t >= rec.since) for ts in rec.streaming.values() if ts[-1] >= rec.since
    ]
    delays = [b - t_up for b in back]
    missing = n - len(back)
    windows = Counter(int((b - t_up) // WINDOW) for b in back)
    top_window, top_count = windows.most_common(1)[0] if windows else (0, 0)
    share = top_count / n
    worst = max(delays) if delays else float("inf")
    return [
        Row(
            "B6",
            f"{n} streams, {outage:g} s outage: s from server return to stream back, p50 / max",
            "—",
            f"{fmt(percentile(delays, 50))} / {fmt(worst)}",
            f"max <= {bound:g} s (cap {cap:g} s + {jitter:.0%})",
            verdict(missing == 0 and worst <= bound),
            f"{missing} streams not back; {rec.backoffs} backoff waits during the outage; "
            f"reconnects spread over {fmt(worst - min(delays) if delays else 0)} s",
        ),
        Row(
            "B6",
            f"{n} streams: largest share of reconnects in one 100 ms window",
            "—",
            f"{share:.1%}",
            f"<= {MAX_WINDOW_SHARE:.0%}",
            verdict(share <= MAX_WINDOW_SHARE),
            f"busiest window starts {top_window * WINDOW:.1f} s after the server's return "
            f"({top_count} streams); {len(windows)} non-empty windows",
        ),
    ]


def configured(args: argparse.Namespace) -> Coroutine[Any, Any, list[Row]]:
    """``run`` with the defaults the command line left to ``--quick``."""
    n = args.streams or (200 if args.quick else 1000)
    outage = args.outage if args.outage is not None else (2.0 if args.quick else 10.0)
    cap = args.cap or (2.0 if args.quick else 20.0)
    return run(n, outage, cap)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--outage", type=float, default=None, help="seconds down (default 10)")
    p.add_argument("--streams", type=int, default=None, help="default 1000")
    p.add_argument("--cap", type=float, default=None, help="backoff cap (default 20)")
    return bench_main(p, argv, configured)


if __name__ == "__main__":
    sys.exit(main())
