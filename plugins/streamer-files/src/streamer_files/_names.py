"""File names for keys: reversible, confined to one directory, safe on case-insensitive disks.

A key's UTF-8 bytes are kept as they are when they are in ``[a-z0-9._-]`` and written as
``%xx`` (lowercase hex) otherwise, uppercase letters included, so ``Key`` and ``key`` never
meet on a case-insensitive filesystem and no name holds ``/``, NUL or a Unicode form that macOS
would normalise. A leading ``.`` is escaped too, so no key yields ``.``, ``..`` or a hidden
name (hidden names are this plugin's own). A key whose encoded name would exceed
:data:`MAX_NAME` bytes, and the empty key, is stored as ``~<sha256 of the key>`` with the real
key in the hidden sidecar ``.~<sha256>.key``.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "MAX_NAME",
    "filename_to_key",
    "hashed_name",
    "is_hashed_name",
    "key_to_filename",
    "sidecar_name",
]

MAX_NAME = 200
"""Longest encoded name kept readable; NAME_MAX is 255 on common filesystems."""

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._-")
_ENCODE = tuple(chr(b) if b in _SAFE else f"%{b:02x}" for b in range(256))
_SAFE_CHARS = frozenset(map(chr, _SAFE))
_HEX = frozenset("0123456789abcdef")


def _raw(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def hashed_name(key: str) -> str:
    return "~" + hashlib.sha256(_raw(key)).hexdigest()


def is_hashed_name(name: str) -> bool:
    return len(name) == 65 and name[0] == "~" and set(name[1:]) <= _HEX


def sidecar_name(name: str) -> str:
    """The hidden file that holds the real key of a hashed name."""
    return f".{name}.key"


def key_to_filename(key: str) -> str:
    """The file name that holds ``key``'s value (see the module docstring)."""
    name = "".join([_ENCODE[b] for b in _raw(key)])
    if name[:1] == ".":
        name = "%2e" + name[1:]  # before the length check: escaping makes the name longer
    if not name or len(name) > MAX_NAME:
        return hashed_name(key)
    return name


def filename_to_key(name: str) -> str | None:
    """The key a readable (non-hashed) name encodes, or None if this plugin never writes it."""
    if not name or name[0] in ".~" or len(name) > MAX_NAME:
        return None
    out = bytearray()
    i = 0
    while i < len(name):
        c = name[i]
        if c == "%":
            pair = name[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                return None
            out.append(int(pair, 16))
            i += 3
        elif c in _SAFE_CHARS:
            out.append(ord(c))
            i += 1
        else:
            return None
    try:
        key = bytes(out).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    return key if key_to_filename(key) == name else None
