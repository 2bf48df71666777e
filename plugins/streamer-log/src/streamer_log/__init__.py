"""streamer-log: a listener plugin that logs one line per received batch.

Entry point ``log`` in the ``streamer.listeners`` group points at :func:`create_listeners`.
"""

from __future__ import annotations

from streamer_log._config import LogConfig
from streamer_log._listener import LOGGER_NAME, LogListener, create_listeners

__all__ = ["LOGGER_NAME", "LogConfig", "LogListener", "create_listeners"]
