"""The log listener: one line per batch, never values (they may hold subscriber secrets)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from streamer.base.logs import escape
from streamer.host.schema import config_schema
from streamer_log._config import LogConfig

if TYPE_CHECKING:
    from streamer.wire.streamer_pb2 import DataUpdateBatch

__all__ = ["LOGGER_NAME", "LogListener", "create_listeners"]

LOGGER_NAME = "streamer.plugin.log"
_log = logging.getLogger(LOGGER_NAME)


class LogListener:
    """Logs ``stream=<name> updates=<n> resync=<bool> keys=[...]`` for every batch.

    Keys are shown with ``repr`` so a key holding a newline or a control character cannot
    forge log lines. It holds no data, so it sends no digest: the server always sends a
    snapshot, which is what a log wants to see.
    """

    def __init__(self, name: str, *, max_keys: int = 10, level: int = logging.INFO) -> None:
        self.name = name
        self._max_keys = max_keys
        self._level = level

    def get_extra_args(self) -> None:
        return None

    def update(self, batch: DataUpdateBatch) -> bool:
        if _log.isEnabledFor(self._level):
            n = len(batch.updates)
            shown = [u.key for u in batch.updates[: self._max_keys]]
            more = f" (+{n - len(shown)} more)" if n > len(shown) else ""
            _log.log(
                self._level,
                "stream=%s updates=%d resync=%s keys=%r%s",
                self.name,
                n,
                batch.resync,
                shown,
                more,
            )
        return True

    def report_error(self, error: BaseException) -> BaseException | None:
        """Keep streaming. The host logs every reported error once (with the traceback of a
        listener exception); repeating it here would double every failure line, so this notes
        it only at DEBUG, escaped onto one line."""
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "stream=%s error reported: %s",
                escape(self.name),
                escape(f"{type(error).__name__}: {error}"),
            )
        return None

    def close(self) -> None:
        """Nothing to release."""


@config_schema(LogConfig)
def create_listeners(config: LogConfig) -> list[LogListener]:
    """Entry point ``log``: one :class:`LogListener` per name in ``streams``."""
    return [LogListener(s, max_keys=config.max_keys, level=config.levelno) for s in config.streams]
