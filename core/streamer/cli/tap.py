"""``streamer tap STREAM``: watch one stream's batches as the cloud sends them.

Tap opens its own ``GetUpdates`` call with the configured ``[cloud]`` settings and prints each
batch (resync flag, counts, keys, value sizes; values only when asked). It touches neither the
running host nor any sink. Like a sink, it sends the digest of what it has seen, so a poll-mode
server that has nothing new sends nothing; when the server ends a call, tap makes a new one after
the streaming interval.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import TYPE_CHECKING, Any, TextIO

import grpc
import grpc.aio
from google.protobuf import wrappers_pb2

from streamer.base.logs import escape
from streamer.client.connection import ResolvedConnection
from streamer.client.defaults import STREAMING_INTERVAL
from streamer.client.diagnose import diagnose
from streamer.client.stream import pack_extra_args, set_extra_args
from streamer.wire import METHOD
from streamer.wire.digest import Digester
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest

if TYPE_CHECKING:
    from streamer.client.registry import GatewayRegistry

__all__ = ["TapView", "tap"]


class TapView:
    """What tap holds of the stream (for the digest it sends) and how it prints a batch."""

    def __init__(self, stream: str, *, values: bool, as_json: bool) -> None:
        self.stream = stream
        self.values = values
        self.as_json = as_json
        self._held: dict[str, bytes] = {}
        self._digest = Digester()

    def apply(self, batch: DataUpdateBatch) -> None:
        if batch.resync:
            self._held.clear()
            self._digest = Digester()
        for u in batch.updates:
            old = self._held.pop(u.key, None)
            if old is not None:
                self._digest.remove(u.key, old)
            if u.value:
                self._held[u.key] = u.value
                self._digest.add(u.key, u.value)

    def extra_args(self) -> Any:
        return pack_extra_args(wrappers_pb2.StringValue(value=self._digest.hexdigest()))

    def render(self, batch: DataUpdateBatch, now: float) -> str:
        deleted = sum(1 for u in batch.updates if not u.value)
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        if self.as_json:
            doc: dict[str, Any] = {
                "ts": now,
                "stream": self.stream,
                "resync": batch.resync,
                "set": len(batch.updates) - deleted,
                "deleted": deleted,
                "updates": [self._json_update(u.key, u.value) for u in batch.updates],
            }
            return json.dumps(doc, ensure_ascii=False)
        kind = "snapshot" if batch.resync else "update"
        lines = [
            f"{stamp} {kind:<8} {len(batch.updates) - deleted} set, {deleted} deleted"
            + (f" (stream now holds {len(self._held)} keys)" if batch.resync else "")
        ]
        for u in batch.updates:
            if not u.value:
                lines.append(f"  - {escape(u.key)}")
                continue
            line = f"  + {escape(u.key)} ({len(u.value)} B)"
            if self.values:
                line += " = " + escape(u.value.decode("utf-8", "backslashreplace"), 10_000)
            lines.append(line)
        return "\n".join(lines)

    def _json_update(self, key: str, value: bytes) -> dict[str, Any]:
        out: dict[str, Any] = {"key": key, "size": len(value), "deleted": not value}
        if self.values and value:
            out["value_base64"] = base64.b64encode(value).decode("ascii")
        return out


async def tap(
    registry: GatewayRegistry,
    stream: str,
    *,
    out: TextIO,
    err: TextIO,
    values: bool = False,
    as_json: bool = False,
    interval: float = STREAMING_INTERVAL,
    gateway_id: str = "",
    service: str = "streamer",
) -> int:
    """Print ``stream``'s batches until cancelled; 1 when a call fails, after printing why."""
    view = TapView(stream, values=values, as_json=as_json)
    connection: ResolvedConnection | None = getattr(registry, "connection", None)
    channel = registry.get_channel(service)
    try:
        while True:
            request = StreamRequest(gatewayId=gateway_id, stream_name=stream)
            set_extra_args(request, view.extra_args())
            call = channel.unary_stream(
                METHOD,
                request_serializer=StreamRequest.SerializeToString,
                response_deserializer=DataUpdateBatch.FromString,
            )(request)
            try:
                async for batch in call:
                    view.apply(batch)
                    print(view.render(batch, time.time()), file=out, flush=True)
            except grpc.aio.AioRpcError as exc:
                found = diagnose(exc.code(), exc.details() or "", connection)
                why = str(found) if found is not None else escape(exc.details() or "")
                print(f"streamer tap: {stream}: {exc.code().name}: {why}", file=err, flush=True)
                return 1
            finally:
                call.cancel()
            await asyncio.sleep(interval)
    finally:
        await registry.close()
