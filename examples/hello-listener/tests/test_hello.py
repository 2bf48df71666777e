"""Test the plugin against a real local Streamer server using streamer's pytest kit."""

from __future__ import annotations

import asyncio

from hello_listener import HelloListener

from streamer.testing import ScriptedServer, run_listener


async def test_mirrors_snapshot_and_updates(streamer_server: ScriptedServer) -> None:
    listener = HelloListener({"stream": "greetings"})

    async def cloud() -> None:
        call = await streamer_server.next_call("greetings")
        await call.push({"alice": b"1", "bob": b"2"}, resync=True)
        await call.push({"bob": b""})  # an empty value deletes a key
        await call.push({"carol": b"3"})

    driver = asyncio.create_task(cloud())
    error = await run_listener(
        listener, streamer_server.address, until=lambda: "carol" in listener.seen
    )
    await driver
    assert error is None
    assert listener.seen == {"alice": b"1", "carol": b"3"}
    assert streamer_server.requests[0].stream_name == "greetings"


async def test_entry_point_is_installed() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="streamer.listeners") if e.name == "hello"]
    assert ep.load() is HelloListener
