"""The redis listener: the Listener face of a :class:`RedisMirror`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from streamer.host.schema import config_schema
from streamer.sink.mirror import MirrorListener
from streamer_redis._config import RedisConfig
from streamer_redis._mirror import RedisMirror, connect

if TYPE_CHECKING:
    from google.protobuf.wrappers_pb2 import StringValue

__all__ = ["LOGGER_NAME", "RedisListener", "create_listeners"]

LOGGER_NAME = "streamer.plugin.redis"


class RedisListener(MirrorListener[RedisMirror]):
    """Mirrors one stream into the Redis hash ``<key_prefix><stream>``.

    ``get_extra_args()`` sends the digest stored beside the hash; if Redis cannot be reached it
    logs and sends nothing (the server then sends a snapshot, and ``update`` reports the real
    error). ``update`` raises on a sink failure (Redis down, a concurrent writer); the
    supervisor reports it and retries.
    """

    def __init__(self, mirror: RedisMirror) -> None:
        self.mirror = mirror  # its client connects lazily: using it is the "open"
        super().__init__(mirror.stream, plugin="redis", open_store=lambda: mirror)

    def get_extra_args(self) -> StringValue | None:
        try:
            return super().get_extra_args()
        except redis.RedisError as exc:
            self.log.warning("stream=%s cannot read the digest from Redis: %r", self.name, exc)
            return None


@config_schema(RedisConfig)
def create_listeners(config: RedisConfig) -> list[RedisListener]:
    """Entry point ``redis``: one :class:`RedisListener` (one hash) per name in ``streams``.

    Does not connect: Redis may start after the host, and the first call reports it if it is
    down.
    """
    return [
        RedisListener(RedisMirror(connect(config.url, config.timeout), stream, config.key_prefix))
        for stream in config.streams
    ]
