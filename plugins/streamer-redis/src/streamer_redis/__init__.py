"""streamer-redis: mirror streams into Redis hashes, each batch applied atomically.

Entry point ``redis`` in the ``streamer.listeners`` group points at :func:`create_listeners`.
"""

from __future__ import annotations

from streamer_redis._config import RedisConfig
from streamer_redis._listener import LOGGER_NAME, RedisListener, create_listeners
from streamer_redis._mirror import RedisDataLost, RedisMirror, connect

__all__ = [
    "LOGGER_NAME",
    "RedisConfig",
    "RedisDataLost",
    "RedisListener",
    "RedisMirror",
    "connect",
    "create_listeners",
]
