"""Fault injection against real gRPC on loopback: a server that dies and comes back, a path that
goes silent (keepalive must notice), connections reset mid-message, servers that refuse with
real sleeps between attempts, and a server that caps concurrent streams per connection."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.client.client import Client
from streamer.client.stream import StreamRpcError
from streamer.testing import CallHandle, ScriptedServer
from streamer.wire import DataUpdate, DataUpdateBatch
from tests.faults import PERMIT_FAST_PINGS, FaultProxy, OptionsScriptedServer
from tests.helpers import eventually, free_port
from tests.listeners import Recorder

# Every test runs a sync listener in its own thread and an async one on the event loop.
pytestmark = pytest.mark.usefixtures("listener_path")


def fast_client(target: str, **registry: object) -> Client:
    """Real sleeps, short backoff; the channel's own reconnect backoff is short too."""
    registry.setdefault("max_reconnect_backoff", 0.2)
    return new_streamer_client(
        StaticRegistry(target, **registry),  # type: ignore[arg-type]
        streaming_interval=0.5,
        backoff=Backoff(initial=0.05, multiplier=2.0, jitter=0.2, maximum=0.2),
        rng=random.Random(7),
    )


@contextlib.asynccontextmanager
async def streaming(client: Client, *listeners: Recorder) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(client.stream(listener)) for listener in listeners]
    try:
        yield
    finally:
        for listener in listeners:
            client.remove_listener(listener)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        await client.close()
        assert results == [None] * len(listeners), results  # removed, never crashed


def codes(listener: Recorder) -> list[grpc.StatusCode]:
    return [e.code() for e in listener.errors]  # type: ignore[attr-defined]


async def test_server_restarted_on_same_port_stream_resumes() -> None:
    port = free_port()
    server = ScriptedServer(port=port)
    await server.start()
    listener = Recorder()
    client = fast_client(f"127.0.0.1:{port}")
    try:
        async with streaming(client, listener):
            call = await server.next_call()
            await call.push({"before": b"1"}, resync=True)
            await eventually(lambda: len(listener.batches) == 1, "first batch")
            await server.stop()  # mid-stream: the open call dies with the server
            await eventually(lambda: listener.errors, "the failure reported")
            assert codes(listener)[0] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            await asyncio.sleep(0.3)  # a few failed reconnects while it is down
            server = ScriptedServer(port=port)
            await server.start()
            call = await server.next_call(timeout=5)
            assert call.stream == "s1"
            await call.push({"before": b"1", "after": b"2"}, resync=True)  # no mass deletion
            await eventually(lambda: len(listener.batches) == 2, "batch from restarted server")
        assert listener.keys() == [["before"], ["before", "after"]]
        assert all(isinstance(e, grpc.RpcError) for e in listener.errors)
    finally:
        await server.stop()


@pytest.mark.slow
async def test_blackholed_connection_detected_by_keepalive_then_reconnects() -> None:
    keepalive_time, keepalive_timeout = 1.0, 1.0
    async with (
        OptionsScriptedServer(options=PERMIT_FAST_PINGS) as server,
        FaultProxy(server.port or 0) as proxy,
    ):
        listener = Recorder()
        client = fast_client(
            proxy.address, keepalive_time=keepalive_time, keepalive_timeout=keepalive_timeout
        )
        async with streaming(client, listener):
            call = await server.next_call()
            await call.push({"a": b"1"})
            await eventually(lambda: listener.batches, "first batch")
            await asyncio.sleep(2.5)  # quiet stream, pings every second: accepted, no error
            assert listener.errors == [] and proxy.accepted == 1
            assert proxy.blackhole() == 1  # no RST, no FIN: only a missing ping ack can tell
            silenced = time.monotonic()
            await eventually(lambda: listener.errors, "keepalive failure", timeout=10)
            detected = time.monotonic() - silenced
            assert detected <= keepalive_time + keepalive_timeout + 1.0, detected
            assert codes(listener)[0] is grpc.StatusCode.UNAVAILABLE
            call = await server.next_call(timeout=5)  # reconnected through a new connection
            assert proxy.accepted == 2
            await call.push({"b": b"2"})
            await eventually(lambda: len(listener.batches) == 2, "batch after reconnect")


