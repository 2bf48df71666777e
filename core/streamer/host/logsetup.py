"""Logging set-up for the host and the CLI: human or JSON lines, secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from streamer.base.redact import RedactingFilter

__all__ = ["HumanFormatter", "JsonFormatter", "configure_logging"]

HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


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
