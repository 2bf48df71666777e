"""The mass-change guard wired into the stream runner, against a real gRPC server on loopback:
a held batch never reaches update(), the call ends, the stream asks again after the interval,
the cloud insisting applies it, a release applies it at once, held_keys() seeds the guard."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamer import Backoff, StaticRegistry
from streamer.client.client import Client
from streamer.client.events import NullObserver
from streamer.client.guard import GuardPolicy, Hold
from streamer.testing import ScriptedServer
from streamer.wire import DataUpdate, DataUpdateBatch
from tests.listeners import Recorder, RecordingSleep

# Every test runs on both ways of running a stream (its own thread, the event loop): the batch
# gate is shared, so the two cannot drift.
pytestmark = pytest.mark.usefixtures("listener_path")


def snap(n: int, start: int = 0) -> DataUpdateBatch:
    return DataUpdateBatch(
        updates=[DataUpdate(key=f"k{i}", value=b"v") for i in range(start, start + n)],
        resync=True,
    )


class Events(NullObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def batch_held(self, stream: str, hold: Hold) -> None:
        self.seen.append(("held", hold))

    def hold_ended(self, stream: str, how: str) -> None:
        self.seen.append(("ended", how))

    def in_sync(self, stream: str) -> None:
        self.seen.append(("in_sync", None))

    def kinds(self) -> list[str]:
        return [kind if kind != "ended" else f"ended:{arg}" for kind, arg in self.seen]


def client_for(address: str, sleep: Any, observer: Events, **kw: Any) -> Client:
    return Client(
        StaticRegistry(address),
        streaming_interval=5.0,
        backoff=Backoff(initial=1.0, multiplier=2.0, jitter=0.0),
        observer=observer,
        sleep=sleep,
        **kw,
    )


async def stop(client: Client, listener: Recorder, task: asyncio.Task[None]) -> None:
    assert client.remove_listener(listener)
    assert await asyncio.wait_for(task, 5) is None
    await client.close()


async def test_a_wiping_snapshot_is_held_until_served_three_times(
    streamer_server: ScriptedServer,
) -> None:
    sleep, events, listener = RecordingSleep(), Events(), Recorder()
    client = client_for(streamer_server.address, sleep, events)
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(snap(10))
    await call.end()
    for served in (1, 2):  # the cloud serves an empty snapshot: held, listener untouched
        call = await streamer_server.next_call()
        await call.push(DataUpdateBatch(resync=True))
        await call.end()
        await asyncio.sleep(0.05)
        assert len(listener.batches) == 1
        kind, hold = events.seen[-1]
        assert kind == "held" and (hold.seen, hold.would_delete, hold.held_keys) == (served, 10, 10)
        assert hold.describe() == "held snapshot: would delete 10 of 10 keys"
    call = await streamer_server.next_call()  # the third time: the cloud insists
    await call.push(DataUpdateBatch(resync=True))
    await call.end()
    await streamer_server.next_call()
    assert len(listener.batches) == 2 and not listener.batches[1].updates
    assert events.kinds() == ["in_sync", "held", "held", "ended:confirmed", "in_sync"]
    assert sleep.delays == [5.0] * 4  # each new call after the streaming interval
    assert listener.errors == []  # a hold is not an error of the listener's
    await stop(client, listener, task)


async def test_push_mode_a_held_batch_ends_the_call(streamer_server: ScriptedServer) -> None:
    sleep, events, listener = RecordingSleep(), Events(), Recorder()
    client = client_for(streamer_server.address, sleep, events)
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(snap(10))
    wipe = DataUpdateBatch(updates=[DataUpdate(key=f"k{i}") for i in range(8)])
    await call.push(wipe)  # an incremental batch deleting 8 of 10 keys
    await call.wait_closed()
    assert call.cancelled  # the client ended the open call
    nxt = await streamer_server.next_call()  # and asked again after the interval
    assert sleep.delays == [5.0]
    assert len(listener.batches) == 1
    hold = events.seen[-1][1]
    assert not hold.resync and hold.describe() == "held update: would delete 8 of 10 keys"
    # The next call's snapshot deleting no more than half passes and ends the hold.
    await nxt.push(snap(6))
    await asyncio.sleep(0.05)
    assert len(listener.batches) == 2 and events.kinds()[-1] == "ended:superseded"
    await stop(client, listener, task)


async def test_a_different_snapshot_replaces_the_held_one(streamer_server: ScriptedServer) -> None:
    events, listener = Events(), Recorder()
    client = client_for(streamer_server.address, RecordingSleep(), events)
    task = asyncio.create_task(client.stream(listener))
    for batch in (snap(10), snap(2), snap(2), snap(3, start=100), snap(3, start=100)):
        call = await streamer_server.next_call()
        await call.push(batch)
        await call.end()
    await streamer_server.next_call()
    holds = [arg for kind, arg in events.seen if kind == "held"]
    assert [(h.seen, h.would_delete) for h in holds] == [(1, 8), (2, 8), (1, 10), (2, 10)]
    assert len(listener.batches) == 1
    await stop(client, listener, task)


async def test_release_wakes_the_waiting_stream(streamer_server: ScriptedServer) -> None:
    events, listener = Events(), Recorder()
    sleep = RecordingSleep(real_scale=1.0)
    client = Client(
        StaticRegistry(streamer_server.address),
        streaming_interval=60.0,
        backoff=Backoff(initial=1.0, multiplier=2.0, jitter=0.0),
        observer=events,
        sleep=sleep,
    )
    # One open call: the first snapshot, then an empty one, which is held and ends the call;
    # the stream then waits the 60 s interval, which only the release cuts short.
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(snap(10))
    await call.push(DataUpdateBatch(resync=True))  # an empty snapshot on the open call
    await call.wait_closed()
    await asyncio.sleep(0.05)
    assert events.kinds()[-1] == "held" and sleep.delays == [60.0]
    result = client.release("s1")
    assert result is not None and result.released
    assert result.detail == "released: applying the snapshot: would delete 10 of 10 keys"
    # Applied now, not after the 60 s interval; then a new call at once.
    await asyncio.wait_for(streamer_server.next_call(), 5)
    assert len(listener.batches) == 2 and not listener.batches[1].updates
    assert events.kinds()[-1] == "ended:released"
    again = client.release("s1")
    assert again is not None and not again.released and again.detail == "stream 's1': nothing held"
    assert client.release("nosuch") is None
    await stop(client, listener, task)


class Seeded(Recorder):
    def __init__(self, held: object) -> None:
        super().__init__()
        self.held = held
        self.asked = 0

    def held_keys(self) -> object:
        self.asked += 1
        if isinstance(self.held, BaseException):
            raise self.held
        return self.held


@pytest.mark.parametrize(("held", "applied"), [(10, False), (None, True), (RuntimeError(), True)])
async def test_held_keys_seeds_the_guard_after_a_restart(
    streamer_server: ScriptedServer, held: object, applied: bool
) -> None:
    events, listener = Events(), Seeded(held)
    client = client_for(streamer_server.address, RecordingSleep(), events)
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(snap(1))  # the sink held 10 keys before the restart: 9 would go
    await call.end()
    await streamer_server.next_call()
    assert listener.asked == 1
    assert (len(listener.batches) == 1) is applied
    await stop(client, listener, task)


async def test_guard_off(streamer_server: ScriptedServer) -> None:
    events, listener = Events(), Recorder()
    client = client_for(streamer_server.address, RecordingSleep(), events, guard=GuardPolicy(0))
    task = asyncio.create_task(client.stream(listener))
    for batch in (snap(10), DataUpdateBatch(resync=True)):
        call = await streamer_server.next_call()
        await call.push(batch)
        await call.end()
    await streamer_server.next_call()
    assert len(listener.batches) == 2 and "held" not in events.kinds()
    await stop(client, listener, task)
