"""The kit for writing sinks: :class:`MirrorListener` (a listener that mirrors streams into a
store) and the conformance checks in :mod:`streamer.sink.conformance`.

For plugin authors; the runtime never imports it. May import: ``streamer.client``,
``streamer.wire``, ``streamer.base``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamer.base.lazy import lazy_getattr

if TYPE_CHECKING:
    from streamer.sink.mirror import MirrorListener, MirrorStore

__all__ = ["MirrorListener", "MirrorStore"]

# Lazy: the conformance checks import neither gRPC nor protobuf, and must stay so.
__getattr__ = lazy_getattr(__name__, dict.fromkeys(__all__, "streamer.sink.mirror"))
