"""One stream mirrored into one Redis hash, each batch applied atomically.

Keys for stream ``s`` with prefix ``p``:

- ``p s`` (no space): the live hash, field = key, value = value bytes. The one readers use.
- ``p s:digest``: :func:`streamer.wire.digest.snapshot_digest` of the live hash. It is written
  in the same MULTI/EXEC as the data, so it always describes what the hash holds, and it vanishes
  with the data if Redis restarts empty. ``get_extra_args`` sends it: a sink that lost its data asks
  for a snapshot instead of claiming data it no longer has.
- ``p s:resync``: scratch space where a snapshot is assembled before it goes live.

Resync: the snapshot is written into the scratch hash (pipelined, in chunks), then one
MULTI/EXEC does UNLINK live + RENAME scratch live + SET digest, only after a WATCH of the
scratch hash and a count of its fields: a FLUSHALL, failover or eviction between two chunks
leaves a scratch hash missing the first chunks, and that must never go live under the full
snapshot's digest. Then the snapshot is written again (3 attempts, then :class:`RedisDataLost`).
Readers and crashes see the old hash or the new one, never a mix. UNLINK frees the old hash in a
background thread, where a RENAME over it would free it inside the command and block Redis for
O(N). A scratch hash left by a killed process is not live; it is unlinked by the next resync,
including one that finds the snapshot identical (same digest) and writes nothing else.

Incremental: WATCH the live hash and the digest, read the old values of the touched keys, then
one MULTI/EXEC does HSET + HDEL + SET digest. If anything else wrote in between, EXEC is refused
and ``update`` raises; the supervisor retries.

An incremental batch is a diff against what this sink told the server it holds (the digest it
last reported or wrote). If Redis no longer holds that (FLUSHALL, a restart without persistence,
eviction, another writer), applying the diff would leave a partial hash under a digest that
looks consistent, and the server would never resend the rest. So the batch is refused with
:class:`RedisDataLost`; the supervisor reports it, opens a new call and first asks for the
digest, which now describes what Redis really holds, so the server sends a snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

import redis
from redis.client import Pipeline

from streamer.wire.digest import EMPTY_DIGEST, Digester

__all__ = ["RedisDataLost", "RedisMirror", "connect"]

_log = logging.getLogger("streamer.plugin.redis")
_CHUNK = 1000
_SNAPSHOT_ATTEMPTS = 3


def _chunks(items: Mapping[str, bytes]) -> Iterator[dict[str, bytes]]:
    it = iter(items.items())
    while chunk := dict(islice(it, _CHUNK)):
        yield chunk


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw


class RedisDataLost(RuntimeError):
    """Redis no longer holds what this sink last reported or wrote: an incremental batch cannot
    be applied, a full snapshot is needed."""


def _held(stored: bytes | str | None, exists: int) -> str | None:
    """The digest of what Redis holds, from the ``:digest`` key and whether the hash exists;
    None if it is unknown without reading the hash (a hash with no digest key)."""
    if not exists:
        return EMPTY_DIGEST  # no hash: nothing held, whatever a leftover digest key says
    return None if stored is None else _text(stored)


class RedisMirror:
    """The hash of one stream. Not thread-safe: the listener serialises calls.

    Redis's ``:digest`` key is the truth about the hash. ``_claimed`` is the digest this mirror
    last reported (:meth:`digest`) or wrote: the state the server's incremental batches build
    on. ``None`` means unknown (nothing reported yet, or a write whose outcome was lost); then
    Redis is trusted as it is. The in-memory :class:`Digester` is only a cache used to compute
    the next digest, rebuilt from the hash whenever it does not match the ``:digest`` key.
    """

    def __init__(self, client: redis.Redis, stream: str, key_prefix: str = "streamer:") -> None:
        self.stream = stream
        self.client = client
        self.key = f"{key_prefix}{stream}"
        self.digest_key = f"{self.key}:digest"
        self.scratch_key = f"{self.key}:resync"
        self._digester: Digester | None = None
        self._claimed: str | None = None

    # --- reading --------------------------------------------------------------------------

    def digest(self) -> str:
        """The digest of what the live hash holds, from Redis (computed if it is missing).

        What it returns is what the server's next incremental batches will build on.
        """
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.digest_key)
            pipe.exists(self.key)
            stored, exists = pipe.execute()
        held = _held(stored, exists)
        if held is None:
            held = self._reload().hexdigest()  # a hash without a digest key: adopt it
        self._claimed = held
        return held

    def key_count(self) -> int:
        """How many keys the live hash holds."""
        return int(self.client.hlen(self.key))

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
            self.client.unlink(self.scratch_key)  # left by a process killed mid-resync
            return False
        self._digester = None  # unknown until EXEC answers
        self._claimed = None
        for attempt in range(1, _SNAPSHOT_ATTEMPTS + 1):
            self._write_scratch(items)
            held = self._swap_in(items, new)
            if held is None:
                self._digester = new
                self._claimed = new.hexdigest()
                return True
            _log.warning(
                "redis sink for stream %r: the snapshot lost fields while it was written "
                "(%d of %d fields; FLUSHALL, eviction or failover?); attempt %d of %d",
                self.stream, held, len(items), attempt, _SNAPSHOT_ATTEMPTS,
            )  # fmt: skip
        raise RedisDataLost(
            f"redis sink for stream {self.stream!r} could not write a complete snapshot "
            f"({_SNAPSHOT_ATTEMPTS} attempts); requesting it again"
        )

    def _write_scratch(self, items: Mapping[str, bytes]) -> None:
        """Write ``items`` into the scratch hash (pipelined, in chunks). Not atomic: something
        may empty Redis between two chunks, which :meth:`_swap_in` detects."""
        pipe: Pipeline = self.client.pipeline(transaction=False)
        pipe.unlink(self.scratch_key)
        for chunk in _chunks(items):
            pipe.hset(self.scratch_key, mapping=chunk)  # type: ignore[arg-type]
        pipe.execute()

    def _swap_in(self, items: Mapping[str, bytes], new: Digester) -> int | None:
        """Make the scratch hash live with ``new``'s digest in one MULTI/EXEC, but only if it
        holds every field of ``items``: WATCH it, count its fields, and let EXEC fail if it
        changes after the count. None when done; else the field count found (nothing written)."""
        with self.client.pipeline(transaction=True) as tx:
            if items:
                tx.watch(self.scratch_key)  # type: ignore[no-untyped-call]
                held = int(tx.hlen(self.scratch_key))
                if held != len(items):
                    return held  # torn: chunks written before an emptying were lost
                tx.multi()
                # UNLINK frees the old hash in the background; RENAME over it would free it
                # inside the command, blocking Redis for as long as the hash is big.
                tx.unlink(self.key)
                tx.rename(self.scratch_key, self.key)
            else:
                tx.multi()
                tx.unlink(self.key)
            tx.set(self.digest_key, new.hexdigest())
            try:
                tx.execute()
            except redis.WatchError:
                return -1  # changed after the count
        return None

    def apply_changes(self, items: Mapping[str, bytes]) -> bool:
        """Set each key to its value, an empty value deleting it, in one MULTI/EXEC.

        Returns whether anything was written. Raises :class:`RedisDataLost`, writing nothing,
        if Redis no longer holds what this mirror last reported or wrote.
        """
        if not items:
            return False
        keys = list(items)
        with self.client.pipeline(transaction=True) as tx:
            tx.watch(self.key, self.digest_key)  # type: ignore[no-untyped-call]
            stored = tx.get(self.digest_key)
            exists = tx.exists(self.key)
            held = _held(stored, exists)
            claimed = self._claimed
            if claimed is not None and held != claimed:
                self._claimed = None  # the next call's digest() says what Redis really holds
                self._digester = None
                raise self._lost(stored, exists)
            digester = self._digester
            if not exists:
                digester = Digester()
            elif held is None or digester is None or digester.hexdigest() != held:
                digester = self._load(tx)  # a stale cache, or nothing claimed yet: re-read
            self._digester = None  # being changed; known again only once EXEC answers
            self._claimed = None
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
                self._claimed = held if held is not None else digester.hexdigest()
                return False
            tx.multi()
            if sets:
                tx.hset(self.key, mapping=sets)  # type: ignore[arg-type]
            if dels:
                tx.hdel(self.key, *dels)
            tx.set(self.digest_key, digester.hexdigest())
            tx.execute()
        self._digester = digester
        self._claimed = digester.hexdigest()
        return True

    def apply(self, resync: bool, changes: Mapping[str, bytes]) -> bool:
        """:meth:`sync_snapshot` if ``resync``, else :meth:`apply_changes` (the
        :class:`streamer.sink.mirror.MirrorStore` method)."""
        return self.sync_snapshot(changes) if resync else self.apply_changes(changes)

    def close(self) -> None:
        """Close the client's connections (a later call would reconnect)."""
        self.client.close()

    # --- internals ------------------------------------------------------------------------

    def _lost(self, stored: bytes | str | None, exists: int) -> RedisDataLost:
        if stored is None:
            why = "lost its data (digest key missing)"
        elif not exists:
            why = "lost its data (hash missing)"
        else:
            why = "holds data it did not write (digest changed behind its back)"
        return RedisDataLost(
            f"redis sink for stream {self.stream!r} {why}; requesting a full snapshot"
        )

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
