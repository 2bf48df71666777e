"""``streamer top``: a live, refreshing per-stream view of a running host (like ``vector top``).

It polls the host's ``/status`` endpoint every ``interval`` seconds and derives rates from two
successive documents, so it needs nothing from the host beyond what ``streamer status`` reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from streamer.base.logs import escape
from streamer.cli.status import HostUnreachable
from streamer.cli.tables import age, table

__all__ = ["format_top", "watch"]

# Clear the screen and move the cursor home; used only when the output is a terminal.
CLEAR = "\x1b[H\x1b[2J"

Doc = Mapping[str, Any]


def format_top(address: str, doc: Doc, previous: Doc | None, elapsed: float, stamp: str) -> str:
    """One screen: a header, one row per stream with batches/s since ``previous``, readiness."""
    before: dict[str, Mapping[str, Any]] = {}
    if previous is not None:
        before = {str(s.get("stream")): s for s in previous.get("streams", [])}
    header = (
        "STREAM", "PLUGIN", "STATE", "BATCHES/S", "LAST BATCH", "UPDATES", "ERRORS", "BACKOFF",
        "LAST ERROR",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [header]
    for s in doc.get("streams", []):
        name = str(s.get("stream", "?"))
        batches = s.get("batches", 0)
        old = before.get(name)
        rate = "-"
        if old is not None and elapsed > 0 and isinstance(batches, int):
            rate = f"{max(batches - int(old.get('batches', 0)), 0) / elapsed:.1f}"
        backoff = s.get("backoff") or 0
        rows.append(
            (
                escape(name, 40),
                str(s.get("plugin") or "-"),
                str(s.get("state", "?")),
                rate,
                age(s.get("last_batch_age_s"), ""),
                str(s.get("updates", 0)),
                str(s.get("errors", 0)),
                f"{backoff:.1f}s" if backoff else "-",
                escape(str(s.get("last_error") or "-"), 60),
            )
        )
    lines = [f"streamer top - {address} - {stamp} - every stream's state, refreshed"]
    lines += table(rows, free_last=True)
    if len(rows) == 1:
        lines.append("(no streams)")
    if doc.get("ready"):
        lines.append("ready: every stream has received data")
    else:
        not_ready = ", ".join(map(str, doc.get("not_ready") or [])) or "no streams running"
        lines.append(f"not ready: {not_ready}")
    return "\n".join(lines)


def watch(
    address: str,
    fetch: Callable[[], dict[str, Any]],
    *,
    out: TextIO,
    interval: float = 2.0,
    clear: bool = True,
    iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Redraw every ``interval`` s until interrupted (or ``iterations`` screens). A host that
    stops answering is shown as such and polled again: top outlives host restarts."""
    previous: dict[str, Any] | None = None
    previous_at = 0.0
    shown = 0
    while iterations is None or shown < iterations:
        stamp = time.strftime("%H:%M:%S")
        try:
            doc = fetch()
        except HostUnreachable as exc:
            screen = f"streamer top - {address} - {stamp}\n{exc}\n(retrying every {interval:g}s)"
            previous = None
        else:
            now = clock()
            screen = format_top(address, doc, previous, now - previous_at, stamp)
            previous, previous_at = doc, now
        out.write((CLEAR if clear else "") + screen + "\n" + ("" if clear else "\n"))
        out.flush()
        shown += 1
        if iterations is None or shown < iterations:
            sleep(interval)
    return 0
