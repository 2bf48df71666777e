"""Misbehaving listeners harm only their own stream: one that raises on every batch, one that
blocks (sync, in its worker thread, and async), one whose report_error raises, and, at host
level, a plugin whose import fails on reload (SIGHUP). Others keep streaming, the host stays
up, and the log lines name the plugin or stream at fault."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.server.reference import ReferenceServer
from streamer.server.sources import MemorySource
from streamer.testing import CallHandle, ScriptedServer
from streamer.wire import DataUpdateBatch
from tests.faults import make_sink_site
from tests.helpers import RunningHost, eventually, seen, streamer_env, write_config
from tests.listeners import Recorder

# Every test runs a sync listener in its own thread and an async one on the event loop.
pytestmark = pytest.mark.usefixtures("listener_path")


class MinutesBlocker(Recorder):
    """update() blocks its worker thread for up to ten minutes, until released."""

    blocks = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.entered = threading.Event()

    def update(self, batch: DataUpdateBatch) -> Any:
        self.entered.set()
        self.release.wait(600)
        return super().update(batch)


class AsyncBlocker:
    """An async update() that never returns until released."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.errors: list[BaseException] = []

    async def get_extra_args(self) -> None:
        return None

    async def update(self, batch: DataUpdateBatch) -> bool:
        self.entered.set()
        await self.release.wait()
        return True

    async def report_error(self, error: BaseException) -> BaseException | None:
        self.errors.append(error)
        return None


async def test_misbehaving_listeners_do_not_disturb_others(
    streamer_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def first_batch(call: CallHandle) -> None:
        await call.push({call.stream: b"x"})

    streamer_server.default = first_batch
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        streaming_interval=1.0,
        backoff=Backoff(initial=0.02, multiplier=2.0, maximum=0.1),
        rng=random.Random(4),
    )
    raiser = Recorder("raiser", verdicts=[ValueError(f"bug #{i}") for i in range(1000)])
    blocker = MinutesBlocker("blocker")
    async_blocker = AsyncBlocker("async-blocker")
    bad_reporter = Recorder("bad-reporter", verdicts=[ValueError("bug")], answers=[KeyError])
    healthy = Recorder("healthy")
    everyone: list[Any] = [raiser, blocker, async_blocker, bad_reporter, healthy]
    tasks = {x.name: asyncio.create_task(client.stream(x)) for x in everyone}
    try:
        await asyncio.to_thread(blocker.entered.wait, 5)
        await asyncio.wait_for(async_blocker.entered.wait(), 5)
        with pytest.raises(KeyError):
            await asyncio.wait_for(tasks["bad-reporter"], 5)
        call = await streamer_server.next_call("healthy")
        for i in range(20):
            await call.push({f"k{i}": b"v"})
        await eventually(lambda: len(healthy.batches) == 21, "every batch of the healthy stream")
        await eventually(lambda: len(raiser.errors) >= 3, "the raiser retried with backoff")

        assert healthy.errors == []
        assert all(isinstance(e, ValueError) for e in raiser.errors)
        assert sum(r.stream_name == "raiser" for r in streamer_server.requests) >= 3
        assert not blocker.release.is_set() and blocker.batches == []  # still stuck in update
        assert sum(r.stream_name == "blocker" for r in streamer_server.requests) == 1
        assert "report_error() of stream 'bad-reporter' raised KeyError" in caplog.text
        assert not client.is_streaming("bad-reporter")

        late = Recorder("late")  # the client still takes new streams
        tasks["late"] = asyncio.create_task(client.stream(late))
        await eventually(lambda: late.batches, "a stream added afterwards")
        everyone.append(late)
    finally:
        blocker.release.set()
        async_blocker.release.set()
        for x in everyone:
            client.remove_listener(x)
        results = await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), 5)
        await client.close()
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "NoneType",
        "NoneType",
        "KeyError",
        "NoneType",
        "NoneType",
    ]


# -- host level ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_host_survives_failing_plugin_and_failed_import_on_reload(tmp_path: Path) -> None:
    site = make_sink_site(tmp_path / "site", ["good", "raiser"], broken=["broken"])
    out = tmp_path / "out.jsonl"
    source = MemorySource({"g1": {"k0": b"v0"}, "r1": {"k0": b"v0"}})
    server = ReferenceServer(source, "push")
    await server.start()
    plugins: dict[str, dict[str, object]] = {
        "good": {"streams": ["g1"], "out": str(out)},
        "raiser": {"streams": ["r1"], "out": str(out), "raises": True},
    }
    cfg = write_config(tmp_path / "streamer.toml", server.address, plugins)
    host = await RunningHost.start(cfg, tmp_path / "host.log", env=streamer_env(site))
    proc, text = host.proc, host.logtext
    try:
        await eventually(lambda: seen(out, "g1", "k0"), "good plugin streaming", timeout=15)
        await eventually(
            lambda: "streamer.plugin.raiser: stream r1: update raised: ValueError" in text(),
            "the raiser's failure logged under its plugin's name",
        )
        assert "r1: this listener fails on every batch" in text()

        write_config(cfg, server.address, {**plugins, "broken": {"streams": ["b1"]}})
        proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "reload rejected" in text(), "the reload rejected")
        assert "plug-broken[broken]: cannot import" in text()
        assert "reliability_no_such_module_anywhere" in text()

        source.set("g1", "k1", b"v1")
        await eventually(lambda: seen(out, "g1", "k1"), "good plugin still streaming")
        assert proc.returncode is None  # the host stayed up
        assert sum(r.stream_name == "g1" for r in server.requests) == 1  # never restarted
    finally:
        code = await host.stop()
        await server.stop(0)
    assert code == 0, text()
    errors = [line for line in text().splitlines() if " ERROR " in line]
    assert errors and all("reload rejected" in e or "broken" in e for e in errors), errors
