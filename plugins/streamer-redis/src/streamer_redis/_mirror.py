"""One stream mirrored into one Redis hash, each batch applied atomically.

Keys for stream ``s`` with prefix ``p``:

- ``p s`` (no space): the live hash, field = key, value = value bytes. The one readers use.
- ``p s:digest``: :func:`streamer.digest.snapshot_digest` of the live hash. It is written in the
  same MULTI/EXEC as the data, so it always describes what the hash holds, and it vanishes with
  the data if Redis restarts empty. ``get_extra_args`` sends it: a sink that lost its data asks
  for a snapshot instead of claiming data it no longer has.
- ``p s:resync``: scratch space where a snapshot is assembled before it goes live.

Resync: the snapshot is written into the scratch hash (pipelined, in chunks), then one
MULTI/EXEC renames it over the live hash and sets the digest. Readers and crashes see the old
hash or the new one, never a mix; a scratch hash left by a killed process is not live and is
deleted by the next resync. An identical snapshot (same digest) writes nothing.

Incremental: WATCH the live hash and the digest, read the old values of the touched keys, then
one MULTI/EXEC does HSET + HDEL + SET digest. If anything else wrote in between, EXEC is refused
and ``update`` raises; the supervisor retries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

import redis
from redis.client import Pipeline

from streamer.digest import EMPTY_DIGEST, Digester

__all__ = ["RedisMirror"]

_log = logging.getLogger("streamer.plugin.redis")
_CHUNK = 1000


def _chunks(items: Mapping[str, bytes]) -> Iterator[dict[str, bytes]]:
    it = iter(items.items())
    while chunk := dict(islice(it, _CHUNK)):
        yield chunk


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw


class RedisMirror:
    """The hash of one stream. Not thread-safe: the listener serialises calls.

    The in-memory :class:`Digester` is only a cache used to compute the next digest; Redis's
    ``:digest`` key is the truth. When they disagree (Redis restarted, a write's outcome was
    lost with the connection) the digester is rebuilt from the hash before the next write.
    """

    def __init__(self, client: redis.Redis, stream: str, key_prefix: str = "streamer:") -> None:
        self.stream = stream
        self.client = client
        self.key = f"{key_prefix}{stream}"
        self.digest_key = f"{self.key}:digest"
        self.scratch_key = f"{self.key}:resync"
        self._digester: Digester | None = None

    # --- reading --------------------------------------------------------------------------

    def digest(self) -> str:
        """The digest of what the live hash holds, from Redis (computed if it is missing)."""
        stored = self.client.get(self.digest_key)
        if stored is not None:
            return _text(stored)
        if not self.client.exists(self.key):
            return EMPTY_DIGEST
        return self._reload().hexdigest()  # a hash written by something else: adopt it

    def read(self) -> dict[str, bytes]:
        """The live hash as ``{key: value}``."""
        raw = self.client.hgetall(self.key)
        return {_text(k): _bytes(v) for k, v in raw.items()}

    # --- writing --------------------------------------------------------------------------

    def sync_snapshot(self, items: Mapping[str, bytes]) -> bool:
        """Make the live hash hold exactly ``items``; return whether anything was written."""
        new = Digester()
        for key, value in items.items():
            new.add(key, value)
        if self.digest() == new.hexdigest():
            self._digester = new
            return False
        pipe: Pipeline = self.client.pipeline(transaction=False)
        pipe.delete(self.scratch_key)
        for chunk in _chunks(items):
            pipe.hset(self.scratch_key, mapping=chunk)  # type: ignore[arg-type]
        pipe.execute()
        self._digester = None  # unknown until EXEC answers
        with self.client.pipeline(transaction=True) as tx:
            if items:
                tx.watch(self.scratch_key)  # type: ignore[no-untyped-call]  # EXEC fails if the scratch hash changed under us
                tx.multi()
                tx.rename(self.scratch_key, self.key)
            else:
                tx.multi()
                tx.delete(self.key)
            tx.set(self.digest_key, new.hexdigest())
            tx.execute()
        self._digester = new
        return True

    def apply_changes(self, items: Mapping[str, bytes]) -> bool:
        """Set each key to its value, an empty value deleting it, in one MULTI/EXEC.

        Returns whether anything was written.
        """
        if not items:
            return False
        keys = list(items)
        with self.client.pipeline(transaction=True) as tx:
            tx.watch(self.key, self.digest_key)  # type: ignore[no-untyped-call]
            digester = self._digester
            stored = tx.get(self.digest_key)
            if digester is None or _text(stored or EMPTY_DIGEST.encode()) != digester.hexdigest():
                digester = self._load(tx)
            self._digester = None  # being changed; known again only once EXEC answers
            olds = [None if v is None else _bytes(v) for v in tx.hmget(self.key, keys)]
            sets: dict[str, bytes] = {}
            dels: list[str] = []
            for key, old in zip(keys, olds, strict=True):
                value = items[key]
                if not value:
                    if old is not None:
                        dels.append(key)
                        digester.remove(key, old)
                elif old != value:
                    sets[key] = value
                    if old is not None:
                        digester.remove(key, old)
                    digester.add(key, value)
            if not sets and not dels:
                self._digester = digester
                return False
            tx.multi()
            if sets:
                tx.hset(self.key, mapping=sets)  # type: ignore[arg-type]
            if dels:
                tx.hdel(self.key, *dels)
            tx.set(self.digest_key, digester.hexdigest())
            tx.execute()
        self._digester = digester
        return True

    def apply(self, resync: bool, changes: Mapping[str, bytes]) -> bool:
        """:meth:`sync_snapshot` if ``resync``, else :meth:`apply_changes` (the
        :class:`streamer.sinks.MirrorStore` method)."""
        return self.sync_snapshot(changes) if resync else self.apply_changes(changes)

    def close(self) -> None:
        """Close the client's connections (a later call would reconnect)."""
        self.client.close()

    # --- internals ------------------------------------------------------------------------

    def _load(self, conn: redis.Redis | Pipeline) -> Digester:
        """Rebuild the digester from the live hash (on ``conn``: inside a WATCH, that one)."""
        raw = conn.hgetall(self.key)
        digester = Digester()
        for field, value in raw.items():
            digester.add(_text(field), _bytes(value))
        return digester

    def _reload(self) -> Digester:
        digester = self._load(self.client)
        self.client.set(self.digest_key, digester.hexdigest())
        self._digester = digester
        return digester


def connect(url: str, timeout: float) -> redis.Redis:
    """A client for ``url``; connects lazily, so a server that is down fails the first call."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
    }
    return redis.Redis.from_url(url, **options)
