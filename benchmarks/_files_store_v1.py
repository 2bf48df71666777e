"""BASELINE for B13 and the RSS benchmark: streamer-files' store as it was before issue 17.

A verbatim copy of ``plugins/streamer-files/src/streamer_files/_store.py`` at commit 03b28e3
(one hard-linked generation per batch), kept so the benchmarks can run today's design against
the old one in the same run. Not used by the plugin.

One stream's directory, changed a whole batch at a time.

Layout of ``<dir>/<encoded stream name>/``::

    current -> g-41      symlink: the only thing readers follow
    g-41/                one file per key (names from streamer_files._names)
    .lock                flock(2)ed by the one process that writes the stream

A batch never touches the live generation. It builds ``g-42`` beside it: files whose value is
unchanged are hard-linked from ``g-41`` (no data is copied or rewritten), new and changed values
are written and fsynced, the directory is fsynced, and then a new symlink is renamed over
``current``. That rename is the commit point: a process killed at any instant leaves ``current``
on either the old or the new generation, both complete; whatever else is left over is removed
at the next open. Readers that resolve ``current`` once see one consistent snapshot.

A batch that changes nothing (the common case when a cloud re-sends an identical snapshot on
every poll) touches nothing on disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from streamer_files._names import (
    filename_to_key,
    is_hashed_name,
    key_to_filename,
    sidecar_name,
)

from streamer.wire.digest import Digester

__all__ = ["FileStore", "StoreLockedError", "read_stream", "stream_path"]

_log = logging.getLogger("streamer.plugin.files")

_CURRENT = "current"
_CURRENT_TMP = ".current.tmp"
_LOCK = ".lock"
_GEN = re.compile(r"g-([0-9]{1,18})")


class StoreLockedError(RuntimeError):
    """Another process (or another listener in this one) already writes this stream."""


class _Entry(NamedTuple):
    name: str
    fingerprint: bytes


def _fingerprint(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


def stream_path(root: str | os.PathLike[str], stream: str) -> Path:
    """The directory that holds ``stream`` under ``root``; its live data is ``<that>/current``."""
    return Path(root) / key_to_filename(stream)


def _gen_name(gen: int) -> str:
    return f"g-{gen}"


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _iter_generation(gen_dir: Path) -> Iterator[tuple[str, str, bytes]]:
    """(key, file name, value) for every key file in one generation directory."""
    for name in sorted(os.listdir(gen_dir)):
        if name.startswith("."):
            continue
        if is_hashed_name(name):
            try:
                key = _read(gen_dir / sidecar_name(name)).decode("utf-8", "surrogatepass")
            except (OSError, UnicodeDecodeError) as exc:
                _log.warning(
                    "%s: ignoring %s: its key sidecar is unreadable (%s)", gen_dir, name, exc
                )
                continue
            if key_to_filename(key) != name:
                _log.warning("%s: ignoring %s: its sidecar names another key", gen_dir, name)
                continue
        else:
            decoded = filename_to_key(name)
            if decoded is None:
                _log.warning("%s: ignoring %s: not a name this plugin writes", gen_dir, name)
                continue
            key = decoded
        yield key, name, _read(gen_dir / name)


def read_stream(root: str | os.PathLike[str], stream: str) -> dict[str, bytes]:
    """A consistent snapshot of what the sink holds for ``stream`` (for readers and tests).

    Resolves ``current`` once and reads that generation; if the writer retires it meanwhile,
    starts again on the new one.
    """
    base = stream_path(root, stream)
    for _ in range(100):
        try:
            gen_dir = base / os.readlink(base / _CURRENT)
        except FileNotFoundError:
            return {}
        try:
            return {key: value for key, _name, value in _iter_generation(gen_dir)}
        except FileNotFoundError:
            continue
    raise RuntimeError(f"{base}: the generation kept changing while it was being read")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class FileStore:
    """The directory of one stream, its in-memory index and its digest.

    Not thread-safe: the listener serialises calls. One process at a time may open a stream's
    directory; a second open raises :class:`StoreLockedError`.
    """

    def __init__(self, root: str | os.PathLike[str], stream: str, *, fsync: bool = True) -> None:
        self.stream = stream
        self.path = stream_path(root, stream)
        self._fsync = fsync
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = self._lock()
        try:
            self._gen = self._recover()
            self._index: dict[str, _Entry] = {}
            self._digester = Digester()
            for key, name, value in _iter_generation(self._gen_dir(self._gen)):
                self._index[key] = _Entry(name, _fingerprint(value))
                self._digester.add(key, value)
        except BaseException:
            self.close()
            raise

    # --- public -----------------------------------------------------------------------

    @property
    def live_dir(self) -> Path:
        """The generation directory ``current`` points at."""
        return self._gen_dir(self._gen)

    def digest(self) -> str:
        """:func:`streamer.wire.digest.snapshot_digest` of what the sink holds."""
        return self._digester.hexdigest()

    def keys(self) -> set[str]:
        return set(self._index)

    def apply(self, resync: bool, changes: Mapping[str, bytes]) -> bool:
        """Apply one batch atomically; return whether anything changed on disk.

        ``resync``: ``changes`` is the whole new content. Otherwise each item sets a key, and an
        empty value deletes it.
        """
        if self._lock_fd is None:
            raise RuntimeError(f"{self.path}: the store is closed")
        writes: dict[str, bytes] = {}
        drops: list[str] = []
        for key, value in changes.items():
            old = self._index.get(key)
            if not resync and not value:
                if old is not None:
                    drops.append(key)
            elif old is None or old.fingerprint != _fingerprint(value):
                writes[key] = value
        if resync:
            drops.extend(k for k in self._index if k not in changes)
        if not writes and not drops:
            return False
        self._commit(writes, drops)
        return True

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # --- internals ----------------------------------------------------------------------

    def _gen_dir(self, gen: int) -> Path:
        return self.path / _gen_name(gen)

    def _lock(self) -> int:
        fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(
                    f"{self.path} (stream {self.stream!r}) is already written by another "
                    "streamer-files listener; each stream directory has exactly one writer"
                ) from exc
            raise
        return fd

    def _recover(self) -> int:
        """Find the live generation (creating an empty one at first use); drop leftovers."""
        gen: int | None = None
        try:
            target = os.readlink(self.path / _CURRENT)
        except FileNotFoundError:
            target = None
        if target is not None:
            match = _GEN.fullmatch(target)
            if match and (self.path / target).is_dir():
                gen = int(match.group(1))
            else:
                _log.error(
                    "%s: 'current' points at %r, which is not a generation; starting empty "
                    "(the next snapshot refills it)",
                    self.path,
                    target,
                )
        for name in os.listdir(self.path):
            match = _GEN.fullmatch(name)
            if name == _CURRENT_TMP or (match and (gen is None or int(match.group(1)) != gen)):
                _remove(self.path / name)  # an interrupted batch or an unretired generation
        if gen is None:
            gen = 0
            os.mkdir(self._gen_dir(gen))
            self._swap(gen)
        return gen

    def _swap(self, gen: int) -> None:
        """Point ``current`` at generation ``gen``: the commit point of a batch."""
        tmp = self.path / _CURRENT_TMP
        tmp.unlink(missing_ok=True)
        if self._fsync:
            _fsync_dir(self._gen_dir(gen))
        os.symlink(_gen_name(gen), tmp)
        os.replace(tmp, self.path / _CURRENT)

    def _write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _commit(self, writes: dict[str, bytes], drops: list[str]) -> None:
        old_gen, new_gen = self._gen, self._gen + 1
        old_dir, new_dir = self._gen_dir(old_gen), self._gen_dir(new_gen)
        _remove(new_dir)  # left by a batch that failed earlier in this process
        os.mkdir(new_dir)
        try:
            replaced = [k for k in writes if k in self._index]
            gone = {k: _read(old_dir / self._index[k].name) for k in (*drops, *replaced)}
            skip = set(drops).union(writes)
            index: dict[str, _Entry] = {}
            for key, entry in self._index.items():
                if key in skip:
                    continue
                os.link(old_dir / entry.name, new_dir / entry.name)
                if entry.name[0] == "~":
                    side = sidecar_name(entry.name)
                    os.link(old_dir / side, new_dir / side)
                index[key] = entry
            for key, value in writes.items():
                name = key_to_filename(key)
                self._write(new_dir / name, value)
                if name[0] == "~":
                    self._write(new_dir / sidecar_name(name), key.encode("utf-8", "surrogatepass"))
                index[key] = _Entry(name, _fingerprint(value))
            self._swap(new_gen)
        except BaseException:
            for leftover in (self.path / _CURRENT_TMP, new_dir):
                with contextlib.suppress(OSError):
                    _remove(leftover)
            raise
        # Committed: memory follows disk before anything else can fail.
        self._gen, self._index = new_gen, index
        for key, value in gone.items():
            self._digester.remove(key, value)
        for key, value in writes.items():
            self._digester.add(key, value)
        if self._fsync:
            _fsync_dir(self.path)
        try:
            shutil.rmtree(old_dir)
        except OSError as exc:  # harmless: removed at the next open
            _log.warning("%s: could not remove the retired %s: %s", self.path, old_dir.name, exc)
