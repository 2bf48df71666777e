"""The ``[plugin.log]`` table, declared as a schema: pure, no I/O."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Annotated

from streamer.host.schema import Doc, PluginConfig, StreamNames

__all__ = ["LogConfig"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class LogConfig(PluginConfig):
    """One log line per batch: stream, number of updates, resync flag and the first keys."""

    streams: StreamNames
    max_keys: Annotated[int, Doc("how many keys a line shows", ge=0)] = 10
    level: Annotated[
        str, Doc("logging level of the per-batch lines: DEBUG, INFO, WARNING or ERROR, any case")
    ] = "INFO"

    def check(self) -> Iterable[tuple[str, str]]:
        if self.level.upper() not in _LEVELS:
            yield "level", f"expected one of {', '.join(_LEVELS)} (any case), got {self.level!r}"

    @property
    def levelno(self) -> int:
        """The level as a number (``logging.INFO``, ...)."""
        number: int = logging.getLevelName(self.level.upper())
        return number
