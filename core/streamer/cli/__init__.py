"""The ``streamer`` command: every sub-command, the status/top/fleet clients, table rendering.

The top layer: may import every other package. Nothing imports it.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """``streamer`` (kept at ``streamer.cli:main`` for scripts written against 0.1)."""
    from streamer.cli.main import main as _main

    return _main(argv)


__all__ = ["main"]
