"""Snapshot digests: a sink tells the server what it holds so an unchanged snapshot is skipped.

The digest travels in ``StreamRequest.extra_args`` as a packed ``google.protobuf.StringValue``
whose value is ``DIGEST_PREFIX + hex``. The reference server compares it with the digest of its
current data and sends no snapshot when they match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["DIGEST_PREFIX", "EMPTY_DIGEST", "Digester", "snapshot_digest"]

DIGEST_PREFIX = "sha256:"


class Digester:
    """Order-independent digest of a key -> value mapping, built one item at a time.

    Each item is hashed on its own (length-prefixed, so no two mappings collide by
    concatenation) and the item hashes are combined by addition modulo 2**256. That makes the
    digest independent of iteration order, and lets a sink update it incrementally by
    ``remove(key, old)`` + ``add(key, new)`` instead of rehashing everything.
    """

    __slots__ = ("_acc", "_count")
    _MOD = 1 << 256

    def __init__(self) -> None:
        self._acc = 0
        self._count = 0

    @staticmethod
    def _item(key: str, value: bytes) -> int:
        k = key.encode("utf-8", "surrogatepass")
        h = hashlib.sha256()
        h.update(len(k).to_bytes(8, "big"))
        h.update(k)
        h.update(len(value).to_bytes(8, "big"))
        h.update(value)
        return int.from_bytes(h.digest(), "big")

    def add(self, key: str, value: bytes) -> None:
        self._acc = (self._acc + self._item(key, value)) % self._MOD
        self._count += 1

    def remove(self, key: str, value: bytes) -> None:
        self._acc = (self._acc - self._item(key, value)) % self._MOD
        self._count -= 1

    def hexdigest(self) -> str:
        body = hashlib.sha256(self._acc.to_bytes(32, "big") + self._count.to_bytes(8, "big"))
        return DIGEST_PREFIX + body.hexdigest()


def snapshot_digest(items: Iterable[tuple[str, bytes]]) -> str:
    """Digest of a whole snapshot given as (key, value) pairs, in any order."""
    d = Digester()
    for key, value in items:
        d.add(key, value)
    return d.hexdigest()


EMPTY_DIGEST = snapshot_digest(())
