"""A minimal grpc.aio Streamer server for the benchmarks, run in its own process.

What a call gets depends on its ``stream_name`` (so one server serves every experiment):

- ``flood/<batches>/<updates>/<value_bytes>``: one pre-serialized DataUpdateBatch written
  ``batches`` times as fast as flow control allows, then the call ends OK.
- ``hold[/<anything>]``: one small batch, then the call stays open until the client leaves.
- ``quiet[/<anything>]``: response headers only, then the call stays open.
- ``rate/<per_second>/<batches>``: one-update batches on a fixed schedule; each value is the
  send time (``time.monotonic_ns()``, 8 bytes big-endian; CLOCK_MONOTONIC is system-wide on
  Linux, so the client process can subtract it from its own clock), then the call ends.

Prints ``ready <port>`` once listening. Usage: ``push_server.py --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import time

import grpc
import grpc.aio

from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch, StreamRequest

SERVICE = "magma.orc8r.Streamer"
_cache: dict[tuple[int, int], bytes] = {}


def flood_batch(updates: int, value_bytes: int) -> bytes:
    key = (updates, value_bytes)
    if key not in _cache:
        value = b"v" * value_bytes
        _cache[key] = DataUpdateBatch(
            updates=[DataUpdate(key=f"key-{i:06d}", value=value) for i in range(updates)]
        ).SerializeToString()
    return _cache[key]


async def get_updates(request: StreamRequest, context: grpc.aio.ServicerContext) -> None:
    parts = request.stream_name.split("/")
    kind = parts[0]
    if kind == "flood":
        batches, updates, size = (int(p) for p in parts[1:4])
        payload = flood_batch(updates, size)
        write = context.write
        for _ in range(batches):
            await write(payload)
    elif kind == "hold":
        await context.write(flood_batch(1, 16))
        await asyncio.Event().wait()
    elif kind == "quiet":
        await context.send_initial_metadata(())
        await asyncio.Event().wait()
    elif kind == "rate":
        per_second, batches = float(parts[1]), int(parts[2])
        start = time.monotonic()
        for i in range(batches):
            delay = start + i / per_second - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            stamp = struct.pack(">Q", time.monotonic_ns())
            await context.write(
                DataUpdateBatch(updates=[DataUpdate(key="t", value=stamp)]).SerializeToString()
            )
    else:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown stream {request.stream_name!r}")


async def serve(port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    )
    handler = grpc.unary_stream_rpc_method_handler(
        get_updates, request_deserializer=StreamRequest.FromString, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"GetUpdates": handler})]
    )
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot listen on port {port}")
    await server.start()
    print(f"ready {port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
