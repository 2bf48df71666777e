"""``streamer check --connect``: open the configured connection and one GetUpdates per stream.

Each call is read until its response headers or first batch arrive, then cancelled; nothing is
handed to a listener. A failure is explained with ``streamer.client.diagnose``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

from streamer.client.connection import ResolvedConnection
from streamer.client.diagnose import diagnose
from streamer.client.registry import GatewayRegistry
from streamer.wire import METHOD
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest

__all__ = ["ProbeResult", "describe_failure", "probe_streams"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    stream: str
    ok: bool
    detail: str  # "OK ..." or the problem, one line


def describe_failure(code: grpc.StatusCode, details: str, conn: ResolvedConnection | None) -> str:
    """One line for a failed call: the diagnosis when known, else gRPC's code and details."""
    found = diagnose(code, details, conn)
    return str(found) if found is not None else f"{code.name}: {details}"


async def _probe_one(
    channel: grpc.aio.Channel,
    stream: str,
    gateway_id: str,
    timeout: float,
    conn: ResolvedConnection | None,
) -> ProbeResult:
    call: grpc.aio.UnaryStreamCall[StreamRequest, DataUpdateBatch] = channel.unary_stream(
        METHOD,
        request_serializer=StreamRequest.SerializeToString,
        response_deserializer=DataUpdateBatch.FromString,
    )(StreamRequest(gatewayId=gateway_id, stream_name=stream))
    headers = asyncio.ensure_future(call.initial_metadata())
    first = asyncio.ensure_future(call.read())
    try:
        done, _ = await asyncio.wait(
            (headers, first), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if first in done and first.exception() is None:
            batch = first.result()
            if batch is not grpc.aio.EOF:  # type: ignore[attr-defined]
                assert isinstance(batch, DataUpdateBatch)
                return ProbeResult(stream, True, f"OK (first batch: {len(batch.updates)} updates)")
        elif not done:
            return ProbeResult(stream, False, f"no answer within {timeout:g} s")
        elif not call.done():
            return ProbeResult(stream, True, "OK (stream open, no batch yet)")
        code = await call.code()
        if code is grpc.StatusCode.OK:
            return ProbeResult(stream, True, "OK (call ended without a batch)")
        return ProbeResult(stream, False, describe_failure(code, await call.details(), conn))
    finally:
        call.cancel()
        for task in (headers, first):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def probe_streams(
    registry: GatewayRegistry,
    streams: Sequence[str],
    *,
    gateway_id: str = "",
    timeout: float = 10.0,
    service: str = "streamer",
) -> list[ProbeResult]:
    """One GetUpdates per stream name, in turn, on the registry's channel."""
    conn: ResolvedConnection | None = getattr(registry, "connection", None)
    out = []
    try:
        for stream in streams:
            channel = registry.get_channel(service)
            out.append(await _probe_one(channel, stream, gateway_id, timeout, conn))
    finally:
        await registry.close()
    return out
