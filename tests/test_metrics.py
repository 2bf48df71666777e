"""The metrics observer and its HTTP endpoint, scraped for real (port 0) while streams run against
a real grpc.aio server: the numbers must move as batches, errors and reconnects happen."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer import Backoff, StaticRegistry
from streamer.client.client import Client, new_streamer_client
from streamer.client.events import StreamState
from streamer.client.supervisor import ListenerDeclined
from streamer.host.checks import LoadFailed, check
from streamer.host.config import config_from_text
from streamer.host.observers import PluggyObserver, make_plugin_manager
from streamer.observability.http import ObservabilityServer
from streamer.observability.metrics import MetricsObserver, error_kind, start_observability
from streamer.testing import ScriptedServer
from streamer.wire import DataUpdate, DataUpdateBatch
from tests.listeners import Recorder, RecordingSleep

# Every test runs a sync listener in its own thread and an async one on the event loop.
pytestmark = pytest.mark.usefixtures("listener_path")

SECRET_KEY = "IMSI-SECRET-KEY-4242"
SECRET_VALUE = b"K=SECRET-VALUE-0xDEADBEEF"


def batch(n: int, *, resync: bool = False) -> DataUpdateBatch:
    return DataUpdateBatch(
        updates=[DataUpdate(key=f"{SECRET_KEY}-{i}", value=SECRET_VALUE) for i in range(n)],
        resync=resync,
    )


# -- scraping ------------------------------------------------------------------------------


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


async def http_get(address: str, path: str) -> tuple[int, str, str]:
    """GET in a thread: the server under test and the gRPC server share this event loop."""
    return await asyncio.to_thread(_get, f"http://{address}{path}")


async def scrape(address: str) -> Samples:
    code, ctype, text = await http_get(address, "/metrics")
    assert code == 200 and ctype.startswith("text/plain"), (code, ctype)
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(samples: Samples, name: str, **labels: str) -> float:
    labels.setdefault("stream", "s1")
    labels.setdefault("plugin", "plug")
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Rig:
    server: ScriptedServer
    client: Client
    observer: MetricsObserver
    http: ObservabilityServer
    sleep: RecordingSleep

    @property
    def address(self) -> str:
        return self.http.address

    async def scrape(self) -> Samples:
        return await scrape(self.address)

    async def until(self, predicate: Callable[[Samples], bool], what: str) -> Samples:
        deadline = time.monotonic() + 5
        while True:
            samples = await self.scrape()
            if predicate(samples):
                return samples
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics never showed {what}")
            await asyncio.sleep(0.01)


@pytest.fixture
async def rig(streamer_server: ScriptedServer) -> AsyncIterator[Rig]:
    observer = MetricsObserver({"s1": "plug", "s2": "plug"})
    pm = make_plugin_manager()
    pm.register(observer, "metrics")
    sleep = RecordingSleep()
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        streaming_interval=5.0,
        backoff=Backoff(initial=1.0, multiplier=2.0, jitter=0.0),
        sleep=sleep,
        observer=PluggyObserver(pm),
    )
    http = ObservabilityServer(observer, "127.0.0.1", 0)
    http.start()
    try:
        yield Rig(streamer_server, client, observer, http, sleep)
    finally:
        http.stop()
        await client.close()


async def stop(rig: Rig, listener: Recorder, task: asyncio.Task[None]) -> None:
    rig.client.remove_listener(listener)
    await asyncio.wait_for(task, 5)


# -- tests -----------------------------------------------------------------------------------


async def test_batches_updates_duration_state_and_readiness_move(rig: Rig) -> None:
    assert ":" in rig.address and not rig.address.endswith(":0")
    listener = Recorder("s1")
    task = asyncio.create_task(rig.client.stream(listener))
    call = await rig.server.next_call("s1")

    code, ctype, body = await http_get(rig.address, "/readyz")
    assert code == 503 and ctype == "application/json"
    assert json.loads(body) == {
        "ready": False,
        "not_ready": ["s1"],
        "reasons": {"s1": "no call accepted yet"},
    }
    assert (await http_get(rig.address, "/healthz"))[0] == 200

    await call.push(batch(3, resync=True))
    await call.push(batch(2))
    s = await rig.until(
        lambda s: val(s, "streamer_update_duration_seconds_count") == 2, "2 updates done"
    )
    assert val(s, "streamer_batches_total") == 2
    assert val(s, "streamer_updates_total") == 5
    assert val(s, "streamer_stream_state", state="streaming") == 1
    assert val(s, "streamer_stream_state", state="waiting") == 0
    assert 0 <= val(s, "streamer_seconds_since_last_batch") < 5
    assert val(s, "streamer_backoff_seconds") == 0
    assert s[("streamer_ready", frozenset())] == 1

    code, _, body = await http_get(rig.address, "/readyz")
    assert code == 200 and json.loads(body) == {"ready": True, "not_ready": [], "reasons": {}}

    await asyncio.sleep(0.3)  # the age is computed at scrape time
    later = await rig.scrape()
    assert val(later, "streamer_seconds_since_last_batch") >= 0.3
    # Cardinality: labels name streams, never keys or values.
    code, _, text = await http_get(rig.address, "/metrics")
    assert SECRET_KEY not in text and "SECRET-VALUE" not in text

    await stop(rig, listener, task)
    s = await rig.scrape()
    assert val(s, "streamer_stream_state", state="stopped") == 1
    assert val(s, "streamer_stream_state", state="streaming") == 0


async def test_unavailable_counts_error_reconnect_and_backoff_until_data(rig: Rig) -> None:
    listener = Recorder("s1")
    task = asyncio.create_task(rig.client.stream(listener))
    await (await rig.server.next_call("s1")).fail(grpc.StatusCode.UNAVAILABLE, "cloud down")
    s = await rig.until(
        lambda s: val(s, "streamer_reconnects_total", reason="backoff") == 1, "a reconnect"
    )
    assert val(s, "streamer_errors_total", kind="UNAVAILABLE") == 1
    assert val(s, "streamer_backoff_seconds") == 1.0
    await (await rig.server.next_call("s1")).fail(grpc.StatusCode.UNAVAILABLE, "still down")
    s = await rig.until(
        lambda s: val(s, "streamer_reconnects_total", reason="backoff") == 2, "2nd reconnect"
    )
    assert val(s, "streamer_errors_total", kind="UNAVAILABLE") == 2
    assert val(s, "streamer_backoff_seconds") == 2.0  # exponential, no jitter

    status = json.loads((await http_get(rig.address, "/status"))[2])
    (row,) = status["streams"]
    assert row["errors"] == 2 and row["backoff"] == 2.0
    assert row["last_error"] == "UNAVAILABLE: still down"
    assert row["last_batch_age_s"] is None and status["ready"] is False

    call = await rig.server.next_call("s1")
    assert rig.sleep.delays == [1.0, 2.0]
    await call.push(batch(1))
    s = await rig.until(lambda s: val(s, "streamer_batches_total") == 1, "data")
    await rig.until(lambda s: val(s, "streamer_backoff_seconds") == 0, "backoff reset")
    assert val(s, "streamer_errors_total", kind="UNAVAILABLE") == 2
    await stop(rig, listener, task)


async def test_listener_exception_declined_and_extra_args_kinds(rig: Rig) -> None:
    extras = iter([None, None, "not a message", None])
    listener = Recorder(
        "s1", verdicts=[KeyError(SECRET_KEY), False], extra=lambda n: next(extras, None)
    )
    task = asyncio.create_task(rig.client.stream(listener))

    await (await rig.server.next_call("s1")).push(batch(1))  # update raises
    s = await rig.until(
        lambda s: val(s, "streamer_reconnects_total", reason="backoff") == 1, "raise"
    )
    assert val(s, "streamer_errors_total", kind="listener_exception") == 1
    assert val(s, "streamer_update_duration_seconds_count") == 1  # a raising update is timed
    status = json.loads((await http_get(rig.address, "/status"))[2])
    assert status["streams"][0]["last_error"] == "listener_exception: KeyError"

    await (await rig.server.next_call("s1")).push(batch(1))  # update returns False
    s = await rig.until(
        lambda s: val(s, "streamer_reconnects_total", reason="interval") == 1, "decline"
    )
    assert val(s, "streamer_errors_total", kind="update_declined") == 1

    # The third request's get_extra_args returns junk: reported, backoff, no call is made.
    s = await rig.until(
        lambda s: val(s, "streamer_reconnects_total", reason="backoff") == 2, "extra_args"
    )
    assert val(s, "streamer_errors_total", kind="extra_args") == 1

    call = await rig.server.next_call("s1")
    assert rig.sleep.delays == [1.0, 5.0, 2.0]  # declined waits the streaming interval
    await call.push(batch(2))
    s = await rig.until(lambda s: val(s, "streamer_batches_total") == 3, "3rd batch")
    assert val(s, "streamer_updates_total") == 4
    assert sum(v for (n, _), v in s.items() if n == "streamer_errors_total") == 3
    status = json.loads((await http_get(rig.address, "/status"))[2])
    text = json.dumps(status)
    assert SECRET_KEY not in text and "SECRET-VALUE" not in text
    assert status["streams"][0]["errors"] == 3
    assert status["ready"] is True
    await stop(rig, listener, task)


async def test_status_document_per_stream(rig: Rig) -> None:
    a, b = Recorder("s1"), Recorder("s2")
    tasks = [asyncio.create_task(rig.client.stream(x)) for x in (a, b)]
    await (await rig.server.next_call("s1")).push(batch(4))
    await rig.server.next_call("s2")
    await rig.until(lambda s: val(s, "streamer_batches_total") == 1, "s1 data")
    code, ctype, body = await http_get(rig.address, "/status")
    assert code == 200 and ctype == "application/json"
    doc = json.loads(body)
    assert doc["ready"] is False and doc["not_ready"] == ["s2"]
    rows = {r["stream"]: r for r in doc["streams"]}
    assert set(rows) == {"s1", "s2"}
    assert set(rows["s1"]) == {
        "stream",
        "plugin",
        "state",
        "last_batch_age_s",
        "batches",
        "updates",
        "errors",
        "last_error",
        "last_error_age_s",
        "backoff",
        "failing",
        "failures_in_a_row",
        "held",
        "in_sync_age_s",
        "max_staleness",
        "stale_since",
    }
    assert doc["reasons"] == {"s2": "no call accepted yet"}
    assert rows["s1"]["held"] is None and rows["s1"]["stale_since"] is None
    assert rows["s1"]["plugin"] == "plug" and rows["s1"]["state"] == "streaming"
    assert rows["s1"]["updates"] == 4 and rows["s1"]["batches"] == 1
    assert 0 <= rows["s1"]["last_batch_age_s"] < 5
    assert rows["s2"]["last_batch_age_s"] is None and rows["s2"]["updates"] == 0
    for listener, task in zip((a, b), tasks, strict=True):
        await stop(rig, listener, task)


async def test_unknown_path_404_and_head(rig: Rig) -> None:
    code, _, body = await http_get(rig.address, "/nope")
    assert code == 404 and "/metrics" in body
    req = urllib.request.Request(f"http://{rig.address}/healthz", method="HEAD")
    resp = await asyncio.to_thread(urllib.request.urlopen, req, timeout=5)
    assert resp.status == 200 and resp.read() == b""


async def test_openmetrics_negotiated() -> None:
    observer = MetricsObserver()
    body, ctype = observer.render_metrics("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_each_observer_has_its_own_registry() -> None:
    one, two = MetricsObserver({"s1": "a"}), MetricsObserver({"s1": "b"})
    assert one.registry is not two.registry
    one.streamer_stream_started("s1")
    one.streamer_batch_received("s1", batch(2))
    assert (
        one.registry.get_sample_value("streamer_batches_total", {"stream": "s1", "plugin": "a"})
        == 1
    )
    assert (
        two.registry.get_sample_value("streamer_batches_total", {"stream": "s1", "plugin": "b"})
        is None
    )
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("streamer_") for n in names)


def test_readiness_follows_the_hosts_announced_streams() -> None:
    clock = [100.0]
    obs = MetricsObserver({"s1": "a", "s2": "a"}, clock=lambda: clock[0])
    assert obs.not_ready() == ["(no streams running)"]
    for s in ("s1", "s2"):
        obs.streamer_stream_started(s)
    obs.streamer_host_started(["s1", "s2"])
    obs.streamer_batch_received("s1", batch(1))
    assert obs.not_ready() == ["s2"]
    obs.streamer_batch_received("s2", batch(1))
    assert obs.not_ready() == []
    # A stream its listener stopped is not ready; one removed by a reload drops out.
    obs.streamer_stream_stopped("s2", RuntimeError("gave up"))
    assert obs.not_ready() == ["s2"]
    obs.streamer_stream_stopped("s1", None)
    obs.streamer_host_started(["s2"])
    assert [r[0] for r in obs.rows()] == ["s2"]
    # Restarted (reload with a new table): needs data again; counters keep counting.
    obs.streamer_stream_started("s2")
    obs.streamer_host_started(["s2"])
    assert obs.not_ready() == ["s2"]
    clock[0] += 7
    row = obs.status()["streams"][0]
    assert row["batches"] == 1 and row["last_batch_age_s"] is None
    obs.streamer_host_stopping()
    assert obs.status()["ready"] is False


def test_error_kind_duck_types_rpc_errors() -> None:
    class FakeRpc(Exception):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.DEADLINE_EXCEEDED

    assert error_kind(FakeRpc()) == "DEADLINE_EXCEEDED"
    assert error_kind(ListenerDeclined("x")) == "update_declined"
    assert error_kind(ValueError(), update_raised=True) == "listener_exception"
    assert error_kind(TypeError()) == "extra_args"


# -- wiring: start_observability, checks -----------------------------------------------------

CONFIG = """
plugins = ["log"]

