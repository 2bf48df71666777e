"""streamer: a plugin host that keeps a gateway in sync with its cloud.

Names are imported lazily so that ``import streamer`` (and ``streamer list`` / ``check``)
never pays for importing gRPC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from streamer.listener import Listener

if TYPE_CHECKING:
    from streamer.backoff import Backoff
    from streamer.client import (
        STREAMING_INTERVAL,
        Client,
        DuplicateStreamError,
        new_streamer_client,
    )
    from streamer.events import Decision, StreamObserver, StreamState
    from streamer.registry import (
        GatewayRegistry,
        MagmaRegistry,
        RegistryError,
        StaticRegistry,
        TLSConfig,
    )

__version__ = "0.1.0"

_LAZY = {
    "Backoff": "streamer.backoff",
    "STREAMING_INTERVAL": "streamer.client",
    "Client": "streamer.client",
    "DuplicateStreamError": "streamer.client",
    "new_streamer_client": "streamer.client",
    "Decision": "streamer.events",
    "StreamObserver": "streamer.events",
    "StreamState": "streamer.events",
    "GatewayRegistry": "streamer.registry",
    "MagmaRegistry": "streamer.registry",
    "RegistryError": "streamer.registry",
    "StaticRegistry": "streamer.registry",
    "TLSConfig": "streamer.registry",
}

__all__ = [
    "STREAMING_INTERVAL",
    "Backoff",
    "Client",
    "Decision",
    "DuplicateStreamError",
    "GatewayRegistry",
    "Listener",
    "MagmaRegistry",
    "RegistryError",
    "StaticRegistry",
    "StreamObserver",
    "StreamState",
    "TLSConfig",
    "__version__",
    "new_streamer_client",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
