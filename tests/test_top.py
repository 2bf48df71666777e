"""`streamer top`: rates between refreshes, a host that goes away and comes back."""

from __future__ import annotations

import io
from typing import Any

from streamer.cli.status import HostUnreachable
from streamer.cli.top import CLEAR, format_top, watch


def _doc(batches: int, *, ready: bool = True, **extra: Any) -> dict[str, Any]:
    row = {
        "stream": "subs",
        "plugin": "files",
        "state": "streaming",
        "last_batch_age_s": 0.5,
        "batches": batches,
        "updates": batches * 10,
        "errors": 0,
        "last_error": None,
        "backoff": 0.0,
    }
    row.update(extra)
    return {"ready": ready, "not_ready": [] if ready else ["subs"], "streams": [row]}


def test_format_top_rates_from_two_documents() -> None:
    first = format_top("h:1", _doc(10), None, 0.0, "12:00:00")
    assert (
        first.splitlines()[0] == "streamer top - h:1 - 12:00:00 - every stream's state, refreshed"
    )
    header, row = first.splitlines()[1:3]
    assert header.split()[:4] == ["STREAM", "PLUGIN", "STATE", "BATCHES/S"]
    assert row.split()[:5] == ["subs", "files", "streaming", "-", "0.5s"]
    second = format_top("h:1", _doc(30), _doc(10), 4.0, "12:00:04")
    assert second.splitlines()[2].split()[3] == "5.0"
    assert second.splitlines()[-1] == "ready: every stream has received data"


def test_format_top_shows_backoff_and_escapes_errors() -> None:
    doc = _doc(1, ready=False, state="waiting", backoff=2.5, last_error="UNAVAILABLE: a\nb")
    text = format_top("h:1", doc, None, 0.0, "t")
    row = text.splitlines()[2]
    assert "2.5s" in row and "UNAVAILABLE: a\\nb" in row
    assert text.splitlines()[-1] == "not ready: subs"


def test_watch_redraws_and_survives_an_unreachable_host() -> None:
    answers: list[dict[str, Any] | Exception] = [
        _doc(1),
        HostUnreachable("h:1", "connection refused"),
        _doc(5),
        _doc(9),
    ]

    def fetch() -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ticks = iter([0.0, 2.0, 4.0, 6.0])
    slept: list[float] = []
    out = io.StringIO()
    code = watch(
        "h:1", fetch, out=out, interval=2.0, clear=True, iterations=4,
        sleep=slept.append, clock=lambda: next(ticks),
    )  # fmt: skip
    assert code == 0 and slept == [2.0, 2.0, 2.0]
    screens = out.getvalue().split(CLEAR)[1:]
    assert len(screens) == 4
    assert "no streamer host is answering at h:1 (connection refused)" in screens[1]
    # After an outage there is no previous document to rate against; then rates resume.
    assert screens[2].splitlines()[2].split()[3] == "-"
    assert screens[3].splitlines()[2].split()[3] == "2.0"