[cloud]
target = "127.0.0.1:1"

[plugin.log]
streams = ["s1"]

[metrics]
address = "{address}"
"""


async def test_start_observability_binds_port_zero_and_stops_with_the_host(
    tmp_path: Path,
) -> None:
    config = config_from_text(CONFIG.format(address="127.0.0.1:0"), tmp_path / "streamer.toml")
    owners: dict[str, str] = {}
    observer, server = start_observability(config, owners)
    try:
        assert observer.server is server
        code, _, _ = await http_get(server.address, "/healthz")
        assert code == 200
        busy = config_from_text(CONFIG.format(address=server.address), tmp_path / "streamer.toml")
        with pytest.raises(LoadFailed, match=r"metrics\.address: cannot listen on"):
            start_observability(busy, owners)
    finally:
        observer.streamer_host_stopping()
    assert observer.server is None
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(_get, f"http://{server.address}/healthz")


def test_check_reports_missing_prometheus_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    config = config_from_text(CONFIG.format(address="127.0.0.1:9464"), tmp_path / "s.toml")
    check(config)  # installed: fine
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real(name, *a),
    )
    with pytest.raises(LoadFailed) as info:
        check(config)
    assert "prometheus-client is not installed" in str(info.value)
    assert "streamer[metrics]" in str(info.value)


def test_stream_in_sync_without_a_batch_is_ready() -> None:
    """A sink whose digest matches the server's gets no snapshot after a restart: the call
    being accepted (state streaming) is what makes it ready."""
    obs = MetricsObserver({"s1": "a"})
    obs.streamer_stream_started("s1")
    obs.streamer_host_started(["s1"])
    obs.streamer_state_changed("s1", StreamState.CONNECTING)
    assert obs.not_ready() == ["s1"]
    obs.streamer_state_changed("s1", StreamState.STREAMING)
    assert obs.not_ready() == []
