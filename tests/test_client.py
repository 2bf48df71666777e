"""Every row of the supervisor's decision table, against a real grpc.aio server on loopback.

Waits go through an injected sleep that records delays and returns at once, so the tests are
fast and the delays can be asserted exactly; a few tests use real short intervals.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import any_pb2, wrappers_pb2

from streamer import (
    STREAMING_INTERVAL,
    Backoff,
    DuplicateStreamError,
    StaticRegistry,
    new_streamer_client,
)
from streamer.client.client import Client
from streamer.client.guard import GuardPolicy
from streamer.client.supervisor import ListenerDeclined
from streamer.testing import ScriptedServer
from streamer.wire import DataUpdate, DataUpdateBatch
from tests import listeners
from tests.listeners import AsyncRecorder, Blocking, Recorder, RecordingSleep

# Every test runs a sync listener in its own thread and an async one on the event loop.
pytestmark = pytest.mark.usefixtures("listener_path")


def batch(*keys: str, resync: bool = False) -> DataUpdateBatch:
    return DataUpdateBatch(
        updates=[DataUpdate(key=k, value=k.encode()) for k in keys], resync=resync
    )


def make_client(address: str, sleep: RecordingSleep | None = None, **kw: object) -> Client:
    kw.setdefault("backoff", Backoff(initial=1.0, multiplier=2.0, jitter=0.0))
    return new_streamer_client(
        StaticRegistry(address),
        streaming_interval=kw.pop("streaming_interval", 5.0),  # type: ignore[arg-type]
        sleep=sleep or RecordingSleep(),
        **kw,  # type: ignore[arg-type]
    )


async def finish(
    client: Client, listener: Recorder | AsyncRecorder, task: asyncio.Task[None]
) -> None:
    """Remove a streaming listener, check its stream() returns None, close the client."""
    assert client.remove_listener(listener)
    assert await asyncio.wait_for(task, 5) is None
    await client.close()


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def test_public_defaults() -> None:
    assert STREAMING_INTERVAL == 20.0


async def test_poll_style_batch_then_end_reconnects_after_interval(
    streamer_server: ScriptedServer,
) -> None:
    sleep = RecordingSleep()
    # Each snapshot replaces every key: the mass-change guard (tests/test_guard_stream.py)
    # would hold them, so it is off here.
    client = make_client(streamer_server.address, sleep, guard=GuardPolicy(0))
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    for i in range(3):
        call = await streamer_server.next_call()
        assert call.request.stream_name == "s1"
        await call.push(batch(f"k{i}", resync=True))
        await call.end()
    await streamer_server.next_call()  # the 4th call proves the loop goes on
    assert listener.keys() == [["k0"], ["k1"], ["k2"]]
    assert all(b.resync for b in listener.batches)
    assert sleep.delays == [5.0, 5.0, 5.0]  # streaming interval, no backoff
    assert listener.errors == []  # a clean end is not reported
    assert client.remove_listener(listener)
    assert await task is None
    await client.close()


async def test_push_style_many_batches_on_one_open_call(streamer_server: ScriptedServer) -> None:
    sleep = RecordingSleep()
    client = make_client(streamer_server.address, sleep)
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    for i in range(20):
        await call.push(batch(f"k{i}"))
    await wait_until(lambda: len(listener.batches) == 20)
    assert len(streamer_server.requests) == 1
    assert sleep.delays == []
    await finish(client, listener, task)


async def test_extra_args_before_every_request_arrive_at_server(
    streamer_server: ScriptedServer,
) -> None:
    listener = Recorder(extra=lambda n: wrappers_pb2.StringValue(value=f"digest-{n}"))
    client = make_client(streamer_server.address)
    task = asyncio.create_task(client.stream(listener))
    seen = []
    for _ in range(3):
        call = await streamer_server.next_call()
        value = wrappers_pb2.StringValue()
        assert call.request.extra_args.Unpack(value)
        seen.append(value.value)
        await call.end()
    assert seen == ["digest-1", "digest-2", "digest-3"]
    await finish(client, listener, task)


async def test_extra_args_as_any_and_none(streamer_server: ScriptedServer) -> None:
    packed = any_pb2.Any()
    packed.Pack(wrappers_pb2.Int64Value(value=7))
    answers = iter([packed, None])
    listener = Recorder(extra=lambda n: next(answers))
    client = make_client(streamer_server.address)
    task = asyncio.create_task(client.stream(listener))
    first = await streamer_server.next_call()
    # The same bytes on the wire (the message classes live in different descriptor pools).
    assert first.request.extra_args.SerializeToString() == packed.SerializeToString()
    assert first.request.extra_args.Is(wrappers_pb2.Int64Value.DESCRIPTOR)
    await first.end()
    second = await streamer_server.next_call()
    assert not second.request.HasField("extra_args")
    await finish(client, listener, task)


async def test_bad_extra_args_reported_then_backoff(streamer_server: ScriptedServer) -> None:
    values = iter(["not a message", None])
    listener = Recorder(extra=lambda n: next(values))
    sleep = RecordingSleep()
    client = make_client(streamer_server.address, sleep)
    task = asyncio.create_task(client.stream(listener))
    await streamer_server.next_call()
    assert isinstance(listener.errors[0], TypeError)
    assert "get_extra_args() must return" in str(listener.errors[0])
    assert sleep.delays == [1.0]
    await finish(client, listener, task)


async def test_update_true_reads_at_once_and_resets_backoff(
    streamer_server: ScriptedServer,
) -> None:
    sleep = RecordingSleep()
    client = make_client(streamer_server.address, sleep)
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    for _ in range(3):
        await (await streamer_server.next_call()).fail(grpc.StatusCode.UNAVAILABLE, "down")
    call = await streamer_server.next_call()
    await call.push(batch("a"))
    await call.push(batch("b"))
    await wait_until(lambda: len(listener.batches) == 2)
    await call.fail(grpc.StatusCode.UNAVAILABLE, "down again")
    await streamer_server.next_call()
    # 1, 2, 4 while failing; data resets the sequence so the next failure waits 1 again.
    assert sleep.delays == [1.0, 2.0, 4.0, 1.0]
    await finish(client, listener, task)


async def test_update_false_reports_eof_then_new_call_after_interval(
    streamer_server: ScriptedServer,
) -> None:
    sleep = RecordingSleep()
    client = make_client(streamer_server.address, sleep)
    listener = Recorder(verdicts=[False])
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(batch("a"))
    second = await streamer_server.next_call()
    assert len(listener.errors) == 1
    assert isinstance(listener.errors[0], EOFError)
    assert isinstance(listener.errors[0], ListenerDeclined)
    assert sleep.delays == [5.0]
    await call.wait_closed()  # the first call was cancelled by the client
    await second.push(batch("b"))
    await wait_until(lambda: len(listener.batches) == 2)
    await finish(client, listener, task)


async def test_update_false_and_report_error_returns_error_stops(
    streamer_server: ScriptedServer,
) -> None:
    chosen = RuntimeError("listener gives up")
    client = make_client(streamer_server.address)
    listener = Recorder(verdicts=[False], answers=[chosen])
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(batch("a"))
    with pytest.raises(RuntimeError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value is chosen
    assert not client.listeners()  # name is free again
    client.add_listener(Recorder())
    await client.close()


async def test_update_raises_reports_it_and_retries_after_backoff(
    streamer_server: ScriptedServer,
) -> None:
    boom = ValueError("bad batch")
    sleep = RecordingSleep()
    client = make_client(streamer_server.address, sleep)
    listener = Recorder(verdicts=[boom, boom])
    task = asyncio.create_task(client.stream(listener))
    for _ in range(2):
        call = await streamer_server.next_call()
        await call.push(batch("a"))
    third = await streamer_server.next_call()
    assert listener.errors == [boom, boom]
    assert sleep.delays == [1.0, 2.0]
    await third.push(batch("ok"))
    await wait_until(lambda: len(listener.batches) == 3)
    await finish(client, listener, task)


async def test_update_raises_and_report_error_returns_error_stops(
    streamer_server: ScriptedServer,
) -> None:
    chosen = LookupError("stop")
    client = make_client(streamer_server.address)
    listener = Recorder(verdicts=[ValueError("bad")], answers=[chosen])
    task = asyncio.create_task(client.stream(listener))
    await (await streamer_server.next_call()).push(batch("a"))
    with pytest.raises(LookupError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value is chosen
    await client.close()


async def test_call_failure_reports_rpc_error_with_code_and_backs_off(
    streamer_server: ScriptedServer,
) -> None:
    sleep = RecordingSleep()
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        streaming_interval=20.0,
        backoff=Backoff(),  # gRPC defaults: 1 s, x1.6, +/-20 %
        sleep=sleep,
        rng=random.Random(3),
    )
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    for code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    ):
        await (await streamer_server.next_call()).fail(code, f"no: {code.name}")
    await streamer_server.next_call()
    codes = [e.code() for e in listener.errors]  # type: ignore[attr-defined]
    assert codes == [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    ]
    assert all(isinstance(e, grpc.RpcError) for e in listener.errors)
    bases = [1.0, 1.6, 2.56, 4.096]
    assert len(sleep.delays) == 4
    for delay, base in zip(sleep.delays, bases, strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len(set(sleep.delays)) == 4
    await finish(client, listener, task)


async def test_call_failure_and_report_error_returns_error_stops(
    streamer_server: ScriptedServer,
) -> None:
    client = make_client(streamer_server.address)
    chosen = ConnectionError("give up")
    listener = Recorder(answers=[chosen])
    task = asyncio.create_task(client.stream(listener))
    await (await streamer_server.next_call()).fail(grpc.StatusCode.INTERNAL, "x")
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(task, 5)
    assert len(streamer_server.requests) == 1
    await client.close()


async def test_report_error_raising_stops_with_that_exception(
    streamer_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(streamer_server.address)
    listener = Recorder(answers=[KeyError])
    task = asyncio.create_task(client.stream(listener))
    await (await streamer_server.next_call()).fail(grpc.StatusCode.UNAVAILABLE, "x")
    with pytest.raises(KeyError):
        await asyncio.wait_for(task, 5)
    assert "report_error() of stream 's1' raised KeyError" in caplog.text
    assert not client.listeners()
    await client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cannot_connect_is_reported_as_unavailable() -> None:
    sleep = RecordingSleep(real_scale=0.001)
    client = make_client(f"127.0.0.1:{free_port()}", sleep)
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    # the third backoff is scheduled just after the third report: wait for both
    await wait_until(lambda: len(listener.errors) >= 3 and len(sleep.delays) >= 3)
    assert listener.errors[0].code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert sleep.delays[:3] == [1.0, 2.0, 4.0]
    client.remove_listener(listener)
    assert await asyncio.wait_for(task, 2) is None
    await client.close()


async def test_server_down_then_up_reconnects_with_backoff_and_resets() -> None:
    """Real sleeps, short backoff: the stream finds the server once it comes up."""
    port = free_port()
    sleep = RecordingSleep(real_scale=1.0)
    client = new_streamer_client(
        StaticRegistry(f"127.0.0.1:{port}", max_reconnect_backoff=0.2),
        streaming_interval=0.5,
        backoff=Backoff(initial=0.02, multiplier=2.0, jitter=0.2, maximum=0.2),
        sleep=sleep,
        rng=random.Random(1),
    )
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    await wait_until(lambda: len(listener.errors) >= 4)
    server = ScriptedServer(port=port)
    await server.start()
    try:
        call = await server.next_call(timeout=5)
        await call.push(batch("back"))
        await wait_until(lambda: len(listener.batches) == 1)
        failures = len(sleep.delays)
        assert all(
            0.8 * min(0.02 * 2**i, 0.2) <= d <= 1.2 * min(0.02 * 2**i, 0.2)
            for i, d in enumerate(sleep.delays[:failures])
        )
        await call.fail(grpc.StatusCode.UNAVAILABLE, "blip")
        await server.next_call(timeout=5)
        assert 0.016 <= sleep.delays[failures] <= 0.024  # backoff was reset by the data
    finally:
        client.remove_listener(listener)
        await asyncio.wait_for(task, 2)
        await client.close()
        await server.stop()


async def test_remove_listener_on_quiet_open_stream_returns_promptly(
    streamer_server: ScriptedServer,
) -> None:
    client = make_client(streamer_server.address)
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(batch("a"))
    await wait_until(lambda: len(listener.batches) == 1)
    assert client.remove_listener(listener)
    assert await asyncio.wait_for(task, 1.0) is None
    await asyncio.wait_for(call.wait_closed(), 2)
    assert not client.listeners()
    await client.close()


async def test_remove_listener_during_wait_returns_promptly(
    streamer_server: ScriptedServer,
) -> None:
    client = new_streamer_client(StaticRegistry(streamer_server.address), streaming_interval=600)
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    await (await streamer_server.next_call()).end()
    await wait_until(lambda: client.runner("s1").state.value == "waiting")  # type: ignore[union-attr]
    client.remove_listener(listener)
    assert await asyncio.wait_for(task, 1.0) is None
    await client.close()


async def test_remove_listener_lets_running_update_finish(
    streamer_server: ScriptedServer,
) -> None:
    client = make_client(streamer_server.address)
    listener = Blocking()
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(batch("a"))
    await asyncio.to_thread(listener.entered.wait, 5)
    client.remove_listener(listener)
    await asyncio.sleep(0.05)
    assert not task.done()  # the update in progress is not abandoned
    listener.release.set()
    assert await asyncio.wait_for(task, 2) is None
    assert listener.finished.is_set()
    assert listener.keys() == [["a"]]
    await client.close()


async def test_remove_listener_from_another_thread(streamer_server: ScriptedServer) -> None:
    client = make_client(streamer_server.address)
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    await streamer_server.next_call()
    assert await asyncio.to_thread(client.remove_listener, listener)
    assert await asyncio.wait_for(task, 1.0) is None
    await client.close()


async def test_slow_update_in_one_stream_does_not_delay_another(
    streamer_server: ScriptedServer,
) -> None:
    client = make_client(streamer_server.address)
    slow, fast = Blocking("slow"), Recorder("fast")
    tasks = [asyncio.create_task(client.stream(slow)), asyncio.create_task(client.stream(fast))]
    calls = {}
    for _ in range(2):
        c = await streamer_server.next_call()
        calls[c.request.stream_name] = c
    await calls["slow"].push(batch("s"))
    await asyncio.to_thread(slow.entered.wait, 5)
    for i in range(10):
        await calls["fast"].push(batch(f"f{i}"))
    await wait_until(lambda: len(fast.batches) == 10)
    assert not slow.finished.is_set()  # all ten arrived while the slow update was blocked
    slow.release.set()
    await asyncio.to_thread(slow.finished.wait, 5)
    for listener in (slow, fast):
        client.remove_listener(listener)
    await asyncio.gather(*tasks)
    await client.close()


async def test_async_listener(streamer_server: ScriptedServer) -> None:
    client = make_client(streamer_server.address)
    listener = AsyncRecorder()
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    value = wrappers_pb2.StringValue()
    call.request.extra_args.Unpack(value)
    assert value.value == "async-0"
    await call.push(batch("x"))
    await wait_until(lambda: len(listener.batches) == 1)
    await call.fail(grpc.StatusCode.ABORTED, "x")
    await streamer_server.next_call()
    assert listener.errors[0].code() == grpc.StatusCode.ABORTED  # type: ignore[attr-defined]
    await finish(client, listener, task)


async def test_duplicate_names(streamer_server: ScriptedServer) -> None:
    client = make_client(streamer_server.address)
    first, other = Recorder("dup"), Recorder("dup")
    client.add_listener(first)
    with pytest.raises(DuplicateStreamError, match="'dup'"):
        client.add_listener(other)
    with pytest.raises(DuplicateStreamError):
        await client.stream(other)
    task = asyncio.create_task(client.stream(first))
    await streamer_server.next_call()
    with pytest.raises(DuplicateStreamError, match="already streaming"):
        await client.stream(first)
    assert not client.remove_listener(other)  # not the registered object
    assert client.remove_listener(first)
    await task
    client.add_listener(other)  # free again
    assert client.remove_listener(other)
    assert not client.remove_listener(other)
    await client.close()


async def test_invalid_listener_rejected() -> None:
    client = make_client("127.0.0.1:1")

    class NoUpdate:
        name = "x"

        def get_extra_args(self) -> None:
            return None

        def report_error(self, error: BaseException) -> None:
            return None

    with pytest.raises(TypeError, match=r"missing method update\(\)"):
        client.add_listener(NoUpdate())  # type: ignore[arg-type]
    await client.close()


async def test_snapshot_above_grpc_default_receive_limit(streamer_server: ScriptedServer) -> None:
    client = make_client(streamer_server.address)
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    big = DataUpdateBatch(
        updates=[DataUpdate(key=f"imsi{i:015d}", value=b"x" * 300) for i in range(18_000)],
        resync=True,
    )
    assert big.ByteSize() > 4 * 1024 * 1024
    await call.push(big)
    await wait_until(lambda: len(listener.batches) == 1)
    assert len(listener.batches[0].updates) == 18_000
    await finish(client, listener, task)


async def test_observer_sees_events(streamer_server: ScriptedServer) -> None:
    events: list[tuple[str, object]] = []

    threads: set[threading.Thread] = set()

    class Obs:
        def __getattr__(self, name: str) -> object:
            def record(stream: str, *args: object) -> None:
                threads.add(threading.current_thread())
                events.append((name, args[0] if args else None))

            return record

    class Exploding:
        def __getattr__(self, name: str) -> object:
            def boom(*args: object) -> None:
                raise RuntimeError("observer bug")

            return boom

    client = make_client(streamer_server.address, observer=Obs())
    listener = Recorder(verdicts=[True, ValueError("x")])
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(batch("a"))
    await call.push(batch("b"))
    await streamer_server.next_call()
    client.remove_listener(listener)
    await task
    names = [n for n, _ in events]
    # The same events in the same order on both paths, always on the event loop's thread.
    assert threads == {threading.main_thread()}
    assert names[:10] == [
        "stream_started", "state_changed", "state_changed", "batch_received", "update_done",
        "batch_received", "update_done", "error_reported", "state_changed",
        "reconnect_scheduled",
    ]  # fmt: skip
    assert names[-2:] == ["state_changed", "stream_stopped"]
    assert names.count("batch_received") == 2
    assert ("update_done" in names) and ("error_reported" in names)
    assert ("reconnect_scheduled", 1.0) in events
    states = [a.value for n, a in events if n == "state_changed"]  # type: ignore[attr-defined]
    assert states[:4] == ["connecting", "streaming", "waiting", "connecting"]
    assert states[-1] == "stopped"
    await client.close()

    # A broken observer never breaks the stream.
    client = make_client(streamer_server.address, observer=Exploding())
    listener = Recorder("s2")
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(batch("a"))
    await wait_until(lambda: len(listener.batches) == 1)
    await finish(client, listener, task)


async def test_streams_spread_over_connections_when_one_is_full(
    streamer_server: ScriptedServer,
) -> None:
    client = make_client(streamer_server.address, max_streams_per_channel=2)
    listeners = [Recorder(f"s{i}") for i in range(5)]
    tasks = [asyncio.create_task(client.stream(li)) for li in listeners]
    for _ in range(5):
        await streamer_server.next_call()
    peers = {c.peer for c in streamer_server.calls}
    assert len(peers) == 3  # 2 + 2 + 1 streams, one TCP connection each
    for li in listeners:
        client.remove_listener(li)
    await asyncio.gather(*tasks)
    await client.close()


async def test_close_stops_every_stream(streamer_server: ScriptedServer) -> None:
    client = make_client(streamer_server.address)
    listeners = [Recorder("c1"), Recorder("c2")]
    tasks = [asyncio.create_task(client.stream(li)) for li in listeners]
    for _ in listeners:
        await streamer_server.next_call()
    await asyncio.wait_for(client.close(), 2)
    assert all(t.done() and t.result() is None for t in tasks)
    assert not client.listeners()


async def test_observer_subclassing_null_observer_still_sees_batches(
    streamer_server: ScriptedServer,
) -> None:
    from streamer.client.events import NullObserver

    seen: list[str] = []

    class Partial(NullObserver):
        def update_done(self, stream: str, duration: float, verdict: bool | None) -> None:
            seen.append(stream)

    client = make_client(streamer_server.address, observer=Partial())
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    await (await streamer_server.next_call()).push(batch("a"))
    await wait_until(lambda: seen == ["s1"])
    await finish(client, listener, task)


async def test_stream_is_streaming_when_the_server_accepts_without_data() -> None:
    """A push server whose data matches the sink's digest sends headers but no snapshot."""
    from streamer.server.reference import ReferenceServer
    from streamer.server.sources import MemorySource
    from streamer.wire.digest import snapshot_digest

    data = {"k": b"v"}
    server = ReferenceServer(MemorySource({"s1": data}), "push")
    await server.start()
    digest = wrappers_pb2.StringValue(value=snapshot_digest(data.items()))
    client = make_client(server.address)
    listener = Recorder(extra=digest)
    task = asyncio.create_task(client.stream(listener))
    try:
        await wait_until(lambda: client.runner("s1") is not None)
        await wait_until(lambda: client.runner("s1").state.value == "streaming")  # type: ignore[union-attr]
        assert listener.batches == []
    finally:
        client.remove_listener(listener)
        await task
        await client.close()
        await server.stop(0)


