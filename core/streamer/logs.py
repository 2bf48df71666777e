"""Logging set-up for the command line: human lines by default, JSON lines for machines."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from streamer.redact import RedactingFilter

__all__ = ["MAX_TEXT", "HumanFormatter", "JsonFormatter", "configure_logging", "escape"]

HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message (+ exc when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:  # exc_text: already formatted (and redacted) by RedactingFilter
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """Human lines; every line after a record's first (a traceback, a multi-line report) is
    indented, so only a record's own first line can start at column 0 with a timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\n    ")


def configure_logging(
    level: str = "INFO", fmt: str = "human", stream: TextIO | None = None
) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())  # no URL password or secret= value reaches a log
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(HumanFormatter(HUMAN_FORMAT, "%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # gRPC's own logger is chatty at DEBUG and never useful at INFO.
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
