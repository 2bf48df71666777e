"""The journal: an append-only redo log of the batches not yet checkpointed into ``current/``.

Format (all integers big-endian)::

    header   b"SFJ1" + u64 base        base: the sequence number current/ was checkpointed at
    record   u64 body length + u32 crc32(body) + body
    body     u64 seq + u32 entries + entries
    entry    u8 op + u32 key length + key (UTF-8, lone surrogates kept)
             op 1 (set): + u64 value length + value;  op 0 (delete): nothing more

Records are numbered ``base + 1, base + 2, ...``. A record counts only when it is complete, its
CRC matches and its number is the next one; reading stops at the first record that is not (the
torn tail of an append that was interrupted). Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from typing import NamedTuple

__all__ = ["HEADER_SIZE", "MAGIC", "Journal", "encode_header", "encode_record", "parse"]

MAGIC = b"SFJ1"
_HEADER = struct.Struct(">4sQ")
_RECORD = struct.Struct(">QI")
_BODY = struct.Struct(">QI")
_ENTRY = struct.Struct(">BI")
_U64 = struct.Struct(">Q")
HEADER_SIZE = _HEADER.size
_SET, _DELETE = 1, 0


class Journal(NamedTuple):
    """A parsed journal: ``base`` and the valid records as ``(seq, {key: value or None})``
    (None deletes), and how many bytes they span (header included)."""

    base: int
    records: list[tuple[int, dict[str, bytes | None]]]
    valid_size: int

    @property
    def seq(self) -> int:
        """The sequence number of the last valid record (``base`` when there is none)."""
        return self.records[-1][0] if self.records else self.base


def encode_header(base: int) -> bytes:
    return _HEADER.pack(MAGIC, base)


def encode_record(seq: int, sets: Mapping[str, bytes], drops: Iterable[str]) -> bytes:
    parts: list[bytes] = [b""]
    count = 0
    for key in drops:
        raw = key.encode("utf-8", "surrogatepass")
        parts += (_ENTRY.pack(_DELETE, len(raw)), raw)
        count += 1
    for key, value in sets.items():
        raw = key.encode("utf-8", "surrogatepass")
        parts += (_ENTRY.pack(_SET, len(raw)), raw, _U64.pack(len(value)), value)
        count += 1
    parts[0] = _BODY.pack(seq, count)
    body = b"".join(parts)
    return _RECORD.pack(len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> tuple[int, dict[str, bytes | None]]:
    seq, count = _BODY.unpack_from(body, 0)
    pos = _BODY.size
    changes: dict[str, bytes | None] = {}
    for _ in range(count):
        op, klen = _ENTRY.unpack_from(body, pos)
        pos += _ENTRY.size
        key = body[pos : pos + klen].decode("utf-8", "surrogatepass")
        pos += klen
        if op == _SET:
            (vlen,) = _U64.unpack_from(body, pos)
            pos += _U64.size
            changes[key] = body[pos : pos + vlen]
            pos += vlen
        elif op == _DELETE:
            changes[key] = None
        else:
            raise ValueError(f"unknown journal entry type {op}")
    if pos != len(body):
        raise ValueError("journal record longer than its entries")
    return seq, changes


def parse(data: bytes) -> Journal:
    """The journal held in ``data``; raises ``ValueError`` if the header is not a journal's."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"journal header is {len(data)} bytes, expected {HEADER_SIZE}")
    magic, base = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError(f"journal starts with {magic!r}, not {MAGIC!r}")
    records: list[tuple[int, dict[str, bytes | None]]] = []
    pos = HEADER_SIZE
    expected = base + 1
    while pos + _RECORD.size <= len(data):
        length, crc = _RECORD.unpack_from(data, pos)
        start = pos + _RECORD.size
        body = data[start : start + length]
        if len(body) != length or length < _BODY.size or zlib.crc32(body) != crc:
            break
        try:
            seq, changes = _decode_body(body)
        except (ValueError, struct.error, UnicodeDecodeError):
            break
        if seq != expected:
            break
        records.append((seq, changes))
        expected += 1
        pos = start + length
    return Journal(base, records, pos)