async def test_no_report_error_for_an_update_that_fails_after_removal(
    streamer_server: ScriptedServer, listener_path: Callable[[type[Blocking]], type[Blocking]]
) -> None:
    client = make_client(streamer_server.address)

    class FailsLate(listeners.Blocking):  # the sync original; listener_path makes its twin
        def update(self, batch: DataUpdateBatch) -> bool:
            super().update(batch)
            raise ValueError("failed while being removed")

    listener = listener_path(FailsLate)()
    task = asyncio.create_task(client.stream(listener))
    await (await streamer_server.next_call()).push(batch("a"))
    await asyncio.to_thread(listener.entered.wait, 5)
    client.remove_listener(listener)
    listener.release.set()
    assert await asyncio.wait_for(task, 2) is None
    assert listener.errors == []  # nobody wants a decision from a removed listener
    await client.close()


# -- two ways to run a stream ---------------------------------------------------------------------


async def test_remove_listener_during_backoff_returns_promptly(
    streamer_server: ScriptedServer,
) -> None:
    """A real (not injected) backoff wait of 10 minutes: remove_listener ends it at once, on
    both paths (the thread waits on an event that stop() sets)."""
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        backoff=Backoff(initial=600.0, maximum=600.0, jitter=0.0),
        streaming_interval=600,
    )
    listener = Recorder()
    task = asyncio.create_task(client.stream(listener))
    await (await streamer_server.next_call()).fail(grpc.StatusCode.UNAVAILABLE, "down")
    await wait_until(lambda: client.runner("s1").state.value == "waiting")  # type: ignore[union-attr]
    assert [e.code() for e in listener.errors] == [grpc.StatusCode.UNAVAILABLE]  # type: ignore[attr-defined]
    started = time.monotonic()
    client.remove_listener(listener)
    assert await asyncio.wait_for(task, 2.0) is None
    assert time.monotonic() - started < 2.0
    await client.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_sync_listener_reads_in_a_thread_of_its_own_async_on_the_loop(
    streamer_server: ScriptedServer, kind: str
) -> None:
    """A sync update() is called by the stream's own thread, the one reading the call (no
    hand-off per batch); an async one on the event loop. The thread is joined when the stream
    ends and the process-wide thread stack size is left as it was."""
    from streamer.client.stream import StreamRunner
    from streamer.client.threaded import ThreadedRunner

    seen: list[threading.Thread] = []

    class Where(listeners.Recorder):
        def update(self, batch: DataUpdateBatch) -> bool:
            seen.append(threading.current_thread())
            return bool(super().update(batch))

    cls = Where if kind == "sync" else listeners.async_twin(Where)
    stack_before = threading.stack_size()
    client = make_client(streamer_server.address)
    listener = cls()
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    for i in range(5):
        await call.push(batch(f"k{i}"))
    await wait_until(lambda: len(listener.batches) == 5)
    runner = client.runner("s1")
    assert threading.stack_size() == stack_before
    if kind == "sync":
        assert isinstance(runner, ThreadedRunner)
        assert runner.thread is not None and set(seen) == {runner.thread}
        assert runner.thread is not threading.main_thread() and runner.thread.daemon
    else:
        assert isinstance(runner, StreamRunner)
        assert set(seen) == {threading.main_thread()}
    await finish(client, listener, task)
    if kind == "sync":
        assert runner.thread is not None and not runner.thread.is_alive()  # type: ignore[union-attr]


async def test_sync_listener_on_a_registry_without_sync_channels_runs_on_the_loop(
    streamer_server: ScriptedServer,
) -> None:
    """A custom registry that only offers grpc.aio channels still serves sync listeners
    (their methods then run on worker threads, as before)."""
    from streamer.client.stream import StreamRunner

    class AioOnly:
        def __init__(self, inner: StaticRegistry) -> None:
            self.inner = inner

        def get_channel(self, service: str, shard: int = 0) -> grpc.aio.Channel:
            return self.inner.get_channel(service, shard)

        async def close(self) -> None:
            await self.inner.close()

    client = new_streamer_client(AioOnly(StaticRegistry(streamer_server.address)))
    listener = listeners.Recorder()
    task = asyncio.create_task(client.stream(listener))
    await (await streamer_server.next_call()).push(batch("a"))
    await wait_until(lambda: len(listener.batches) == 1)
    assert isinstance(client.runner("s1"), StreamRunner)
    await finish(client, listener, task)
