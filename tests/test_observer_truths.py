"""Observers as pluggy users expect them, health that tells the truth, and logs that say each
thing once, with its traceback, and cannot be forged by text from the network (issue 11)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.cli.status import format_status
from streamer.host.checks import LoadFailed, load_hooks
from streamer.host.config import config_from_text, load_config
from streamer.host.host import Host
from streamer.host.observers import LoggingObserver, PluggyObserver, hookimpl, make_plugin_manager
from streamer.observability.http import ObservabilityServer
from streamer.observability.metrics import MetricsObserver
from streamer.testing import CallHandle, ScriptedServer
from tests.helpers import RunningHost, eventually, streamer_env, write_config
from tests.listeners import Recorder
from tests.plugin_fixtures import dists, make_dist

# Every test runs a sync listener in its own thread and an async one on the event loop.
pytestmark = pytest.mark.usefixtures("listener_path")

# -- pluggy order and wrappers -------------------------------------------------------------------


def _observers(calls: list[str]) -> list[tuple[str, object]]:
    def make(name: str, **opts: Any) -> object:
        class Obs:
            @hookimpl(**opts)
            def streamer_stream_started(self, stream: str) -> None:
                calls.append(name)

        return Obs()

    return [
        ("last", make("last", trylast=True)),
        ("first-registered", make("first-registered")),
        ("first", make("first", tryfirst=True)),
        ("second-registered", make("second-registered")),
        ("third-registered", make("third-registered")),
    ]


def test_observers_are_called_in_pluggys_order() -> None:
    by_pluggy: list[str] = []
    pm = make_plugin_manager()
    for name, obs in _observers(by_pluggy):
        pm.register(obs, name)
    pm.hook.streamer_stream_started(stream="s")

    by_streamer: list[str] = []
    pm = make_plugin_manager()
    for name, obs in _observers(by_streamer):
        pm.register(obs, name)
    PluggyObserver(pm).stream_started("s")

    assert by_pluggy == [
        "first", "third-registered", "second-registered", "first-registered", "last",
    ]  # fmt: skip
    assert by_streamer == by_pluggy


WRAPPERS = {
    "new-style": """
from streamer.host.observers import hookimpl

@hookimpl(wrapper=True)
def streamer_stream_started(stream):
    return (yield)
""",
    "old-style": """
from streamer.host.observers import hookimpl

@hookimpl(hookwrapper=True)
def streamer_stream_started(stream):
    yield
