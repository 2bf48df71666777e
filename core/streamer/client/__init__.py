"""The gateway runtime's core: the listener contract, the supervisor's pure decision table,
backoff, one stream's runner, the client that holds many streams, connection settings and
gateway registries, and the mass-change guard.

May import: ``streamer.wire``, ``streamer.base``, grpcio. Never the host, server, sink kit,
testing kit or CLI (checked by the import-linter contract in pyproject.toml).

The client API is re-exported here lazily (importing ``streamer.client.listener`` alone does not
import gRPC): ``from streamer.client import Client`` works as it did when this was a module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamer.base.lazy import lazy_getattr

if TYPE_CHECKING:
    from streamer.client.client import (
        DEFAULT_MAX_STREAMS_PER_CHANNEL,
        STREAMING_INTERVAL,
        Client,
        DuplicateStreamError,
        new_streamer_client,
    )

__all__ = [
    "DEFAULT_MAX_STREAMS_PER_CHANNEL",
    "STREAMING_INTERVAL",
    "Client",
    "DuplicateStreamError",
    "new_streamer_client",
]

__getattr__ = lazy_getattr(__name__, dict.fromkeys(__all__, "streamer.client.client"))
