"""One stream's directory: files changed in place, one journal record per batch.

Layout of ``<dir>/<encoded stream name>/``::

    current/     one file per key (names from streamer_files._names), each replaced atomically
    journal      redo log of the batches since the last checkpoint (streamer_files._journal)
    .lock        flock(2)ed by the one process that writes the stream
    .tmp         the file being written (renamed into current/ when complete); .tmp-N too

A batch costs O(keys it changes): its changes are appended to ``journal`` as one record (and
flushed with ``fdatasync`` when ``fsync`` is on); that append is the commit point. Then each
changed key's file is written beside ``current/`` and renamed into it, and each deleted key's
file is unlinked. A process killed at any instant leaves a journal whose valid records, replayed
over ``current/``, give the state after the last committed batch: the writer replays them when
it opens the stream, and readers replay them on every read (streamer_files._reader). Every
``CHECKPOINT_BYTES`` of journal, the files changed since the last checkpoint are flushed (with
``fsync`` on) and the journal is replaced by an empty one.

A batch that changes nothing touches nothing on disk. Every path is opened relative to a
directory fd with ``O_NOFOLLOW`` (streamer_files._fs): the only symlink ever followed is the
``current -> g-N`` link of the older layout, once, to migrate it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from streamer.wire.digest import Digester
from streamer_files._fs import (
    UnsafeDirectoryError,
    dir_mode_for,
    fsync_name,
    open_private_dir,
    read_fd,
    read_name,
    remove_flat_dir,
    umask_keeps,
    write_name,
)
from streamer_files._journal import (
    encode_header,
    encode_record,
    parse,
)
from streamer_files._names import key_to_filename, sidecar_name
from streamer_files._reader import CURRENT, GEN, JOURNAL, OLD_CURRENT, scan, stream_path

__all__ = ["CHECKPOINT_BYTES", "FileStore", "StoreLockedError", "UnsafeDirectoryError"]

_log = logging.getLogger("streamer.plugin.files")

CHECKPOINT_BYTES = 1 << 20
"""Journal size after which the writer checkpoints (and readers replay at most about this)."""

_JOURNAL_NEW = ".journal.new"
_LOCK = ".lock"
_TMP = ".tmp"  # also .tmp-0 ... .tmp-15 for large batches
_PARALLEL_FROM = 256
_WRITERS = 16
_OLD_CURRENT_TMP = ".current.tmp"


class StoreLockedError(RuntimeError):
    """Another process (or another listener in this one) already writes this stream."""


class _Entry(NamedTuple):
    name: str
    fingerprint: bytes


def _fingerprint(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


# --- writing ------------------------------------------------------------------------------


def _open_root(root: Path) -> int:
    """The root directory (the operator's path: a symlink there is followed), created 0700."""
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(
            exc.errno, f"streamer-files: root directory {str(root)!r}: {exc.strerror}"
        ) from exc


class FileStore:
    """The directory of one stream, its in-memory index and its digest.

    Not thread-safe: the listener serialises calls. One process at a time may open a stream's
    directory; a second open raises :class:`StoreLockedError`. A stream directory that is a
    symlink, another user's or writable by others raises :class:`UnsafeDirectoryError`.
    Files are created with ``file_mode`` (0600 or 0640) and directories with the matching
    0700 / 0750, whatever the umask.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        stream: str,
        *,
        fsync: bool = True,
        file_mode: int = 0o600,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
    ) -> None:
        if file_mode & ~0o640 or file_mode & 0o600 != 0o600:
            raise ValueError(f"file_mode {file_mode:04o}: only 0600 and 0640 are allowed")
        self.stream = stream
        self.path = stream_path(root, stream)
        self._shown = str(self.path)
        self._fsync = fsync
        self._file_mode = file_mode
        self._dir_mode = dir_mode_for(file_mode)
        self._chmod = not umask_keeps(file_mode)
        self._checkpoint_bytes = checkpoint_bytes
        self._fds: list[int] = []
        self._lock_fd: int | None = None
        self._index: dict[str, _Entry] = {}
        self._digester = Digester()
        self._seq = 0
        self._journal_fd = -1
        self._journal_size = 0
        self._dirty: set[str] = set()
        self._needs_recovery = False
        try:
            root_fd = _open_root(Path(root))
            try:
                self._dir_fd = open_private_dir(
                    root_fd, self.path.name, self._shown, self._dir_mode
                )
                if fsync:
                    os.fsync(root_fd)  # the stream directory's own entry, if just made
            finally:
                os.close(root_fd)
            self._fds.append(self._dir_fd)
            self._lock_fd = self._lock()
            self._migrate_old_layout()
            self._cur_fd = open_private_dir(
                self._dir_fd, CURRENT, f"{self._shown}/{CURRENT}", self._dir_mode
            )
            self._fds.append(self._cur_fd)
            if fsync:
                os.fsync(self._dir_fd)
            self._recover()
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError) and exc.filename is not None:
                raise self._named(exc) from exc
            raise

    # --- public -----------------------------------------------------------------------

    @property
    def live_dir(self) -> Path:
        """The directory that holds one file per key (``<stream dir>/current``)."""
        return self.path / CURRENT

    @property
    def seq(self) -> int:
        """The number of the last batch applied (see :class:`Snapshot`)."""
        return self._seq

    def digest(self) -> str:
        """:func:`streamer.wire.digest.snapshot_digest` of what the sink holds."""
        self._ready()
        return self._digester.hexdigest()

    def keys(self) -> set[str]:
        self._ready()
        return set(self._index)

    def key_count(self) -> int:
        """How many keys the sink holds."""
        self._ready()
        return len(self._index)

    def apply(self, resync: bool, changes: Mapping[str, bytes]) -> bool:
        """Apply one batch atomically; return whether anything changed on disk.

        ``resync``: ``changes`` is the whole new content. Otherwise each item sets a key, and an
        empty value deletes it.
        """
        self._ready()
        index = self._index
        sets: dict[str, bytes] = {}
        prints: dict[str, bytes] = {}
        drops: list[str] = []
        for key, value in changes.items():
            old = index.get(key)
            if not resync and not value:
                if old is not None:
                    drops.append(key)
                continue
            fingerprint = _fingerprint(value)
            if old is None or old.fingerprint != fingerprint:
                sets[key] = value
                prints[key] = fingerprint
        if resync:
            drops.extend(k for k in index if k not in changes)
        if not sets and not drops:
            return False
        cur = self._cur_fd
        try:
            gone = {
                k: read_name(cur, index[k].name) for k in (*drops, *(k for k in sets if k in index))
            }
        except OSError as exc:  # removed or broken behind the writer's back
            self._needs_recovery = True  # the next call rebuilds the index from disk
            raise self._named(exc) from exc
        try:
            self._append(encode_record(self._seq + 1, sets, drops))  # the commit point
        except OSError as exc:
            raise self._named(exc) from exc
        self._seq += 1
        dropped = [index.pop(key).name for key in drops]
        writes = []
        for key, value in sets.items():
            name = key_to_filename(key)
            writes.append((name, key, value))
            index[key] = _Entry(name, prints[key])
        for key, value in gone.items():
            self._digester.remove(key, value)
        for key, value in sets.items():
            self._digester.add(key, value)
        try:
            self._materialise(writes, dropped)
            if self._journal_size >= self._checkpoint_bytes:
                self._checkpoint()
        except BaseException as exc:
            self._needs_recovery = True  # committed: the next call replays the journal
            if isinstance(exc, OSError):
                raise self._named(exc) from exc
            raise
        return True

    def close(self) -> None:
        fds, self._fds = self._fds, []
        if self._journal_fd >= 0:
            fds.append(self._journal_fd)
            self._journal_fd = -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # --- internals ----------------------------------------------------------------------

    def _named(self, exc: OSError) -> OSError:
        """``exc`` with the stream and the full path of the file it names in its message."""
        what = "" if exc.filename is None else f"{exc.filename}: "
        return OSError(exc.errno, f"{self._shown} (stream {self.stream!r}): {what}{exc.strerror}")

    def _ready(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"{self._shown}: the store is closed")
        if self._needs_recovery:
            self._recover()

    def _lock(self) -> int:
        fd = os.open(
            _LOCK,
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            self._file_mode,
            dir_fd=self._dir_fd,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.fchmod(fd, self._file_mode)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(
                    f"{self._shown} (stream {self.stream!r}) is already written by another "
                    "streamer-files listener; each stream directory has exactly one writer"
                ) from exc
            raise
        return fd

    def _append(self, record: bytes) -> None:
        """Append one record to the journal (flushed with ``fsync``); undo a partial append."""
        fd, end = self._journal_fd, self._journal_size
        try:
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fdatasync(fd)
        except BaseException:
            try:
                os.ftruncate(fd, end)
            except OSError:
                self._needs_recovery = True  # the journal decides what was applied
            raise
        self._journal_size = end + len(record)

    def _write_key_file(self, name: str, data: bytes, tmp: str) -> None:
        write_name(self._dir_fd, tmp, data, self._file_mode, chmod=self._chmod)
        os.replace(tmp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._cur_fd)

    def _write_files(self, writes: list[tuple[str, str, bytes]], tmp: str) -> None:
        for name, key, value in writes:
            if name[0] == "~":
                self._write_key_file(sidecar_name(name), key.encode("utf-8", "surrogatepass"), tmp)
            self._write_key_file(name, value, tmp)

    def _materialise(self, writes: list[tuple[str, str, bytes]], drops: list[str]) -> None:
        """Make ``current/`` hold what committed changes say (idempotent): ``writes`` as
        (file name, key, value), ``drops`` as file names.

        Large batches are written by several threads: creating a file is mostly waiting for
        the file system (measured on a virtual disk: ~1 ms each, ~0.1 ms with 16 at once).
        """
        cur = self._cur_fd
        for name in drops:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=cur)
            if name[0] == "~":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sidecar_name(name), dir_fd=cur)
        self._dirty.update(drops)
        try:
            if len(writes) < _PARALLEL_FROM:
                self._write_files(writes, _TMP)
            else:
                with ThreadPoolExecutor(_WRITERS, thread_name_prefix="streamer-files") as pool:
                    futures = [
                        pool.submit(self._write_files, writes[i::_WRITERS], f"{_TMP}-{i}")
                        for i in range(_WRITERS)
                    ]
                for future in futures:  # all have finished: the pool was shut down
                    future.result()
        finally:
            for name, _key, _value in writes:
                self._dirty.add(name)
                if name[0] == "~":
                    self._dirty.add(sidecar_name(name))

    def _checkpoint(self) -> None:
        """Flush what the journal covers into ``current/`` and start an empty journal."""
        if self._fsync:
            dirty = sorted(self._dirty)  # sidecars included: they are written the same way
            if len(dirty) < _PARALLEL_FROM:
                for name in dirty:
                    fsync_name(self._cur_fd, name)
            else:
                with ThreadPoolExecutor(_WRITERS, thread_name_prefix="streamer-files") as pool:
                    futures = [
                        pool.submit(self._fsync_names, dirty[i::_WRITERS]) for i in range(_WRITERS)
                    ]
                for future in futures:
                    future.result()
            os.fsync(self._cur_fd)
        write_name(
            self._dir_fd, _JOURNAL_NEW, encode_header(self._seq), self._file_mode, self._fsync
        )
        os.replace(_JOURNAL_NEW, JOURNAL, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        if self._fsync:
            os.fsync(self._dir_fd)
        self._dirty.clear()
        self._open_journal()

    def _fsync_names(self, names: list[str]) -> None:
        for name in names:
            fsync_name(self._cur_fd, name)

    def _open_journal(self) -> None:
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        fd = os.open(
            JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd
        )
        self._journal_fd = fd
        self._journal_size = os.fstat(fd).st_size

    def _recover(self) -> None:
        """Rebuild the index from disk: replay the journal over ``current/``, then checkpoint.

        Runs at open and after a batch failed past its commit point. O(keys held).
        """
        self._needs_recovery = True
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        for leftover in os.listdir(self._dir_fd):
            if leftover.startswith(_TMP) or leftover in (_JOURNAL_NEW, _OLD_CURRENT_TMP):
                os.unlink(leftover, dir_fd=self._dir_fd)
        try:
            raw = read_name(self._dir_fd, JOURNAL)
        except FileNotFoundError:
            raw = None
        if raw is None:
            base, records, valid = 0, [], 0
        else:
            try:
                journal = parse(raw)
            except ValueError as exc:
                raise OSError(
                    errno.EINVAL, f"{self._shown}/{JOURNAL} is not a streamer-files journal: {exc}"
                ) from exc
            base, records, valid = journal.base, journal.records, journal.valid_size
            if valid < len(raw):
                _log.warning(
                    "%s/%s: dropping %d bytes of an interrupted append (a batch that never "
                    "committed)",
                    self._shown,
                    JOURNAL,
                    len(raw) - valid,
                )
        final: dict[str, bytes | None] = {}
        for _seq, changes in records:
            final.update(changes)
        self._dirty = set()
        self._materialise(
            [(key_to_filename(k), k, v) for k, v in final.items() if v is not None],
            [key_to_filename(k) for k, v in final.items() if v is None],
        )
        self._index, self._digester = {}, Digester()
        self._fix_modes_and_index()
        self._seq = records[-1][0] if records else base
        if raw is None or records or valid < len(raw):
            self._checkpoint()
        else:
            self._open_journal()
        self._needs_recovery = False

    def _fix_modes_and_index(self) -> None:
        mode = self._file_mode
        for key, name, fd in scan(self._cur_fd, f"{self._shown}/{CURRENT}"):
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    _log.warning(
                        "%s/%s: ignoring %s: not a regular file", self._shown, CURRENT, name
                    )
                    continue
                if stat.S_IMODE(st.st_mode) != mode:
                    os.fchmod(fd, mode)
                value = read_fd(fd)
            finally:
                os.close(fd)
            self._index[key] = _Entry(name, _fingerprint(value))
            self._digester.add(key, value)
        for name in os.listdir(self._cur_fd):  # sidecars
            if name[0] == "." and name.endswith(".key"):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._cur_fd)
                try:
                    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
                        os.fchmod(fd, mode)
                finally:
                    os.close(fd)

    def _migrate_old_layout(self) -> None:
        """Turn the older ``current -> g-N`` layout into ``current/`` (crash-safe, once)."""
        d = self._dir_fd
        link: str | None = None
        for candidate in (OLD_CURRENT, CURRENT):
            try:
                st = os.stat(candidate, dir_fd=d, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                link = candidate
                break
        if link is not None:
            target = os.readlink(link, dir_fd=d)
            if link == CURRENT:
                os.replace(CURRENT, OLD_CURRENT, src_dir_fd=d, dst_dir_fd=d)
            current_is_dir = False
            with contextlib.suppress(FileNotFoundError):
                current_is_dir = stat.S_ISDIR(
                    os.stat(CURRENT, dir_fd=d, follow_symlinks=False).st_mode
                )
            if not current_is_dir:
                if GEN.fullmatch(target) and self._is_real_dir(target):
                    os.rename(target, CURRENT, src_dir_fd=d, dst_dir_fd=d)
                    _log.info("%s: moved %s to current/ (the journal layout)", self._shown, target)
                else:
                    _log.error(
                        "%s: 'current' points at %r, which is not a generation; starting empty "
                        "(the next snapshot refills it)",
                        self._shown,
                        target,
                    )
            if self._fsync:
                os.fsync(d)
            os.unlink(OLD_CURRENT, dir_fd=d)
        for name in os.listdir(d):
            if GEN.fullmatch(name) or name == _OLD_CURRENT_TMP:
                try:
                    if self._is_real_dir(name):
                        remove_flat_dir(d, name)
                    else:
                        os.unlink(name, dir_fd=d)
                except OSError as exc:
                    _log.warning("%s: could not remove the retired %s: %s", self._shown, name, exc)

    def _is_real_dir(self, name: str) -> bool:
        try:
            return stat.S_ISDIR(os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False
