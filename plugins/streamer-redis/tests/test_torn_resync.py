"""A resync torn by an emptying of Redis between two chunks never goes live under the full
snapshot's digest (issue 19). Real redis-server; the FLUSHALL lands deterministically between
the first and the second chunk because the scratch-hash pipeline is replayed one command at a
time, with the FLUSHALL sent (on another connection) right after the first HSET."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from streamer_redis import RedisDataLost, RedisMirror

from streamer.wire.digest import snapshot_digest

ITEMS = {f"imsi{i:05d}": f"v{i}".encode() for i in range(2500)}  # three chunks of <= 1000


class _StepPipeline:
    """A non-transactional pipeline that runs its commands one by one on the real client and
    empties Redis after the first HSET while ``owner.tears`` lasts."""

    def __init__(self, owner: TearingClient) -> None:
        self.owner = owner
        self.ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> _StepPipeline:
            self.ops.append((name, args, kwargs))
            return self

        return record

    def execute(self) -> list[Any]:
        out, hsets = [], 0
        for name, args, kwargs in self.ops:
            out.append(getattr(self.owner.real, name)(*args, **kwargs))
            if name == "hset":
                hsets += 1
                if hsets == 1 and self.owner.tears > 0:
                    self.owner.tears -= 1
                    self.owner.flusher.flushall()
        self.ops = []
        return out

    def __enter__(self) -> _StepPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ops = []


class TearingClient:
    def __init__(self, url: str, tears: int) -> None:
        self.real = redis.Redis.from_url(url)
        self.flusher = redis.Redis.from_url(url)
        self.tears = tears

    def pipeline(self, transaction: bool = True) -> Any:
        if transaction:
            return self.real.pipeline(transaction=True)
        return _StepPipeline(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def close(self) -> None:
        self.real.close()
        self.flusher.close()


@pytest.fixture
def watcher(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _consistent(client: redis.Redis, key: str = "streamer:s") -> tuple[int, bytes | None]:
    """The live hash's size and its digest key, read together in one MULTI/EXEC."""
    with client.pipeline(transaction=True) as tx:
        tx.hlen(key)
        tx.get(f"{key}:digest")
        size, digest = tx.execute()
    return int(size), digest


@pytest.mark.redis
def test_resync_torn_once_is_rewritten_whole(redis_url: str, watcher: redis.Redis) -> None:
    client = TearingClient(redis_url, tears=1)
    mirror = RedisMirror(client, "s")  # type: ignore[arg-type]
    try:
        assert mirror.sync_snapshot(ITEMS) is True
    finally:
        client.close()
    size, digest = _consistent(watcher)
    assert size == len(ITEMS)
    assert digest is not None and digest.decode() == snapshot_digest(ITEMS.items())
    assert not watcher.exists("streamer:s:resync")


@pytest.mark.redis
def test_resync_torn_every_time_never_sets_the_digest(redis_url: str, watcher: redis.Redis) -> None:
    client = TearingClient(redis_url, tears=100)
    mirror = RedisMirror(client, "s")  # type: ignore[arg-type]
    try:
        with pytest.raises(RedisDataLost, match="complete snapshot"):
            mirror.sync_snapshot(ITEMS)
    finally:
        client.close()
    size, digest = _consistent(watcher)
    assert digest is None or digest.decode() != snapshot_digest(ITEMS.items())
    assert size < len(ITEMS)
    # and the next digest() reports what Redis really holds, not the snapshot
    clean = RedisMirror(redis.Redis.from_url(redis_url), "s")
    try:
        assert clean.digest() != snapshot_digest(ITEMS.items())
    finally:
        clean.close()
