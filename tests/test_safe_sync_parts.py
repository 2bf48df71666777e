"""Safe sync, part by part: readiness and staleness with an injected clock, the one WARNING per
hold, and the bounds of ``POST /release`` on the real observability endpoint."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from streamer.cli.status import format_status
from streamer.client.events import StreamState
from streamer.client.guard import GuardPolicy, Hold
from streamer.host.config import load_config
from streamer.host.host import Host
from streamer.host.observers import LoggingObserver
from streamer.observability.http import ObservabilityServer
from streamer.observability.metrics import MetricsObserver
from streamer.testing import ScriptedServer
from tests.helpers import eventually, write_config
from tests.plugin_fixtures import dists
from tests.test_containment import _push_server, trouble_site


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hold(seen: int = 1, digest: str = "sha256:a", resync: bool = True) -> Hold:
    return Hold(resync, 9812, 10000, digest, 0.0, seen, 2)


def observer(staleness: dict[str, float] | None = None) -> tuple[MetricsObserver, Clock]:
    clock = Clock()
    obs = MetricsObserver(
        {"s1": "plug"},
        clock=clock,
        wall=lambda: 1_800_000_000.0 + clock.now,
        staleness=staleness or {},
    )
    obs.streamer_stream_started("s1")
    obs.streamer_host_started(["s1"])
    return obs, clock


def test_a_held_batch_makes_the_stream_not_ready_until_the_hold_ends() -> None:
    obs, clock = observer()
    obs.streamer_state_changed("s1", StreamState.STREAMING)
    assert obs.reasons() == {}
    obs.streamer_batch_held("s1", hold())
    assert obs.reasons() == {"s1": "held snapshot: would delete 9,812 of 10,000 keys"}
    clock.now += 20
    obs.streamer_batch_held("s1", hold(seen=2))
    (row,) = obs.status()["streams"]
    assert row["held"] == {
        "text": "held snapshot: would delete 9,812 of 10,000 keys",
        "snapshot": True,
        "would_delete": 9812,
        "held_keys": 10000,
        "served": 2,
        "remaining": 1,
        "age_s": 20.0,
    }
    assert "s1: held: would delete 9,812 of 10,000 keys (applied after 1 more identical " in (
        format_status(obs.status())
    )
    text = obs.render_metrics()[0].decode()
    assert 'streamer_holds_total{plugin="plug",stream="s1"} 1.0' in text  # one hold, served twice
    assert 'streamer_held_would_delete_keys{plugin="plug",stream="s1"} 9812.0' in text
    obs.streamer_hold_ended("s1", "confirmed")
    assert obs.reasons() == {} and obs.status()["streams"][0]["held"] is None


def test_staleness_counts_from_the_last_confirmed_sync() -> None:
    obs, clock = observer({"s1": 300.0})
    obs.streamer_state_changed("s1", StreamState.STREAMING)
    obs.streamer_update_done("s1", 0.01, True)
    obs.streamer_in_sync("s1")
    obs.streamer_state_changed("s1", StreamState.WAITING)  # a poll call ended: in sync at 1000
    clock.now += 299
    assert obs.reasons() == {}
    clock.now += 2  # 301 s without a confirmation
    since = "2027-01-15T08:16:40Z"  # 1_800_000_000 + 1000, in UTC
    assert obs.reasons() == {"s1": f"stale since {since} (max_staleness 300 s)"}
    row = obs.status()["streams"][0]
    assert row["stale_since"] == since and row["in_sync_age_s"] == 301.0
    assert f"s1: stale since {since} (max_staleness 300 s)" in format_status(obs.status())
    text = obs.render_metrics()[0].decode()
    assert 'streamer_seconds_since_in_sync{plugin="plug",stream="s1"} 301.0' in text
    obs.streamer_in_sync("s1")  # the cloud confirms again
    assert obs.reasons() == {}


def test_an_open_call_with_nothing_held_is_in_sync_but_a_hold_is_not() -> None:
    obs, clock = observer({"s1": 60.0})
    obs.streamer_state_changed("s1", StreamState.STREAMING)  # a push call, quiet for long
    clock.now += 3600
    assert obs.reasons() == {}
    obs.streamer_batch_held("s1", hold())
    obs.streamer_state_changed("s1", StreamState.WAITING)
    clock.now += 61
    assert obs.reasons()["s1"].startswith("held snapshot")  # held is the first reason
    obs.streamer_hold_ended("s1", "released")
    assert obs.reasons()["s1"].startswith("stale since ")


def test_never_stale_without_max_staleness() -> None:
    obs, clock = observer()
    obs.streamer_state_changed("s1", StreamState.STREAMING)
    obs.streamer_state_changed("s1", StreamState.WAITING)
    clock.now += 10**6
    assert obs.reasons() == {}


def test_one_warning_per_hold(caplog: pytest.LogCaptureFixture) -> None:
    obs = LoggingObserver({"s1": "plug"})
    caplog.set_level(logging.DEBUG)
    obs.streamer_batch_held("s1", hold(1))
    obs.streamer_batch_held("s1", hold(2))
    obs.streamer_batch_held("s1", hold(1, digest="sha256:b"))  # a different one replaces it
    obs.streamer_hold_ended("s1", "confirmed")
    obs.streamer_batch_held("s1", hold(1, resync=False, digest=""))  # a new hold
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "stream s1: held snapshot: would delete 9,812 of 10,000 keys; the listener keeps its "
        "data until the cloud serves the same snapshot 2 more time(s) or an operator runs "
        "`streamer release s1`",
        "stream s1: held update: would delete 9,812 of 10,000 keys; the listener keeps its "
        "data until a snapshot passes the guard or an operator runs `streamer release s1`",
    ]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        "stream s1: now held snapshot: would delete 9,812 of 10,000 keys",
        "stream s1: the cloud served the held snapshot again: applied",
    ]


# -- POST /release on the endpoint ------------------------------------------------------------


class _Status:
    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        return b"", "text/plain"

    def status(self) -> dict[str, object]:
        return {"ready": True, "not_ready": [], "streams": []}


class Releaser:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, stream: str) -> dict[str, Any]:
        self.calls.append(stream)
        if stream == "held one":
            return {"stream": stream, "released": True, "known": True, "detail": "released"}
        if stream == "s1":
            return {"stream": stream, "released": False, "known": True, "detail": "nothing"}
        return {"stream": stream, "released": False, "known": False, "detail": "no such"}


def request(
    address: str, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture
def endpoint() -> Any:
    releaser = Releaser()
    server = ObservabilityServer(_Status(), "127.0.0.1", 0, releaser=releaser)
    server.start()
    try:
        yield server, releaser
    finally:
        server.stop()


def test_release_answers_by_outcome(endpoint: Any) -> None:
    server, releaser = endpoint
    assert server.release_allowed
    assert request(server.address, "POST", "/release/held%20one", b"")[0] == 200
    assert request(server.address, "POST", "/release/s1", b"")[0] == 409
    assert request(server.address, "POST", "/release/nosuch", b"")[0] == 404
    assert releaser.calls == ["held one", "s1", "nosuch"]
    assert request(server.address, "GET", "/release/s1")[0] == 404  # POST only
    assert request(server.address, "POST", "/status", b"")[0] == 404
    assert request(server.address, "POST", "/release/", b"")[0] == 400


def test_release_is_bounded_and_refuses_browsers(endpoint: Any) -> None:
    server, releaser = endpoint
    big = request(server.address, "POST", "/release/s1", b"x" * 65)
    assert big[0] == 413
    assert request(server.address, "POST", "/release/s1", b"x" * 10)[0] == 409  # tiny: read
    origin = request(server.address, "POST", "/release/s1", b"", Origin="http://evil.example")
    assert origin[0] == 403 and "web page" in origin[1]["error"]
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(
            b"POST /release/s1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\nx\r\n0\r\n\r\n"
        )
        assert s.recv(100).startswith(b"HTTP/1.0 411")
    assert releaser.calls == ["s1"]  # only the tiny-body request reached the host


def test_release_refused_off_loopback_unless_configured() -> None:
    releaser = Releaser()
    server = ObservabilityServer(_Status(), "0.0.0.0", 0, releaser=releaser)
    server.start()
    try:
        assert not server.release_allowed
        port = server.address.rsplit(":", 1)[1]
        code, doc = request(f"127.0.0.1:{port}", "POST", "/release/held%20one", b"")
        assert code == 403 and "remote_release = true" in doc["error"]
        assert releaser.calls == []
    finally:
        server.stop()
    allowed = ObservabilityServer(_Status(), "0.0.0.0", 0, releaser=releaser, remote_release=True)
    try:
        assert allowed.release_allowed
    finally:
        allowed.stop()
    without = ObservabilityServer(_Status(), "127.0.0.1", 0)  # no releaser: no release
    try:
        assert not without.release_allowed
    finally:
        without.stop()


# -- per-plugin settings at reload ------------------------------------------------------------


async def test_a_reload_changing_a_plugins_guard_restarts_its_streams(
    streamer_server: ScriptedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _push_server(streamer_server)
    site = trouble_site(tmp_path / "site", "good")
    monkeypatch.syspath_prepend(str(site))
    out, path = tmp_path / "out.jsonl", tmp_path / "streamer.toml"
    table: dict[str, object] = {"streams": ["g1"], "out": str(out)}
    write_config(path, streamer_server.address, {"good": table})
    host = Host(
        load_config(path),
        reload_config=lambda: load_config(path),
        distributions=lambda: dists(site),  # type: ignore[arg-type,return-value]
    )
    caplog.set_level(logging.INFO)

    def policy() -> GuardPolicy | None:
        runner = host.client.runner("g1") if host.client is not None else None
        return runner.gate.policy if runner is not None else None

    run = asyncio.create_task(host.run())
    try:
        await eventually(lambda: policy() == GuardPolicy(0.5, 2), "g1 with the defaults")
        overrides = {"guard_max_delete_fraction": "off", "guard_confirmations": 5}
        write_config(path, streamer_server.address, {"good": {**table, **overrides}})
        host.request_reload()
        await eventually(
            lambda: "reload applied: started good; stopped good" in caplog.text, "restart"
        )
        await eventually(lambda: policy() == GuardPolicy(0.0, 5), "g1 with the plugin's own")
        (listener,) = host._running["good"].loaded.listeners
        assert listener.cfg == table  # the host's keys never reach the plugin
    finally:
        host.request_shutdown()
        assert await asyncio.wait_for(run, 10) == 0
