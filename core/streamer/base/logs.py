"""Log-safe text: outside text (network, plugins) escaped and bounded before it is logged."""

from __future__ import annotations

import re

__all__ = ["MAX_TEXT", "escape"]

MAX_TEXT = 500
"""Characters of outside text (gRPC status details, stream names, keys) one log line shows."""

# C0 and C1 controls, DEL, and the Unicode line/paragraph separators and bidi controls that a
# terminal or log viewer may render as a line break or reorder.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` made safe for one human log line: control characters (newlines included) and
    Unicode line separators written as escapes (``\\n``, ``\\x1b``, ``\\u2028``), and at most
    ``limit`` characters kept (the rest counted). For text that comes from the network or from
    plugins: it can never start a forged log line nor flood the log."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return _UNSAFE.sub(_escape_char, text)
