"""Plain-text tables for the CLI: one renderer for ``list``, ``status``, ``top``, ``fleet`` and
``describe``."""

from __future__ import annotations

from collections.abc import Sequence

from streamer.host.plugins import PluginRow

__all__ = ["age", "format_plugins", "table"]


def table(rows: Sequence[Sequence[str]], *, free_last: bool = False) -> list[str]:
    """Lines of ``rows`` (the first is the header) in left-aligned columns two spaces apart.

    ``free_last``: the last column is not padded or measured, so one long cell (an error
    message) does not widen every row. Trailing spaces are stripped.
    """
    if not rows:
        return []
    measured = len(rows[0]) - 1 if free_last else len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(measured)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:measured], widths, strict=True)]
        cells += r[measured:]
        lines.append("  ".join(cells).rstrip())
    return lines


def age(seconds: object, suffix: str = " ago") -> str:
    """``3.9s ago``, ``2.5m ago``, ``1.2h ago`` (or with another ``suffix``); ``never`` for a
    missing value. Shared by ``status``, ``top`` and ``fleet``."""
    if not isinstance(seconds, (int, float)):
        return "never"
    if seconds < 60:
        return f"{seconds:.1f}s{suffix}"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m{suffix}"
    return f"{seconds / 3600:.1f}h{suffix}"


_COLUMNS = ("NAME", "DIST", "VERSION", "ENABLED", "STATUS", "STREAMS")


def format_plugins(rows: Sequence[PluginRow]) -> str:
    """Aligned text table; problems follow their row, indented."""
    cells = [
        (
            r.name,
            r.dist or "-",
            r.version or "-",
            "yes" if r.enabled else "no",
            r.status,
            ", ".join(r.streams) or "-",
        )
        for r in rows
    ]
    lines = table([_COLUMNS, *cells])
    out = [lines[0]]
    for row, line in zip(rows, lines[1:], strict=True):
        out.append(line)
        out += [f"    ! {p}" for p in row.problems]
    return "\n".join(out)
