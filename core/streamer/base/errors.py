"""The root of every error streamer raises on purpose.

``except streamer.StreamerError`` catches them all, whichever layer raised it. Each error keeps
its own base class too (``ConfigProblems`` is still a ``ValueError``, ``UnknownStreamError`` a
``LookupError``), and carries the context it is about in the attributes below, set when known.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["StreamerError"]


class StreamerError(Exception):
    """An error streamer raised on purpose; its message names what it is about.

    Context (``None`` when it does not apply): ``stream`` (stream name), ``plugin`` (plugin
    name), ``path`` (a file), ``key`` (a dotted config key path).
    """

    stream: str | None = None
    plugin: str | None = None
    path: Path | None = None
    key: str | None = None

    def context(self) -> dict[str, str]:
        """The context that is set, as strings (for logs and ``--json`` output)."""
        found = {n: getattr(self, n, None) for n in ("stream", "plugin", "path", "key")}
        return {n: str(v) for n, v in found.items() if v not in (None, "")}
