"""Logging while streams run: one logger per plugin, one line per state change (per batch only at
DEBUG), never values, never keys at INFO and above; `--log-format json` lines parse."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from streamer import Backoff, StaticRegistry
from streamer.client.client import new_streamer_client
from streamer.host.logsetup import configure_logging
from streamer.host.observers import LoggingObserver, PluggyObserver, make_plugin_manager
from streamer.server.reference import ReferenceServer
from streamer.server.sources import MemorySource
from streamer.testing import ScriptedServer
from streamer.wire import DataUpdate, DataUpdateBatch
from tests import helpers
from tests.helpers import RunningHost, write_config
from tests.listeners import Recorder, RecordingSleep

# Every test runs a sync listener in its own thread and an async one on the event loop.
pytestmark = pytest.mark.usefixtures("listener_path")

SECRET_KEY = "IMSI001019999999999"
SECRET_VALUE = b"Ki=465B5CE8B199B49FAA5F0A2EE238A6BC"


def batch(n: int) -> DataUpdateBatch:
    return DataUpdateBatch(
        updates=[DataUpdate(key=f"{SECRET_KEY}{i}", value=SECRET_VALUE) for i in range(n)]
    )


# Poll every 20 ms for up to 15 s.
eventually = functools.partial(helpers.eventually, timeout=15.0, interval=0.02)


def leaks(text: str) -> bool:
    return SECRET_KEY in text or SECRET_VALUE.decode() in text or "465B5CE8" in text


async def test_in_process_lines_per_state_change_not_per_batch(
    streamer_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pm = make_plugin_manager()
    pm.register(LoggingObserver({"s1": "myplug"}), "log-observer")
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        streaming_interval=5.0,
        backoff=Backoff(initial=1.0, jitter=0.0),
        sleep=RecordingSleep(),
        observer=PluggyObserver(pm),
    )
    listener = Recorder("s1", verdicts=[True] * 10 + [RuntimeError("disk full")])
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call("s1")
    for _ in range(10):
        await call.push(batch(3))
    await eventually(lambda: len(listener.batches) == 10, "10 batches")
    await call.fail(grpc.StatusCode.UNAVAILABLE, "cloud restarting")
    call = await streamer_server.next_call("s1")
    await call.push(batch(2))  # update raises this time
    call = await streamer_server.next_call("s1")
    await call.push(batch(1))
    await eventually(lambda: len(listener.batches) == 12, "recovered")
    client.remove_listener(listener)
    await task
    await client.close()

    mine = [r for r in caplog.records if r.name.startswith("streamer.plugin.")]
    assert {r.name for r in mine} == {"streamer.plugin.myplug"}
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    for r in caplog.records:
        text = r.getMessage()
        assert SECRET_VALUE.decode() not in text, (r.name, text)  # values: never, at any level
        if r.levelno >= logging.INFO:
            assert not leaks(text), (r.name, r.levelname, text)

    per_batch = [r for r in mine if "batch of" in r.getMessage()]
    assert len(per_batch) == 12 and {r.levelno for r in per_batch} == {logging.DEBUG}
    messages = [(r.levelname, r.getMessage()) for r in loud if r.name == "streamer.plugin.myplug"]
    # 10 batches on one call: one INFO line, then one per error / retry / recovery.
    assert messages == [
        ("INFO", "stream s1: streaming"),
        (
            "WARNING",
            "stream s1: RPC failed: UNAVAILABLE: cloud restarting; listener decided to continue",
        ),
        ("INFO", "stream s1: next call in 1.0 s (backoff)"),
        ("INFO", "stream s1: streaming"),
        (
            "WARNING",
            "stream s1: update raised: RuntimeError: disk full; listener decided to continue",
        ),
        ("INFO", "stream s1: next call in 1.6 s (backoff)"),
        ("INFO", "stream s1: streaming"),
        ("INFO", "stream s1: stopped"),
    ]


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_formatter_lines_parse_with_exceptions() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    log = logging.getLogger("streamer.plugin.demo")
    log.info("stream %s: streaming", "s1")
    log.debug("hidden at INFO")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("stream %s: failed", "s1")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"ts", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == "streamer.plugin.demo"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert "ValueError: boom" in second["exc"]


@pytest.mark.usefixtures("restore_root_logger")
def test_human_format_is_the_default() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("streamer.plugin.demo").warning("stream s1: hello")
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d WARNING streamer\.plugin\.demo: stream s1: hello\n", out.getvalue()
    )


@pytest.mark.slow
@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_streamer_run_json_logs_parse_and_hold_no_secrets(tmp_path: Path, level: str) -> None:
    source = MemorySource({"s1": {SECRET_KEY: SECRET_VALUE}, "s2": {SECRET_KEY: SECRET_VALUE}})
    server = ReferenceServer(source, "push", modes={"s1": "poll"})
    await server.start()
    cfg = write_config(
        tmp_path / "streamer.toml",
        server.address,
        {"log": {"streams": ["s1", "s2", "missing"], "level": "DEBUG"}},
        streaming={"shutdown_timeout": None},
    )
    log = tmp_path / "host.log"
    host = await RunningHost.start(
        cfg, log, "--log-format", "json", "--log-level", level, cwd=tmp_path
    )
    try:
        # s1 is polled (a new call every 0.2 s); s2 gets pushed changes; "missing" keeps failing.
        await eventually(lambda: log.read_text().count("does not exist") >= 3, "retries")
        for i in range(5):
            source.set("s2", f"{SECRET_KEY}{i}", SECRET_VALUE)
        await asyncio.sleep(1.0)
    finally:
        code = await host.stop()
        await server.stop(0)
    text = log.read_text()
    assert code == 0, text
    records = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert not any(SECRET_VALUE.decode() in line for line in text.splitlines())
    for r in records:
        if r["level"] != "DEBUG":
            assert not leaks(json.dumps(r)), r
    by_msg = [
        r["message"]
        for r in records
        if r["logger"] == "streamer.plugin.log" and r["level"] != "DEBUG"
    ]
    assert by_msg.count("stream s1: streaming") == 1  # polled many times: one INFO line
    assert by_msg.count("stream s2: streaming") == 1
    assert any(m.startswith("stream missing: RPC failed: UNAVAILABLE") for m in by_msg)
    debug = [r for r in records if r["level"] == "DEBUG"]
    if level == "DEBUG":
        assert any("batch of" in r["message"] for r in debug)
    else:
        assert debug == []
