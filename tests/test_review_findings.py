"""Edge cases a review of the 0.2 runners, endpoint, aliases and schemas found; each test
failed before its fix."""

from __future__ import annotations

import asyncio
import http.client
import importlib
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from streamer import StaticRegistry
from streamer.client.client import Client
from streamer.client.events import NullObserver, StreamState
from streamer.client.gate import ReleaseResult
from streamer.host.schema import ConfigProblems, PluginConfig, validate
from streamer.observability.http import ObservabilityServer
from streamer.testing import ScriptedServer
from streamer.wire import DataUpdate, DataUpdateBatch

SNAP = DataUpdateBatch(updates=[DataUpdate(key="a", value=b"1")], resync=True)


def _client(server: ScriptedServer, **kwargs: Any) -> Client:
    return Client(StaticRegistry(server.address), streaming_interval=30.0, **kwargs)


# -- a stream cancelled inside a listener call raises CancelledError ---------------------------


class Hangs:
    name = "s"

    def __init__(self, where: str) -> None:
        self.where = where
        self.reported: list[BaseException] = []

    async def get_extra_args(self) -> None:
        if self.where == "get_extra_args":
            await asyncio.sleep(3600)

    async def update(self, batch: DataUpdateBatch) -> bool:
        if self.where == "update":
            await asyncio.sleep(3600)
        return True

    async def report_error(self, error: BaseException) -> None:
        self.reported.append(error)


@pytest.mark.parametrize(
    ("where", "how"),
    [("get_extra_args", "close"), ("get_extra_args", "cancel"), ("update", "cancel")],
)
async def test_a_stream_cancelled_inside_a_listener_call_raises_cancelled_error(
    streamer_server: ScriptedServer, where: str, how: str
) -> None:
    """Closing the step generator threw GeneratorExit into the catch-all around the listener
    call, which reported it and yielded again: RuntimeError('generator ignored
    GeneratorExit') instead of the documented CancelledError, and a bogus report_error."""
    client, listener = _client(streamer_server), Hangs(where)
    task = asyncio.create_task(client.stream(listener))
    if where == "update":
        await (await streamer_server.next_call()).push(SNAP)
    await asyncio.sleep(0.2)
    if how == "close":
        await client.close(timeout=0.2)  # Client.close: stuck streams are cancelled
    else:
        runner = client.runner("s")
        assert runner is not None
        runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert listener.reported == []
    await client.close(1)


# -- StopIteration from a sync listener method is an error, not a hang ------------------------


class LeaksStopIteration:
    name = "s"

    def __init__(self) -> None:
        self.reported: list[BaseException] = []

    def get_extra_args(self) -> None:
        next(iter(()))  # a bug in plugin code: StopIteration escapes

    async def update(self, batch: DataUpdateBatch) -> bool:
        return True

    def report_error(self, error: BaseException) -> BaseException:
        self.reported.append(error)
        return error  # stop the stream


async def test_stop_iteration_from_a_sync_method_reaches_report_error(
    streamer_server: ScriptedServer,
) -> None:
    """asyncio futures refuse StopIteration: the worker's result was never delivered and the
    stream waited forever."""
    client, listener = _client(streamer_server), LeaksStopIteration()
    with pytest.raises(RuntimeError, match="StopIteration") as info:
        await asyncio.wait_for(client.stream(listener), 10)
    assert isinstance(info.value.__cause__, StopIteration)
    assert listener.reported == [info.value]
    await client.close(1)


# -- a stream removed during get_extra_args does not report ------------------------------------


class SlowFailingExtraArgs:
    name = "s"

    def __init__(self) -> None:
        self.reported: list[BaseException] = []

    def get_extra_args(self) -> None:
        time.sleep(0.4)
        raise OSError("digest file unreadable")

    def update(self, batch: DataUpdateBatch) -> bool:
        return True

    def report_error(self, error: BaseException) -> None:
        self.reported.append(error)


async def test_a_stream_removed_during_get_extra_args_does_not_call_report_error(
    streamer_server: ScriptedServer,
) -> None:
    client, listener = _client(streamer_server), SlowFailingExtraArgs()
    task = asyncio.create_task(client.stream(listener))
    await asyncio.sleep(0.15)
    client.remove_listener(listener)
    await asyncio.wait_for(task, 5)
    assert listener.reported == []
    await client.close(1)


# -- an abandoned stream thread does not report on a restarted stream --------------------------


