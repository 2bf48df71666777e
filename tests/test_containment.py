"""Plugin code gets exactly one boundary (issue 11): whatever a listener method, a factory,
``close()`` or an observer raises -- ``SystemExit``, ``KeyboardInterrupt``, a custom
``BaseException`` included -- is that plugin's error, for its stream only; the host waits for
plugin code only under a time bound, and SIGTERM never waits for a reload."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.client.events import Decision
from streamer.client.stream import ListenerFault, StreamRpcError
from streamer.host.checks import LoadFailed
from streamer.host.config import load_config
from streamer.host.host import Host
from streamer.host.observers import PluggyObserver, hookimpl, make_plugin_manager
from streamer.testing import CallHandle, ScriptedServer
from streamer.wire import DataUpdateBatch
from tests.helpers import RunningHost, eventually, jsonl, streamer_env, write_config
from tests.listeners import Recorder
from tests.plugin_fixtures import dists, make_dist


class Boom(BaseException):
    """A custom BaseException subclass, as plugin code might define one."""


class SyncRaiser(Recorder):
    """update() raises ``exc`` on its first batch, then accepts."""

    def __init__(self, name: str, exc: BaseException) -> None:
        super().__init__(name)
        self.exc: BaseException | None = exc

    def update(self, batch: DataUpdateBatch) -> Any:
        exc, self.exc = self.exc, None
        if exc is not None:
            self.batches.append(batch)
            raise exc
        return super().update(batch)


class AsyncRaiser:
    def __init__(self, name: str, exc: BaseException) -> None:
        self.name = name
        self.exc: BaseException | None = exc
        self.batches: list[DataUpdateBatch] = []
        self.errors: list[BaseException] = []

    async def get_extra_args(self) -> None:
        return None

    async def update(self, batch: DataUpdateBatch) -> bool:
        exc, self.exc = self.exc, None
        if exc is not None:
            raise exc
        self.batches.append(batch)
        return True

    async def report_error(self, error: BaseException) -> BaseException | None:
        self.errors.append(error)
        return None


class ExtraArgsExit(Recorder):
    def get_extra_args(self) -> Any:
        self.extra_calls += 1
        if self.extra_calls == 1:
            raise Boom("extra args")
        return None


class ReportErrorExits(Recorder):
    def report_error(self, error: BaseException) -> Any:
        self.errors.append(error)
        raise SystemExit(3)


class ReportErrorReturnsExit(Recorder):
    def report_error(self, error: BaseException) -> Any:
        self.errors.append(error)
        return KeyboardInterrupt()


class ExitingObserver:
    @hookimpl
    def streamer_update_done(self) -> None:
        raise SystemExit("observer bug")


@pytest.mark.usefixtures("listener_path")
async def test_base_exceptions_from_listener_methods_stay_in_their_stream(
    streamer_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def data(call: CallHandle) -> None:
        await call.push({call.stream: b"x"})
        await call.end()  # poll style: the healthy stream calls again after the interval

    streamer_server.default = data
    pm = make_plugin_manager()
    pm.register(ExitingObserver(), "exiting-observer")
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        streaming_interval=0.05,
        backoff=Backoff(initial=0.01, multiplier=1.0, maximum=0.01, jitter=0.0),
        observer=PluggyObserver(pm),
        rng=random.Random(1),
    )
    retrying: dict[str, Any] = {
        "sync-exit": SyncRaiser("sync-exit", SystemExit(2)),
        "sync-interrupt": SyncRaiser("sync-interrupt", KeyboardInterrupt()),
        "async-boom": AsyncRaiser("async-boom", Boom("async")),
        "async-exit": AsyncRaiser("async-exit", SystemExit(4)),
        "extra-args": ExtraArgsExit("extra-args"),
    }
    stopping = {
        "reporter-exits": ReportErrorExits("reporter-exits", verdicts=[ValueError("bug")]),
        "reporter-returns": ReportErrorReturnsExit("reporter-returns", verdicts=[ValueError("x")]),
    }
    healthy = Recorder("healthy")
    everyone = {**retrying, **stopping, "healthy": healthy}
    tasks = {n: asyncio.create_task(client.stream(x)) for n, x in everyone.items()}
    try:
        for name in stopping:
            with pytest.raises(ListenerFault) as info:
                await asyncio.wait_for(tasks[name], 5)
            assert isinstance(info.value.__cause__, (SystemExit, KeyboardInterrupt)), name
        for name, listener in retrying.items():
            await eventually(lambda x=listener: x.batches and x.errors, f"{name} went on")
            (error,) = listener.errors
            assert isinstance(error, ListenerFault), (name, error)
            assert isinstance(error.__cause__, (SystemExit, KeyboardInterrupt, Boom)), name
            assert repr(name) in str(error)
        await eventually(lambda: len(healthy.batches) >= 3, "the healthy stream keeps polling")
        assert healthy.errors == []
        assert "observer 'exiting-observer' failed in streamer_update_done" in caplog.text
    finally:
        for x in everyone.values():
            client.remove_listener(x)
        await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), 5)
        await client.close()


# -- host level ----------------------------------------------------------------------------------

TROUBLE_MODULE = """
import json, pathlib, time


