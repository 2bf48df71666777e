"""The 0.1 module paths, kept importable after the 0.2 split into sub-packages.

``import streamer.sinks`` (or ``from streamer.hooks import hookimpl``) still works for plugins
written against 0.1: the old name resolves to the module's new home, with a
``DeprecationWarning`` that names it. The aliases go in 0.4.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    "streamer.backoff": "streamer.client.backoff",
    "streamer.checks": "streamer.host.checks",
    "streamer.config": "streamer.host.config",
    "streamer.connection": "streamer.client.connection",
    "streamer.demo": "streamer.server.demo",
    "streamer.diagnose": "streamer.client.diagnose",
    "streamer.digest": "streamer.wire.digest",
    "streamer.events": "streamer.client.events",
    "streamer.hooks": "streamer.host.observers",
    "streamer.listener": "streamer.client.listener",
    "streamer.logs": "streamer.base.logs",
    "streamer.metrics": "streamer.observability.metrics",
    "streamer.plugins": "streamer.host.plugins",
    "streamer.proto": "streamer.wire",
    "streamer.proto.streamer_pb2": "streamer.wire.streamer_pb2",
    "streamer.redact": "streamer.base.redact",
    "streamer.registry": "streamer.client.registry",
    "streamer.sinks": "streamer.sink.mirror",
    "streamer.sinktest": "streamer.sink.conformance",
    "streamer.sources": "streamer.server.sources",
    "streamer.status": "streamer.observability.http",
    "streamer.stream": "streamer.client.stream",
    "streamer.supervisor": "streamer.client.supervisor",
}
"""0.1 module path -> where it lives now. (``streamer.client``, ``streamer.host``,
``streamer.server`` and ``streamer.cli`` are packages now and re-export their old names.)"""


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new} in streamer 0.2; import it from there "
            "(the old name goes in 0.4)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        # importlib sets the alias's spec on the module it gets back; keep its own to restore
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The module was imported under its new name already: only give it its own spec
        back (``importlib.reload`` and submodule imports read ``__spec__``)."""
        own = module.__spec__.loader_state if module.__spec__ is not None else None
        if own is not None:
            module.__spec__ = own


def install() -> None:
    """Put the alias finder first on ``sys.meta_path``, once: first, so that a stale directory
    of an old install (``streamer/proto/`` left behind by an in-place upgrade) cannot shadow an
    alias as an empty namespace package. It answers only the names in ``MOVED``."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