class Events(NullObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def stream_stopped(self, stream: str, error: BaseException | None) -> None:
        self.seen.append(("stopped", error))

    def state_changed(self, stream: str, state: StreamState) -> None:
        self.seen.append(("state", state))


class Blocks:
    name = "s"

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate

    def get_extra_args(self) -> None:
        return None

    def update(self, batch: DataUpdateBatch) -> bool:
        if self.gate is not None:
            self.gate.wait(10)
        return True

    def report_error(self, error: BaseException) -> None:
        return None


async def test_an_abandoned_stream_threads_late_events_are_dropped(
    streamer_server: ScriptedServer,
) -> None:
    """close(timeout) abandons a thread stuck in a sync update(); when that update returned
    later, its STOPPED and stream_stopped events were reported for the stream started again
    under the same name, and /readyz turned red for a healthy stream."""
    events = Events()
    client = _client(streamer_server, observer=events)
    gate = threading.Event()
    old = asyncio.create_task(client.stream(Blocks(gate)))
    await (await streamer_server.next_call()).push(SNAP)
    await asyncio.sleep(0.2)
    runner = client.runner("s")
    assert runner is not None
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await old
    # reported stopped at once, as a loop-run stream is on cancel
    assert events.seen[-2:] == [("state", StreamState.STOPPED), ("stopped", None)]
    new = asyncio.create_task(client.stream(Blocks()))
    await (await streamer_server.next_call()).push(SNAP)
    await asyncio.sleep(0.2)
    mark = len(events.seen)
    gate.set()  # the abandoned update() returns
    await asyncio.sleep(0.3)
    assert events.seen[mark:] == []
    again = client.runner("s")
    assert again is not None and again.state is StreamState.STREAMING
    client.remove_listener(client.listeners()[0])
    await new
    await client.close(1)


# -- POST /release: a timeout releases nothing; a bad name gets an answer ----------------------


def test_release_that_times_out_on_a_busy_loop_releases_nothing() -> None:
    from streamer.host.host import Host

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    applied: list[str] = []

    class FakeClient:
        def release(self, name: str) -> ReleaseResult:
            applied.append(name)
            return ReleaseResult(name, True, "released")

    host = object.__new__(Host)
    host._loop = loop
    host.client = FakeClient()  # type: ignore[assignment]
    host._running = {}
    try:
        loop.call_soon_threadsafe(time.sleep, 0.6)  # the loop is busy
        doc = host.release("s", timeout=0.1)
        assert doc["released"] is False and doc["busy"] is True
        time.sleep(0.8)
        assert applied == []  # the late callback did not release behind the answer's back
        assert host.release("s", timeout=2)["released"] is True
        assert applied == ["s"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(2)
        loop.close()


class _Source:
    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        return b"", "text/plain"

    def status(self) -> dict[str, Any]:
        return {"ready": True, "not_ready": []}


@pytest.mark.parametrize(
    ("path", "doc", "code"),
    [
        ("/release/%ff", None, 400),  # not UTF-8: answered, not dropped
        ("/release/s", {"stream": "s", "released": False, "known": False, "busy": True}, 503),
        ("/release/s", {"stream": "s", "released": False, "known": False}, 404),
        ("/release/s", {"stream": "s", "released": False, "known": True}, 409),
    ],
)
def test_release_endpoint_answers(path: str, doc: dict[str, Any] | None, code: int) -> None:
    server = ObservabilityServer(_Source(), "127.0.0.1", 0, releaser=lambda stream: doc or {})
    server.start()
    try:
        host, port = server.address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST", path, body=b"")
        assert conn.getresponse().status == code
        conn.close()
    finally:
        server.stop()


# -- 0.1 aliases keep the real module's spec ---------------------------------------------------


def test_an_alias_import_keeps_the_modules_own_spec_and_reload_works() -> None:
    code = (
        "import importlib, warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "import streamer.hooks, streamer.proto\n"
        "import streamer.host.observers as obs, streamer.wire as wire\n"
        "assert obs.__spec__.name == 'streamer.host.observers', obs.__spec__.name\n"
        "assert wire.__spec__.submodule_search_locations, wire.__spec__\n"
        "again = importlib.reload(obs)\n"
        "assert again.__name__ == 'streamer.host.observers'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    importlib.invalidate_caches()


# -- non-finite numbers are refused inside tables too ------------------------------------------


class Weights(PluginConfig):
    weights: dict[str, float] = {}


def test_nan_and_inf_inside_a_table_valued_field_are_refused() -> None:
    with pytest.raises(ConfigProblems) as info:
        validate(Weights, {"weights": {"a": float("nan"), "b": float("inf"), "c": 1.0}})
    text = "\n".join(str(p) for p in info.value.problems)
    assert "weights.a" in text and "weights.b" in text and "weights.c" not in text