class Boom(BaseException):
    pass


RAISE = {"exit": SystemExit, "interrupt": KeyboardInterrupt, "boom": Boom}


class Trouble:
    def __init__(self, name, cfg):
        self.name, self.cfg, self.out = name, cfg, pathlib.Path(cfg["out"])

    def get_extra_args(self):
        return None

    def update(self, batch):
        if self.cfg.get("update"):
            raise RAISE[self.cfg["update"]](f"{self.name}: update says no")
        with self.out.open("a") as f:
            f.write(json.dumps({"stream": self.name, "keys": [u.key for u in batch.updates]}))
            f.write("\\n")
        return True

    def report_error(self, error):
        return None

    def close(self):
        if self.cfg.get("close"):
            raise RAISE[self.cfg["close"]](f"{self.name}: close says no")


def factory(config):
    if config.get("factory") == "hang":
        out = pathlib.Path(config["out"])
        pathlib.Path(f"{out}.factory-entered").touch()
        release = pathlib.Path(f"{out}.release")
        deadline = time.monotonic() + 600
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    elif config.get("factory"):
        raise RAISE[config["factory"]]("factory says no")
    return [Trouble(s, config) for s in config["streams"]]
"""


def trouble_site(site: Path, *names: str) -> Path:
    for name in names:
        module = f"trouble_{name}"
        make_dist(
            site, f"trouble-{name}", entry_points={name: f"{module}:factory"},
            modules={module: TROUBLE_MODULE},
        )  # fmt: skip
    return site


async def _push_server(server: ScriptedServer) -> None:
    async def data(call: CallHandle) -> None:
        await call.push({"k0": b"v0"})
        await call.wait_closed(None)

    server.default = data


@pytest.mark.slow
async def test_sigterm_during_a_hung_reload_exits_within_shutdown_timeout(
    streamer_server: ScriptedServer, tmp_path: Path
) -> None:
    """update() and close() raising SystemExit only hurt their own stream; a SIGHUP whose new
    plugin's factory hangs does not delay SIGTERM (shutdown_timeout = 1 s)."""
    await _push_server(streamer_server)
    site = trouble_site(tmp_path / "site", "good", "exiter", "hanger")
    out = tmp_path / "out.jsonl"
    plugins: dict[str, dict[str, object]] = {
        "good": {"streams": ["g1"], "out": str(out)},
        "exiter": {"streams": ["x1"], "out": str(out), "update": "exit", "close": "exit"},
    }
    streaming = {"shutdown_timeout": 1.0}
    cfg = write_config(tmp_path / "streamer.toml", streamer_server.address, plugins,
                       streaming=streaming)  # fmt: skip
    host = await RunningHost.start(cfg, tmp_path / "host.log", env=streamer_env(site))
    try:
        await eventually(lambda: any(r["stream"] == "g1" for r in jsonl(out)), "g1", timeout=15)
        await eventually(
            lambda: (
                host.logtext().count("update raised: ListenerFault") >= 1
                and sum(r.stream_name == "x1" for r in streamer_server.requests) >= 2
            ),
            "the exiter's SystemExit reported as its own error, and retried",
        )
        assert host.proc.returncode is None
        hanging = {**plugins, "hanger": {"streams": ["h1"], "out": str(out), "factory": "hang"}}
        write_config(cfg, streamer_server.address, hanging, streaming=streaming)
        host.proc.send_signal(signal.SIGHUP)
        entered = Path(f"{out}.factory-entered")
        await eventually(entered.exists, "the reload is inside the hung factory", timeout=10)
        host.proc.send_signal(signal.SIGTERM)
        # shutdown_timeout (1 s) plus a small constant; before, this waited for the factory.
        code = await host.stop(timeout=6)
    finally:
        Path(f"{out}.release").touch()
        if host.proc.returncode is None:
            host.proc.kill()
            await host.proc.wait()
    text = host.logtext()
    assert code == 0, text
    assert "reload abandoned" in text
    assert "close() of stream x1 failed: ListenerFault" in text


