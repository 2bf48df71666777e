"""The host: ``streamer.toml`` (config and plugin schemas), plugin discovery, loading and
conformance checks, observers, logging set-up, and :class:`~streamer.host.host.Host` itself.

May import: ``streamer.client``, ``streamer.wire``, ``streamer.base``, pluggy,
importlib-metadata, msgspec. Never the server, sink kit, testing kit, observability endpoint or
CLI (checked by the import-linter contract in pyproject.toml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamer.base.lazy import lazy_getattr

if TYPE_CHECKING:
    from streamer.host.host import Host, LoadFailed

__all__ = ["Host", "LoadFailed"]

__getattr__ = lazy_getattr(__name__, dict.fromkeys(__all__, "streamer.host.host"))
