"""The wire contract: Magma's ``magma.orc8r.Streamer`` messages and method path, and the digest.

``streamer.proto`` was this package's name in 0.1 and still imports (deprecated). The messages
are imported on first use, so ``streamer.wire.digest`` needs neither protobuf nor gRPC, and the
messages never import gRPC. May import: protobuf and ``streamer.base``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamer.base.lazy import lazy_getattr

if TYPE_CHECKING:
    from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch, StreamRequest

SERVICE = "magma.orc8r.Streamer"
"""The gRPC service name, as in Magma's ``orc8r/protos/streamer.proto``."""

METHOD = f"/{SERVICE}/GetUpdates"
"""The one method: a server-streaming call, ``StreamRequest`` in, ``DataUpdateBatch`` out."""

__all__ = ["METHOD", "SERVICE", "DataUpdate", "DataUpdateBatch", "StreamRequest"]

__getattr__ = lazy_getattr(
    __name__,
    dict.fromkeys(("DataUpdate", "DataUpdateBatch", "StreamRequest"), __name__ + ".streamer_pb2"),
)
