"""The redis listener: the Listener face of a :class:`RedisMirror`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import redis
from google.protobuf.wrappers_pb2 import StringValue

from streamer_redis._config import RedisConfig
from streamer_redis._mirror import RedisMirror, connect

if TYPE_CHECKING:
    from streamer.proto.streamer_pb2 import DataUpdateBatch

__all__ = ["LOGGER_NAME", "RedisListener", "create_listeners"]

LOGGER_NAME = "streamer.plugin.redis"
_log = logging.getLogger(LOGGER_NAME)


class RedisListener:
    """Mirrors one stream into the Redis hash ``<key_prefix><stream>``.

    ``get_extra_args()`` sends the digest stored beside the hash; if Redis cannot be reached it
    logs and sends nothing (the server then sends a snapshot, and ``update`` reports the real
    error). ``update`` raises on a sink failure (Redis down, a concurrent writer); the
    supervisor reports it and retries.
    """

    def __init__(self, mirror: RedisMirror) -> None:
        self.name = mirror.stream
        self.mirror = mirror
        self._closed = False
        self._lock = threading.Lock()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the redis listener of stream {self.name!r} is closed")

    def get_extra_args(self) -> StringValue | None:
        with self._lock:
            self._check_open()
            try:
                return StringValue(value=self.mirror.digest())
            except redis.RedisError as exc:
                _log.warning("stream=%s cannot read the digest from Redis: %r", self.name, exc)
                return None

    def update(self, batch: DataUpdateBatch) -> bool:
        items = {u.key: u.value for u in batch.updates}
        with self._lock:
            self._check_open()
            if batch.resync:
                self.mirror.sync_snapshot(items)
            else:
                self.mirror.apply_changes(items)
        return True

    def report_error(self, error: BaseException) -> BaseException | None:
        _log.warning("stream=%s error reported by the streamer: %r", self.name, error)
        return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.mirror.client.close()


def create_listeners(config: Mapping[str, Any]) -> list[RedisListener]:
    """Entry point ``redis``: one :class:`RedisListener` (one hash) per name in ``streams``.

    Does not connect: Redis may start after the host, and the first call reports it if it is
    down.
    """
    cfg = RedisConfig.from_table(config)
    return [
        RedisListener(RedisMirror(connect(cfg.url, cfg.timeout), stream, cfg.key_prefix))
        for stream in cfg.streams
    ]