""",
}


@pytest.mark.parametrize("style", sorted(WRAPPERS))
def test_wrapper_observers_are_refused_at_load(tmp_path: Path, style: str) -> None:
    module = f"wrapping_observer_{style.replace('-', '_')}"
    site = tmp_path / "site"
    make_dist(site, "wrapping-observer", entry_points={"wrap": module},
              modules={module: WRAPPERS[style]}, group="streamer.hooks")  # fmt: skip
    config = config_from_text('plugins = ["x"]\nhooks = ["wrap"]\n', tmp_path / "s.toml")
    import sys

    sys.path.insert(0, str(site))
    try:
        found, problems = load_hooks(config, dists(site))
    finally:
        sys.path.remove(str(site))
        sys.modules.pop(module, None)
    assert found == []
    (problem,) = problems
    kind = "wrapper=True" if style == "new-style" else "hookwrapper=True"
    assert f"streamer_stream_started is a {kind} implementation" in str(problem)
    assert "wrapping-observer" in str(problem)


async def test_wrapper_passed_to_the_host_is_refused(
    streamer_server: ScriptedServer, tmp_path: Path, sink_site: Path
) -> None:
    class Wrapper:
        @hookimpl(hookwrapper=True)
        def streamer_stream_started(self, stream: str) -> Any:
            yield

    cfg = write_config(tmp_path / "s.toml", streamer_server.address,
                       {"sink": {"streams": ["s1"], "out": str(tmp_path / "o")}})  # fmt: skip
    host = Host(load_config(cfg), distributions=lambda: dists(sink_site),  # type: ignore[arg-type,return-value]
                extra_observers=[Wrapper()])  # fmt: skip
    with pytest.raises(LoadFailed, match="hookwrapper=True"):
        await asyncio.wait_for(host.run(), 10)
    assert streamer_server.requests == []  # nothing started


# -- health: a crash-looping stream is not ready -------------------------------------------------


async def _get(address: str, path: str) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    def get() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return await asyncio.to_thread(get)


async def test_crash_looping_stream_is_not_ready_until_it_applies_a_batch(
    streamer_server: ScriptedServer,
) -> None:
    async def poll(call: CallHandle) -> None:
        await call.push({"k": b"v"})
        await call.end()

    streamer_server.default = poll
    metrics = MetricsObserver({"raiser": "p", "healthy": "p"})
    pm = make_plugin_manager()
    pm.register(metrics, "metrics")
    http = ObservabilityServer(metrics, "127.0.0.1", 0)
    http.start()
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        streaming_interval=0.05,
        backoff=Backoff(initial=0.01, maximum=0.01, jitter=0.0),
        observer=PluggyObserver(pm),
        rng=random.Random(2),
    )
    raiser = Recorder("raiser", verdicts=[ValueError(f"bug {i}") for i in range(50)])
    healthy = Recorder("healthy")
    tasks = [asyncio.create_task(client.stream(x)) for x in (raiser, healthy)]
    try:
        await eventually(lambda: len(raiser.errors) >= 3 and healthy.batches, "a crash loop")
        code, ready = await _get(http.address, "/readyz")
        assert code == 503 and ready["not_ready"] == ["raiser"], ready
        _, status = await _get(http.address, "/status")
        row = {r["stream"]: r for r in status["streams"]}["raiser"]
        assert row["failing"] == "update raised" and row["failures_in_a_row"] >= 3
        assert "failing (update raised" in format_status(status)
        assert "raiser" in format_status(status).splitlines()[-1]  # the "not ready" line
        raiser.verdicts.clear()  # it applies the next batch: ready again
        await eventually(lambda: not metrics.not_ready(), "ready after an accepted batch")
        code, _ = await _get(http.address, "/readyz")
        assert code == 200
    finally:
        for x in (raiser, healthy):
            client.remove_listener(x)
        await asyncio.gather(*tasks)
        await client.close()
        http.stop()


# -- logs: once, with the traceback, repeats counted ---------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_listener_exception_logged_with_traceback_and_repeats_counted(
    streamer_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()
    calls = 0

    async def poll(call: CallHandle) -> None:
        nonlocal calls
        calls += 1
        if calls > 4:  # the fifth batch waits until the clock has moved
            await gate.wait()
        await call.push({"k": b"v"})
        await call.end()

    streamer_server.default = poll
    clock = FakeClock()
    seen: list[str] = []

    class Counter:  # registered first, so pluggy calls it after the logging observer
        @hookimpl
        def streamer_error_reported(self, event: str) -> None:
            seen.append(event)

    pm = make_plugin_manager()
    pm.register(Counter(), "counter")
    pm.register(LoggingObserver({"s1": "plug"}, repeat_window=60.0, clock=clock), "log")
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        streaming_interval=0.05,
        backoff=Backoff(initial=0.01, maximum=0.01, jitter=0.0),
        observer=PluggyObserver(pm),
    )
    listener = Recorder("s1", verdicts=[ValueError(f"bug #{i}") for i in range(6)])
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(client.stream(listener))
    try:
        await eventually(lambda: len(seen) == 4, "four failures in the window")
        clock.now += 61  # the window has passed: the next one is logged, with the count
        gate.set()
        await eventually(lambda: len(seen) == 6, "two more")
        await eventually(lambda: len(listener.batches) >= 8, "recovered")
    finally:
        client.remove_listener(listener)
        await task
        await client.close()
    records = [r for r in caplog.records if r.name == "streamer.plugin.plug"]
    failures = [r for r in records if "update raised: ValueError" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.WARNING]
    first, second = failures
    assert first.getMessage().startswith("stream s1: update raised: ValueError: bug #0")
    assert "repeated 3 time(s)" in second.getMessage()
    for record in failures:  # the traceback points at the plugin's own code
        assert record.exc_info is not None
        text = logging.Formatter().formatException(record.exc_info)
        assert re.search(r'tests/listeners\.py", line \d+, in update', text), text
    summary = [r.getMessage() for r in records if "more time(s)" in r.getMessage()]
    assert summary == [
        "stream s1: the last error (update raised) repeated 1 more time(s) before the listener "
        "accepted a batch"
    ]


# -- network text in human logs ------------------------------------------------------------------

FORGED = "boom\n2026-01-01 00:00:00,000 ERROR streamer.host.host: forged line\x1b[31m"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["human", "json"])
async def test_server_details_cannot_forge_log_lines_and_are_logged_once_per_attempt(
    streamer_server: ScriptedServer, tmp_path: Path, fmt: str
) -> None:
    """A real server answers every call with status details holding a newline and a forged
    record. The host logs each failed attempt once, on one escaped line; the log plugin and the
    sink kit (streamer-sqlite) do not log it again; JSON logs stay one object per line."""

    async def refuse(call: CallHandle) -> None:
        await call.fail(grpc.StatusCode.UNAVAILABLE, FORGED)

    streamer_server.default = refuse
    plugins: dict[str, dict[str, object]] = {
        "log": {"streams": ["l1"]},
        "sqlite": {"streams": ["q1"], "path": str(tmp_path / "db.sqlite")},
    }
    cfg = write_config(tmp_path / "streamer.toml", streamer_server.address, plugins,
                       streaming={"backoff_initial": 0.05, "backoff_max": 0.1},
                       tables={"log": {"format": fmt}})  # fmt: skip
    host = await RunningHost.start(cfg, tmp_path / "host.log", env=streamer_env())
    try:
        await eventually(lambda: len(streamer_server.requests) >= 10, "ten refused calls", 20)
    finally:
        code = await host.stop()
    text = host.logtext()
    assert code == 0, text
    lines = text.splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines), text
    assert "\x1b" not in text
    if fmt == "json":
        records = [json.loads(line) for line in lines if line.strip()]
        messages = [r["message"] for r in records]
        assert all("\n" not in m or r.get("exc") for m, r in zip(messages, records, strict=True))
    else:
        messages = lines
    about = [m for m in messages if "boom" in m]
    per_stream = {s: [m for m in about if f"stream {s}:" in m] for s in ("l1", "q1")}
    calls = {s: sum(r.stream_name == s for r in streamer_server.requests) for s in ("l1", "q1")}
    for stream, found in per_stream.items():
        assert found, text
        assert calls[stream] - 1 <= len(found) <= calls[stream], (stream, calls, found)
        assert all("boom\\n2026-01-01" in m and "\\x1b[31m" in m for m in found), found
    assert len(about) == sum(len(f) for f in per_stream.values()), about  # nobody else logs it


def test_human_log_lines_after_the_first_are_indented() -> None:
    """Defence in depth for text that is not escaped (a traceback's exception message): in
    human logs only a record's first line starts at column 0."""
    import io

    from streamer.host.logsetup import configure_logging

    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", "human", out)
    try:
        try:
            raise ValueError(FORGED)
        except ValueError:
            logging.getLogger("streamer.test").exception("listener failed")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    lines = out.getvalue().splitlines()
    assert len(lines) > 3 and "listener failed" in lines[0]
    assert all(line.startswith("    ") for line in lines[1:]), lines


def test_status_last_error_holds_no_control_characters() -> None:
    from streamer.client.events import Decision

    class Refused(Exception):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return FORGED

    metrics = MetricsObserver({"s1": "p"})
    metrics.streamer_stream_started("s1")
    metrics.streamer_error_reported("s1", Refused(), Decision.CONTINUE, "call failed")
    (row,) = metrics.status()["streams"]
    assert row["last_error"].startswith("UNAVAILABLE: boom 2026-01-01")
    assert "\x1b" not in row["last_error"] and "\\x1b[31m" in row["last_error"]
    assert "\x1b" not in format_status(metrics.status())