async def test_connection_reset_mid_message_reconnects() -> None:
    async with ScriptedServer() as server, FaultProxy(server.port or 0) as proxy:
        listener = Recorder()
        client = fast_client(proxy.address)
        async with streaming(client, listener):
            call = await server.next_call()
            await call.push({"small": b"1"})
            await eventually(lambda: listener.batches, "first batch")
            proxy.reset_after(64 * 1024)  # RST partway through the next (1 MiB) message
            big = DataUpdateBatch(updates=[DataUpdate(key="big", value=b"x" * (1 << 20))])
            push = asyncio.create_task(call.push(big))
            await eventually(lambda: listener.errors, "the reset reported")
            assert proxy.resets == 1
            assert codes(listener)[0] is grpc.StatusCode.UNAVAILABLE
            assert len(listener.batches) == 1  # the torn message was never delivered
            again = await server.next_call(timeout=5)
            await again.push({"after": b"2"})
            await eventually(lambda: len(listener.batches) == 2, "batch after reconnect")
            await asyncio.gather(push, return_exceptions=True)
        assert listener.keys() == [["small"], ["after"]]


REFUSALS = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)


@pytest.mark.slow
async def test_refusing_server_backoff_honoured_no_hot_loop() -> None:
    """Four streams, each refused with one code on every call, over a real 1 s window."""
    initial, multiplier, jitter, maximum, window = 0.05, 1.6, 0.2, 0.4, 1.0
    arrivals: dict[str, list[float]] = {code.name: [] for code in REFUSALS}

    async def refuse(call: CallHandle) -> None:
        arrivals[call.stream].append(time.monotonic())
        await call.fail(grpc.StatusCode[call.stream], f"refused ({call.stream})")

    async with ScriptedServer() as server:
        server.default = refuse
        client = new_streamer_client(
            StaticRegistry(server.address),
            streaming_interval=5.0,
            backoff=Backoff(initial, multiplier, jitter, maximum),
        )
        listeners = [Recorder(code.name) for code in REFUSALS]
        async with streaming(client, *listeners):
            await asyncio.sleep(window)
        end = time.monotonic()

    nominal = [min(initial * multiplier**i, maximum) for i in range(100)]
    # Most attempts possible in the window if every delay drew its lowest jitter.
    most, elapsed = 1, 0.0
    while elapsed + nominal[most - 1] * (1 - jitter) <= window:
        elapsed += nominal[most - 1] * (1 - jitter)
        most += 1
    for code, listener in zip(REFUSALS, listeners, strict=True):
        times = arrivals[code.name]
        assert 3 <= len(times) <= most, (code, len(times), most)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        for i, gap in enumerate(gaps):  # never sooner than the backoff allows
            assert gap >= nominal[i] * (1 - jitter) - 0.002, (code, i, gap)
        assert end - times[-1] < nominal[len(times) - 1] * (1 + jitter) + 0.25  # not stalled
        assert set(codes(listener)) == {code}
        assert len(listener.errors) in (len(times), len(times) - 1)
        assert all(isinstance(e, StreamRpcError) and e.stream == code.name for e in listener.errors)
        assert f"refused ({code.name})" in listener.errors[0].details()  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_300_streams_through_a_server_allowing_100_per_connection() -> None:
    async def one_batch(call: CallHandle) -> None:
        await call.push({call.stream: b"v"})

    async with OptionsScriptedServer(options=[("grpc.max_concurrent_streams", 100)]) as server:
        server.default = one_batch
        client = new_streamer_client(StaticRegistry(server.address))  # 100 per channel
        listeners = [Recorder(f"s{i}") for i in range(300)]
        async with streaming(client, *listeners):
            await eventually(
                lambda: all(listener.batches for listener in listeners), "all 300", timeout=20
            )
            assert len({c.peer for c in server.calls}) == 3
            assert all(listener.errors == [] for listener in listeners)

        # Ignoring the limit (one connection for everything): calls past the 100th queue.
        client = new_streamer_client(StaticRegistry(server.address), max_streams_per_channel=1000)
        crowded = [Recorder(f"c{i}") for i in range(150)]
        async with streaming(client, *crowded):
            await eventually(lambda: sum(bool(x.batches) for x in crowded) == 100, "100 streams")
            await asyncio.sleep(0.5)
            assert sum(bool(x.batches) for x in crowded) == 100
            assert sum(c.stream.startswith("c") for c in server.calls) == 100