async def test_factory_that_hangs_at_start_is_a_load_problem(
    streamer_server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = trouble_site(tmp_path / "site", "hanger", "exiter")
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "out.jsonl"
    plugins = {"hanger": {"streams": ["h1"], "out": str(out), "factory": "hang"}}
    cfg = write_config(tmp_path / "streamer.toml", streamer_server.address, plugins)
    host = Host(load_config(cfg), distributions=lambda: dists(site), plugin_timeout=0.5)  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(LoadFailed, match=r"did not finish within 0.5 s"):
            await asyncio.wait_for(host.run(), 10)
    finally:
        Path(f"{out}.release").touch()
    # A factory raising SystemExit / KeyboardInterrupt / a custom BaseException: a problem
    # of that plugin, reported with the others, never the end of the host.
    for how in ("exit", "interrupt", "boom"):
        plugins = {"exiter": {"streams": ["e1"], "out": str(out), "factory": how}}
        cfg = write_config(tmp_path / "streamer.toml", streamer_server.address, plugins)
        host = Host(load_config(cfg), distributions=lambda: dists(site))  # type: ignore[arg-type,return-value]
        with pytest.raises(LoadFailed, match=r"trouble-exiter\[exiter\]: factory raised"):
            await asyncio.wait_for(host.run(), 10)


async def test_partial_reload_reports_the_running_config_and_warns_until_restarted(
    streamer_server: ScriptedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _push_server(streamer_server)
    site = trouble_site(tmp_path / "site", "good")
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "out.jsonl"
    path = tmp_path / "streamer.toml"
    cfg = write_config(
        path, streamer_server.address, {"good": {"streams": ["g1"], "out": str(out)}}
    )
    host = Host(
        load_config(cfg),
        reload_config=lambda: load_config(path),
        distributions=lambda: dists(site),  # type: ignore[arg-type,return-value]
    )
    caplog.set_level(logging.INFO)
    run = asyncio.create_task(host.run())
    try:
        await eventually(lambda: any(r["stream"] == "g1" for r in jsonl(out)), "g1")
        # [cloud] changes need a restart; the plugin change is applied.
        write_config(path, streamer_server.address,
                     {"good": {"streams": ["g1", "g2"], "out": str(out)}},
                     cloud={"gateway_id": "gw-new"})  # fmt: skip
        restart = "changes to 'cloud' take effect after a restart"
        for reload in (1, 2, 3):
            host.request_reload()
            await eventually(lambda n=reload: caplog.text.count(restart) == n, f"reload {reload}")
            await eventually(lambda: "g2" in host.streams(), "the plugin change applied")
            assert host.config.require_cloud().gateway_id == ""  # what runs, not the file
            assert host.config.plugin_table("good")["streams"] == ["g1", "g2"]
        assert all(r.stream_name != "g2" or r.gatewayId == "" for r in streamer_server.requests)
    finally:
        host.request_shutdown()
        assert await asyncio.wait_for(run, 10) == 0


# -- the error hook says which event -------------------------------------------------------------


class OwnRpcCall:
    """An async listener whose update() makes its own gRPC call, which fails, and lets the
    AioRpcError out: a listener error, not a failed GetUpdates."""

    def __init__(self, name: str, dead: str) -> None:
        self.name = name
        self.dead = dead
        self.errors: list[BaseException] = []

    async def get_extra_args(self) -> None:
        return None

    async def update(self, batch: DataUpdateBatch) -> bool:
        async with grpc.aio.insecure_channel(self.dead) as channel:
            await channel.unary_unary("/own.Service/Call")(b"", timeout=5)
        return True

    async def report_error(self, error: BaseException) -> BaseException | None:
        self.errors.append(error)
        return None


class OwnSyncRpcCall(OwnRpcCall):
    """The same with sync methods (its stream runs in a thread of its own): its update() lets
    the sync API's error out."""

    def get_extra_args(self) -> None:  # type: ignore[override]
        return None

    def update(self, batch: DataUpdateBatch) -> bool:  # type: ignore[override]
        with grpc.insecure_channel(self.dead) as channel:
            channel.unary_unary("/own.Service/Call")(b"", timeout=5)
        return True

    def report_error(self, error: BaseException) -> BaseException | None:  # type: ignore[override]
        self.errors.append(error)
        return None


class EventCollector:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Decision]] = []

    @hookimpl
    def streamer_error_reported(self, error: BaseException, decision: Decision, event: str) -> None:
        self.events.append((event, type(error).__name__, decision))


