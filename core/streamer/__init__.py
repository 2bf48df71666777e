"""streamer: a plugin host that keeps a gateway in sync with its cloud.

Names are imported lazily so that ``import streamer`` (and ``streamer list`` / ``check``)
never pays for importing gRPC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamer.base import aliases
from streamer.base.lazy import lazy_getattr
from streamer.client.listener import Listener

if TYPE_CHECKING:
    from streamer.base.errors import StreamerError
    from streamer.client.backoff import Backoff
    from streamer.client.client import (
        STREAMING_INTERVAL,
        Client,
        DuplicateStreamError,
        new_streamer_client,
    )
    from streamer.client.events import Decision, StreamObserver, StreamState
    from streamer.client.registry import (
        GatewayRegistry,
        MagmaRegistry,
        RegistryError,
        StaticRegistry,
        TLSConfig,
    )
    from streamer.host.schema import ConfigProblems, Doc, PluginConfig, StreamNames, config_schema

__version__ = "0.2.0.dev0"

_LAZY = {
    "Backoff": "streamer.client.backoff",
    "STREAMING_INTERVAL": "streamer.client.client",
    "Client": "streamer.client.client",
    "DuplicateStreamError": "streamer.client.client",
    "new_streamer_client": "streamer.client.client",
    "Decision": "streamer.client.events",
    "StreamObserver": "streamer.client.events",
    "StreamerError": "streamer.base.errors",
    # what a plugin author declares its configuration with
    "ConfigProblems": "streamer.host.schema",
    "Doc": "streamer.host.schema",
    "PluginConfig": "streamer.host.schema",
    "StreamNames": "streamer.host.schema",
    "config_schema": "streamer.host.schema",
    "StreamState": "streamer.client.events",
    "GatewayRegistry": "streamer.client.registry",
    "MagmaRegistry": "streamer.client.registry",
    "RegistryError": "streamer.client.registry",
    "StaticRegistry": "streamer.client.registry",
    "TLSConfig": "streamer.client.registry",
}

__all__ = [
    "STREAMING_INTERVAL",
    "Backoff",
    "Client",
    "ConfigProblems",
    "Decision",
    "Doc",
    "DuplicateStreamError",
    "GatewayRegistry",
    "Listener",
    "MagmaRegistry",
    "PluginConfig",
    "RegistryError",
    "StaticRegistry",
    "StreamNames",
    "StreamObserver",
    "StreamState",
    "StreamerError",
    "TLSConfig",
    "__version__",
    "config_schema",
    "new_streamer_client",
]


__getattr__ = lazy_getattr(__name__, _LAZY)

aliases.install()
