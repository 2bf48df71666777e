"""The pytest kit for plugin authors: ScriptedServer, fixtures and run_listener."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from streamer.server.reference import METHOD
from streamer.server.sources import MemorySource
from streamer.testing import (
    CallClosedError,
    CallHandle,
    ReferenceServerFactory,
    ScriptedServer,
    run_listener,
)
from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch, StreamRequest

Call = Any  # grpc.aio.UnaryStreamCall


@pytest.fixture
async def channel(streamer_server: ScriptedServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(streamer_server.address) as ch:
        yield ch


def open_call(channel: grpc.aio.Channel, stream: str, gateway: str = "gw1") -> Call:
    stub = channel.unary_stream(
        METHOD,
        request_serializer=StreamRequest.SerializeToString,
        response_deserializer=DataUpdateBatch.FromString,
    )
    return stub(StreamRequest(gatewayId=gateway, stream_name=stream))


async def read(call: Call) -> Any:
    return await asyncio.wait_for(call.read(), 3)


def as_dict(batch: DataUpdateBatch) -> dict[str, bytes]:
    return {u.key: u.value for u in batch.updates}


def test_plugin_is_registered_and_imports_no_grpc() -> None:
    code = (
        "import sys, streamer.testing; "
        "assert 'grpc' not in sys.modules and 'google.protobuf' not in sys.modules, "
        "sorted(m for m in sys.modules if 'grpc' in m or 'protobuf' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", __file__],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert "streamer_server" in out and "reference_server" in out


async def test_push_and_end(streamer_server: ScriptedServer, channel: grpc.aio.Channel) -> None:
    call = open_call(channel, "subs", gateway="gw-7")
    handle = await streamer_server.next_call("subs")
    assert handle.request.gatewayId == "gw-7" and handle.stream == "subs"
    assert streamer_server.requests == [handle.request]
    assert handle.peer.startswith("ipv4:127.0.0.1")

    await handle.push({"imsi1": b"one", "imsi2": "two"}, resync=True)
    first = await read(call)
    assert first.resync and as_dict(first) == {"imsi1": b"one", "imsi2": b"two"}
    await handle.push([("imsi1", b"ONE"), DataUpdate(key="imsi2", value=b"")])
    second = await read(call)
    assert not second.resync and as_dict(second) == {"imsi1": b"ONE", "imsi2": b""}
    await handle.push(DataUpdateBatch(updates=[DataUpdate(key="k")], resync=True))
    assert (await read(call)).resync

    await handle.end()
    assert handle.closed and not handle.cancelled
    assert await read(call) is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    await handle.end()  # already over: no-op
    with pytest.raises(CallClosedError, match="'subs'"):
        await handle.push({"k": b"v"})


async def test_fail(streamer_server: ScriptedServer, channel: grpc.aio.Channel) -> None:
    call = open_call(channel, "subs")
    handle = await streamer_server.next_call()
    await handle.fail(grpc.StatusCode.UNAVAILABLE, "cloud is down")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read(call)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "cloud is down"
    assert handle.closed and not handle.cancelled


async def test_next_call_order_filter_and_timeout(
    streamer_server: ScriptedServer, channel: grpc.aio.Channel
) -> None:
    a = open_call(channel, "a")
    await streamer_server.next_call("a")  # make the arrival order deterministic
    a2 = open_call(channel, "a")
    b = open_call(channel, "b")
    got_b = await streamer_server.next_call("b")
    assert got_b.stream == "b"
    got_a2 = await streamer_server.next_call()
    assert got_a2.stream == "a" and got_a2 is streamer_server.calls[1]
    with pytest.raises(TimeoutError, match=r"for stream 'c'.*\['a', 'a', 'b'\]"):
        await streamer_server.next_call("c", timeout=0.1)
    for c in (a, a2, b):
        c.cancel()


async def test_next_call_waits_for_a_call(
    streamer_server: ScriptedServer, channel: grpc.aio.Channel
) -> None:
    waiter = asyncio.create_task(streamer_server.next_call("late"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    call = open_call(channel, "late")
    handle = await asyncio.wait_for(waiter, 3)
    assert handle.stream == "late"
    call.cancel()


async def test_client_cancel_is_seen(
    streamer_server: ScriptedServer, channel: grpc.aio.Channel
) -> None:
    call = open_call(channel, "subs")
    handle = await streamer_server.next_call()
    assert not handle.closed
    call.cancel()
    await handle.wait_closed()
    assert handle.cancelled and handle.closed
    with pytest.raises(CallClosedError):
        await handle.push({"k": b"v"})


async def test_wait_closed_times_out_on_open_call(
    streamer_server: ScriptedServer, channel: grpc.aio.Channel
) -> None:
    call = open_call(channel, "subs")
    handle = await streamer_server.next_call()
    with pytest.raises(TimeoutError, match="still open"):
        await handle.wait_closed(timeout=0.05)
    call.cancel()


async def test_default_drives_undriven_calls(
    streamer_server: ScriptedServer, channel: grpc.aio.Channel
) -> None:
    async def magma_like(handle: CallHandle) -> None:
        await handle.push({"k": handle.request.stream_name.encode()}, resync=True)
        await handle.end()

    streamer_server.default = magma_like
    call = open_call(channel, "subs")
    batch = await read(call)
    assert batch.resync and as_dict(batch) == {"k": b"subs"}
    assert await read(call) is grpc.aio.EOF
    assert (await streamer_server.next_call()).closed  # still recorded and queued


async def test_stopping_the_server_cancels_open_calls() -> None:
    async with ScriptedServer() as server, grpc.aio.insecure_channel(server.address) as ch:
        call = open_call(ch, "subs")
        handle = await server.next_call()
        await server.stop()
        await handle.wait_closed()
        with pytest.raises(grpc.aio.AioRpcError):
            await read(call)


async def test_reference_server_fixture(reference_server: ReferenceServerFactory) -> None:
    source = MemorySource({"subs": {"a": b"1"}})
    server = await reference_server(source, mode="poll")
    async with grpc.aio.insecure_channel(server.address) as ch:
        call = open_call(ch, "subs")
        assert as_dict(await read(call)) == {"a": b"1"}
        assert await read(call) is grpc.aio.EOF
    assert [r.stream_name for r in server.requests] == ["subs"]


# -- run_listener with the project's client -----------------------------------------------


class Recorder:
    """A listener that records batches; stops (returns the error) after ``stop_after`` batches."""

    def __init__(self, name: str, stop_after: int | None = None) -> None:
        self.name = name
        self.batches: list[DataUpdateBatch] = []
        self.errors: list[BaseException] = []
        self.stop_after = stop_after

    def get_extra_args(self) -> None:
        return None

    def update(self, batch: DataUpdateBatch) -> bool:
        self.batches.append(batch)
        return self.stop_after is None or len(self.batches) < self.stop_after

    def report_error(self, error: BaseException) -> BaseException | None:
        self.errors.append(error)
        return error if isinstance(error, EOFError) else None


async def test_run_listener_until(streamer_server: ScriptedServer) -> None:
    listener = Recorder("subs")
    streamer_server.default = lambda h: h.push({"imsi1": b"one"}, resync=True)
    result = await run_listener(
        listener, streamer_server.address, until=lambda: len(listener.batches) >= 1
    )
    assert result is None
    assert as_dict(listener.batches[0]) == {"imsi1": b"one"}
    handle = streamer_server.calls[0]
    await handle.wait_closed()
    assert handle.cancelled  # removing the listener cancelled the open call


async def test_run_listener_returns_the_stopping_error(
    reference_server: ReferenceServerFactory,
) -> None:
    server = await reference_server(MemorySource({"subs": {"a": b"1"}}), mode="poll")
    listener = Recorder("subs", stop_after=2)
    result = await run_listener(listener, server.address, timeout=5)
    assert isinstance(result, EOFError)
    assert len(listener.batches) == 2 and len(server.requests) == 2  # polled twice


async def test_run_listener_async_until_and_timeout(streamer_server: ScriptedServer) -> None:
    listener = Recorder("quiet")

    async def never() -> bool:
        return False

    with pytest.raises(TimeoutError, match="'quiet'"):
        await run_listener(listener, streamer_server.address, until=never, timeout=0.3)
    assert streamer_server.requests[0].stream_name == "quiet"


async def test_scripted_server_on_a_fixed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ScriptedServer(port=port) as server:
        assert server.address == f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(server.address) as ch:
            call = open_call(ch, "subs")
            await (await server.next_call()).end()
            assert await read(call) is grpc.aio.EOF


# -- the kit's async tests run in pytest-asyncio's strict mode (a plugin's own checkout) ------

KIT_STRICT_MODULE = """
import asyncio
from streamer.testing import ScriptedServer, run_listener

async def test_uses_fixture(streamer_server: ScriptedServer) -> None:
    assert streamer_server.address

async def test_in_module_that_imports_the_kit() -> None:
    await asyncio.sleep(0)
"""

UNRELATED_MODULE = """
async def test_not_ours() -> None:
    pass
"""


def _run_strict(tmp_path: Any, name: str, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / name).write_text(source)
    # An empty pytest.ini makes tmp_path the rootdir: no asyncio_mode = "auto" from this repo.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_kit_async_tests_run_in_strict_mode(tmp_path: Any) -> None:
    proc = _run_strict(tmp_path, "test_kit_strict.py", KIT_STRICT_MODULE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_kit_leaves_other_async_tests_alone(tmp_path: Any) -> None:
    """A coroutine test that does not use the kit is pytest-asyncio's business, not ours."""
    proc = _run_strict(tmp_path, "test_unrelated.py", UNRELATED_MODULE)
    assert proc.returncode != 0
    assert "async def functions are not natively supported" in proc.stdout
