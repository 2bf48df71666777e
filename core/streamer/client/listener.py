"""The Listener contract: what a plugin implements to receive one stream.

This module must not import grpc or protobuf at runtime: the plugin layer (discovery and
load-time checks) uses it, and ``streamer list`` / ``streamer check`` never import gRPC.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from streamer.wire.streamer_pb2 import DataUpdateBatch

__all__ = ["REQUIRED_METHODS", "Listener", "listener_problems"]

REQUIRED_METHODS = ("get_extra_args", "update", "report_error")


@runtime_checkable
class Listener(Protocol):
    """Receives one named stream. Every method may also be ``async def``.

    - ``name``: the stream name sent as ``StreamRequest.stream_name``; unique per client.
    - ``get_extra_args()``: called before every request; a protobuf message (packed into
      ``StreamRequest.extra_args`` as ``google.protobuf.Any``), an ``Any`` itself, or None.
    - ``update(batch)``: one ``DataUpdateBatch``; return True to keep streaming. False makes the
      supervisor call ``report_error(EOFError())``.
    - ``report_error(error)``: return None to keep streaming, or an exception to stop the stream
      (``Client.stream`` then raises it).
    - ``close()`` is optional; the host calls it once when the listener is retired.
    - ``held_keys()`` is optional: how many keys the listener holds (None: cannot tell). Asked
      once per stream start, so the mass-change guard judges the first snapshot after a restart
      too (docs/reliability.md, "Safe sync"); the sink kit's ``MirrorListener`` implements it.

    A listener with a sync ``update`` has its stream read in a thread of its own, which calls
    its methods directly; an ``async def update`` runs on the event loop. Either way a
    blocking listener slows only its own stream.
    """

    name: str

    def get_extra_args(self) -> Message | Any | None: ...

    def update(self, batch: DataUpdateBatch) -> bool: ...

    def report_error(self, error: BaseException) -> BaseException | None: ...


def listener_problems(obj: object) -> list[str]:
    """What keeps ``obj`` from being a Listener, as readable sentences (empty list = valid)."""
    problems: list[str] = []
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        problems.append(f"'name' must be a non-empty str, got {name!r}")
    for method in REQUIRED_METHODS:
        attr = getattr(obj, method, None)
        if attr is None:
            problems.append(f"missing method {method}()")
        elif not callable(attr):
            problems.append(f"{method} is not callable")
    if not problems:
        for method, arity in (("get_extra_args", 0), ("update", 1), ("report_error", 1)):
            try:
                inspect.signature(getattr(obj, method)).bind(*([None] * arity))
            except TypeError:
                problems.append(f"{method}() must accept {arity} positional argument(s)")
            except ValueError:  # builtins without a signature: accept
                pass
    return problems