@pytest.mark.parametrize("cls", [OwnRpcCall, OwnSyncRpcCall], ids=["loop", "thread"])
async def test_listener_raising_its_own_rpc_error_is_not_a_call_failure(
    streamer_server: ScriptedServer, caplog: pytest.LogCaptureFixture, cls: type[OwnRpcCall]
) -> None:
    from streamer.host.observers import LoggingObserver
    from streamer.observability.metrics import MetricsObserver
    from tests.helpers import free_port

    async def data(call: CallHandle) -> None:
        await call.push({"k": b"v"})
        await call.wait_closed(None)

    streamer_server.default = data
    metrics = MetricsObserver({"s1": "plug"})
    collector = EventCollector()
    pm = make_plugin_manager()
    for name, obs in (("log", LoggingObserver({"s1": "plug"})), ("metrics", metrics),
                      ("collector", collector)):  # fmt: skip
        pm.register(obs, name)
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        backoff=Backoff(initial=0.01, maximum=0.01, jitter=0.0),
        observer=PluggyObserver(pm),
    )
    listener = cls("s1", f"127.0.0.1:{free_port()}")
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(client.stream(listener))
    try:
        await eventually(lambda: len(collector.events) >= 2, "two errors", timeout=15)
    finally:
        client.remove_listener(listener)
        await task
        await client.close()
    raised = grpc.aio.AioRpcError if cls is OwnRpcCall else grpc.RpcError
    assert listener.errors and all(type(e) is not StreamRpcError for e in listener.errors)
    assert all(isinstance(e, raised) for e in listener.errors)
    name = type(listener.errors[0]).__name__
    assert {e for e, _, _ in collector.events} == {"update raised"}
    kinds = {labels["kind"] for labels in _error_labels(metrics)}
    assert kinds == {"listener_exception"}, kinds
    lines = [r.getMessage() for r in caplog.records if r.name == "streamer.plugin.plug"]
    failures = [m for m in lines if name in m or "UNAVAILABLE" in m]
    assert failures and all(m.startswith(f"stream s1: update raised: {name}") for m in failures)
    assert not any("RPC failed" in m or "GetUpdates failed" in m for m in lines), lines


def _error_labels(metrics: Any) -> list[dict[str, str]]:
    return [
        s.labels
        for family in metrics.registry.collect()
        if family.name == "streamer_errors"
        for s in family.samples
        if s.name == "streamer_errors_total" and s.value > 0
    ]


async def test_reload_with_a_hung_factory_is_rejected_after_the_time_bound(
    streamer_server: ScriptedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _push_server(streamer_server)
    site = trouble_site(tmp_path / "site", "good", "hanger")
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "out.jsonl"
    path = tmp_path / "streamer.toml"
    good = {"good": {"streams": ["g1"], "out": str(out)}}
    cfg = write_config(path, streamer_server.address, good)
    host = Host(load_config(cfg), reload_config=lambda: load_config(path),
                distributions=lambda: dists(site), plugin_timeout=0.5)  # type: ignore[arg-type,return-value]  # fmt: skip
    run = asyncio.create_task(host.run())
    try:
        await eventually(lambda: any(r["stream"] == "g1" for r in jsonl(out)), "g1")
        hanger = {"streams": ["h1"], "out": str(tmp_path / "h.jsonl"), "factory": "hang"}
        write_config(path, streamer_server.address, {**good, "hanger": hanger})
        host.request_reload()
        await eventually(lambda: "did not finish within 0.5 s" in caplog.text, "rejected")
        assert "reload rejected, keeping the running config: loading hanger" in caplog.text
        assert host.streams() == {"g1": "good"} and host.config.plugins == ("good",)
        assert not run.done()
    finally:
        Path(f"{tmp_path / 'h.jsonl'}.release").touch()
        host.request_shutdown()
        assert await asyncio.wait_for(run, 10) == 0


class HangingStop:
    """An observer whose streamer_host_stopping never returns (until released)."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()

    @hookimpl
    def streamer_host_stopping(self) -> None:
        self.release.wait(600)


async def test_observer_hanging_at_shutdown_does_not_hold_the_host(
    streamer_server: ScriptedServer, tmp_path: Path, sink_site: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    await _push_server(streamer_server)
    out = tmp_path / "out.jsonl"
    cfg = write_config(tmp_path / "s.toml", streamer_server.address,
                       {"sink": {"streams": ["s1"], "out": str(out)}},
                       streaming={"shutdown_timeout": 0.5})  # fmt: skip
    hanging = HangingStop()
    host = Host(load_config(cfg), distributions=lambda: dists(sink_site),  # type: ignore[arg-type,return-value]
                extra_observers=[hanging])  # fmt: skip
    run = asyncio.create_task(host.run())
    try:
        await eventually(out.exists, "streaming")
        host.request_shutdown()
        assert await asyncio.wait_for(run, 5) == 0  # it waited 1 s (the bound's floor), not 600
        assert "streamer_host_stopping did not return within 1.0 s" in caplog.text
    finally:
        hanging.release.set()
