"""Data sources for the reference Streamer server: what each stream holds and when it changes.

Every source is a :class:`StreamStore`: an in-memory, versioned copy of ``stream -> key -> value``
with a bounded change log, so a push-mode call that last saw version ``v`` gets exactly the keys
changed since ``v`` (or a full resync when the log no longer reaches back that far) without each
call keeping its own copy of the data. Waiting for a change costs one future per call, no thread.

- :class:`MemorySource` is the store itself, changed through ``set`` / ``delete`` / ``replace``.
- :class:`DirectorySource` and :class:`SQLiteSource` refresh the store from disk: on every
  request (so poll mode is never stale) and every ``poll_interval`` seconds while started (so
  push mode notices changes). Each poll first compares a cheap fingerprint.

All mutations are thread-safe; waiters on any event loop are woken with ``call_soon_threadsafe``.

An empty value means "no such key" everywhere: on the wire a ``resync=False`` update with an
empty value is a deletion, so storing ``b""`` deletes the key (snapshot, digest and pushed
changes always agree).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import quote, unquote

from streamer.base.errors import StreamerError
from streamer.wire.digest import Digester

__all__ = [
    "Changes",
    "DirectorySource",
    "MemorySource",
    "PollingSource",
    "SQLiteSource",
    "Snapshot",
    "Source",
    "SourceError",
    "SourceUnavailable",
    "StreamStore",
    "UnknownStreamError",
    "key_filename",
    "write_key",
]

logger = logging.getLogger("streamer.server.reference")

SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class SourceError(StreamerError):
    """A data source cannot be opened or read; the message names the path."""


class SourceUnavailable(SourceError):
    """The source cannot serve right now (e.g. its database connection is down or catching
    up); the server answers UNAVAILABLE so that clients retry, possibly on another replica."""


class UnknownStreamError(StreamerError, LookupError):
    """The source has no stream of that name. The message does not list the streams that do
    exist: it may reach a client (``known`` is accepted for compatibility and ignored)."""

    def __init__(self, stream: str, known: Iterable[str] = ()) -> None:
        super().__init__(f"stream {stream[:64]!r} does not exist")
        self.stream = stream


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One stream's full contents at ``version``; ``items`` is shared, never mutated."""

    version: int
    items: tuple[tuple[str, bytes], ...]
    digest: str


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed after some version, up to ``version``.

    ``resync=False``: ``items`` are the changed keys with their current value, ``b""`` for a
    deleted key. ``resync=True``: the change log did not reach back far enough and ``items`` is
    the whole snapshot.
    """

    version: int
    resync: bool
    items: tuple[tuple[str, bytes], ...]


@runtime_checkable
class Source(Protocol):
    """What :class:`streamer.server.reference.ReferenceServer` needs from a data source."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def streams(self) -> list[str]: ...

    async def snapshot(self, stream: str) -> Snapshot: ...

    async def changes_since(self, stream: str, version: int) -> Changes: ...


class _Stream:
    __slots__ = ("data", "diffs", "digester", "floor", "log", "snap", "version")

    def __init__(self, version: int) -> None:
        self.data: dict[str, bytes] = {}
        self.digester = Digester()
        self.version = version
        self.floor = version  # log entries with version <= floor may be missing
        self.log: deque[tuple[int, str]] = deque()
        self.snap: Snapshot | None = None
        # Changes up to ``version``, by the version they start from (cleared when ``version``
        # moves): the push calls that wait on one stream mostly wait at the same version, and
        # share one Changes (and batch).
        self.diffs: dict[int, Changes] = {}


class StreamStore:
    """Versioned in-memory streams with change notification; the base of every source.

    ``log_limit`` bounds the change log (entries, one per changed key); a call further behind
    than that gets a resync batch instead of a diff.
    """

    def __init__(self, *, log_limit: int = 100_000) -> None:
        if log_limit < 1:
            raise ValueError(f"log_limit must be >= 1, got {log_limit}")
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._version = 0  # store-wide, so a re-created stream never reuses old versions
        self._log_limit = log_limit

    # -- reading -------------------------------------------------------------------------

    def streams(self) -> list[str]:
        with self._lock:
            return sorted(self._streams)

    def current(self, stream: str) -> tuple[int, str] | None:
        """The stream's (version, digest) now, or None when it does not exist. O(1)."""
        with self._lock:
            st = self._streams.get(stream)
            return None if st is None else (st.version, st.digester.hexdigest())

    def get(self, stream: str) -> dict[str, bytes]:
        """A copy of one stream's data (raises :class:`UnknownStreamError`)."""
        with self._lock:
            return dict(self._stream(stream).data)

    async def start(self) -> None:
        """Nothing to do for an in-memory store; polling sources start their poller here."""

    async def stop(self) -> None:
        """Counterpart of :meth:`start`."""

    async def snapshot(self, stream: str) -> Snapshot:
        return self.snapshot_now(stream)

    def snapshot_now(self, stream: str) -> Snapshot:
        with self._lock:
            st = self._stream(stream)
            if st.snap is None or st.snap.version != st.version:
                st.snap = Snapshot(st.version, tuple(st.data.items()), st.digester.hexdigest())
            return st.snap

    async def changes_since(self, stream: str, version: int) -> Changes:
        """Wait until ``stream`` is newer than ``version`` and return what changed.

        Raises :class:`UnknownStreamError` if the stream does not exist or is removed while
        waiting.
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                st = self._stream(stream)
                if st.version > version:
                    return self._collect(st, version)
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(stream, set()).add(fut)
            try:
                await fut
            finally:
                with self._lock:
                    waiters = self._waiters.get(stream)
                    if waiters is not None:
                        waiters.discard(fut)

    # -- writing -------------------------------------------------------------------------

    def apply(
        self, stream: str, changes: Mapping[str, bytes | None], *, replace: bool = False
    ) -> int:
        """Set (value) or delete (``None`` or ``b""``) keys of ``stream``, creating it if needed.

        An empty value is a deletion, as it is on the wire. With ``replace=True`` keys absent
        from ``changes`` are deleted too. Values equal to the current ones are not changes.
        Returns the stream's version afterwards.
        """
        with self._lock:
            st = self._streams.get(stream)
            created = st is None
            if st is None:
                self._version += 1
                st = self._streams[stream] = _Stream(self._version)
            changed: list[tuple[str, bytes | None]] = []
            for key, value in changes.items():
                if not isinstance(key, str):
                    raise TypeError(f"stream {stream!r}: key must be str, got {key!r}")
                if value is not None and not isinstance(value, bytes):
                    raise TypeError(f"stream {stream!r} key {key!r}: value must be bytes")
                if not value:  # None or b"": a deletion
                    if key in st.data:
                        changed.append((key, None))
                elif st.data.get(key) != value:
                    changed.append((key, value))
            if replace:
                changed.extend((key, None) for key in st.data if key not in changes)
            if not changed and not created:
                return st.version
            if changed:
                self._version += 1
                st.version = self._version
                st.diffs.clear()  # every memoized Changes ended at the old version
            for key, value in changed:
                old = st.data.get(key)
                if old is not None:
                    st.digester.remove(key, old)
                if value is None:
                    del st.data[key]
                else:
                    st.data[key] = value
                    st.digester.add(key, value)
                st.log.append((st.version, key))
            while len(st.log) > self._log_limit:
                st.floor = st.log.popleft()[0]
            version = st.version
            self._wake(stream)
            return version

    def remove_stream(self, stream: str) -> None:
        """Forget a stream; push calls on it end with UNAVAILABLE ("stream X does not exist")."""
        with self._lock:
            if self._streams.pop(stream, None) is not None:
                self._wake(stream)

    # -- internals -----------------------------------------------------------------------

    def _stream(self, stream: str) -> _Stream:
        st = self._streams.get(stream)
        if st is None:
            raise UnknownStreamError(stream, self._streams)
        return st

    def _collect(self, st: _Stream, since: int) -> Changes:
        cached = st.diffs.get(since)
        if cached is not None:
            return cached
        if len(st.diffs) >= 64:  # calls spread over many versions: keep the memo bounded
            st.diffs.clear()
        if since < st.floor:
            changes = Changes(st.version, True, tuple(st.data.items()))
        else:
            keys: set[str] = set()
            for v, key in reversed(st.log):
                if v <= since:
                    break
                keys.add(key)
            items = tuple((k, st.data.get(k, b"")) for k in sorted(keys))
            changes = Changes(st.version, False, items)
        st.diffs[since] = changes
        return changes

    def _wake(self, stream: str) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for fut in self._waiters.pop(stream, ()):
            loop = fut.get_loop()
            if loop is running:  # changed on the waiters' own loop: no self-pipe write each
                _resolve(fut)
                continue
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class MemorySource(StreamStore):
    """A dict-backed source for tests, demos and benchmarks.

    ``MemorySource({"subscribers": {"imsi1": b"..."}})``. Methods may be called from any thread.
    """

    def __init__(
        self,
        streams: Mapping[str, Mapping[str, bytes]] | None = None,
        *,
        log_limit: int = 100_000,
    ) -> None:
        super().__init__(log_limit=log_limit)
        for name, mapping in (streams or {}).items():
            self.replace(name, mapping)

    def set(self, stream: str, key: str, value: bytes) -> None:
        """Set a key; ``b""`` deletes it (an empty value is a deletion on the wire)."""
        self.apply(stream, {key: value})

    def delete(self, stream: str, key: str) -> None:
        """Delete a key (pushed as an update with an empty value); a missing key is a no-op."""
        self.apply(stream, {key: None})

    def replace(self, stream: str, mapping: Mapping[str, bytes]) -> None:
        """Make ``stream`` hold exactly ``mapping`` (creating the stream if needed); keys with
        an empty value are left out."""
        self.apply(stream, dict(mapping), replace=True)


class PollingSource(StreamStore):
    """A store refreshed from outside storage by :meth:`_scan` (run in a worker thread).

    Refreshes are coalesced: a request waits for one scan that *started* after it arrived, so a
    burst of 1000 requests costs at most two scans, and none of them reads stale data.
    """

    def __init__(self, *, poll_interval: float = 0.5, log_limit: int = 100_000) -> None:
        super().__init__(log_limit=log_limit)
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        self.poll_interval = poll_interval
        self._issued = 0
        self._done = 0
        self._scan_lock = threading.Lock()
        self._alock: asyncio.Lock | None = None
        self._alock_loop: asyncio.AbstractEventLoop | None = None
        self._users = 0
        self._poller: asyncio.Task[None] | None = None
        self._failure: str | None = None  # the last refresh failure logged, until one succeeds

    def _scan(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release resources held between scans (called in a worker thread)."""

    def _close_locked(self) -> None:
        with self._scan_lock:
            self._close()

    def _scan_locked(self) -> None:
        with self._scan_lock:
            self._scan()

    async def refresh(self) -> None:
        """Bring the store up to date with storage (waits for a scan started after the call)."""
        self._issued += 1
        ticket = self._issued
        async with self._async_lock():
            if self._done >= ticket:
                return
            target = self._issued
            await asyncio.to_thread(self._scan_locked)
            self._done = target

    async def start(self) -> None:
        """Scan once (errors here are raised) and start polling; nested starts are counted."""
        if self._users == 0:
            await self.refresh()
            self._poller = asyncio.create_task(self._poll(), name=f"poll {self!r}")
        self._users += 1

    async def stop(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0 and self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
            await asyncio.to_thread(self._close_locked)

    async def snapshot(self, stream: str) -> Snapshot:
        try:
            await self.refresh()
        except SourceError as exc:
            self._failed(exc)
        else:
            self._recovered()
        return self.snapshot_now(stream)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.refresh()
            except SourceError as exc:
                self._failed(exc)
            except Exception as exc:
                self._failed(exc, unexpected=True)
            else:
                self._recovered()

    def _failed(self, exc: Exception, *, unexpected: bool = False) -> None:
        """Log a refresh failure once (not on every poll and request while it persists)."""
        text = f"{type(exc).__name__}: {exc}" if unexpected else str(exc)
        if text == self._failure:
            logger.debug("%r: still failing: %s", self, text)
            return
        self._failure = text
        if unexpected:
            logger.error("polling %r failed; keeping the last data", self, exc_info=exc)
        else:
            logger.warning("%s; serving the last data read", text)

    def _recovered(self) -> None:
        if self._failure is not None:
            self._failure = None
            logger.info("%r: reading works again", self)

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._alock is None or self._alock_loop is not loop:
            self._alock, self._alock_loop = asyncio.Lock(), loop
        return self._alock


def key_filename(key: str) -> str:
    """The file name that holds ``key`` in a :class:`DirectorySource` stream directory.

    ``quote(key, safe="")``, plus a leading ``.`` and a trailing ``~`` percent-encoded, so no
    key is ever stored as a hidden or editor-backup file (which the source skips).
    """
    name = quote(key, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if name.endswith("~"):
        name = name[:-1] + "%7E"
    return name


def _skipped(name: str) -> bool:
    """Hidden files and editor backups in a stream directory are never keys."""
    return name.startswith(".") or name.endswith("~")


def write_key(root: str | os.PathLike[str], stream: str, key: str, value: bytes) -> Path:
    """Atomically write one key of a directory source (temp file in ``root``, then rename).

    The temp name is unique per call, so it is built as a plain string, never a ``pathlib``
    path: CPython 3.12's pathlib interns every path part it parses, and interned strings are
    never freed there, so one ``Path`` per write grows the process without bound.
    """
    base = os.fspath(root)
    directory = os.path.join(base, stream)
    target = os.path.join(directory, key_filename(key))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(base, f".tmp-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with open(fd, "wb", closefd=False) as out:
            out.write(value)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return Path(target)


_Sig = tuple[int, int, int]  # inode, mtime_ns, size
_RETRY: _Sig = (-1, -1, -1)  # matches no file: read it again on the next poll
_RACY_NS = 2_000_000_000  # files this recent are re-read: mtime granularity can hide a rewrite


class DirectorySource(PollingSource):
    """``root/<stream>/<key_filename(key)>`` files; the file's bytes are the value.

    Every subdirectory of ``root`` is a stream (an empty one is an empty stream); regular files
    directly in ``root`` are ignored, which is where :func:`write_key` puts its temp files, and
    so are hidden files (``.name``) and editor backups (``name~``) in a stream directory.
    Changes are found by comparing each file's (inode, mtime, size); files modified within the
    last two seconds are re-read on every poll so a same-size rewrite is not missed.

    An empty file is a deleted key, except that a file emptied within the last two seconds is
    held back (its last value kept) until it is older or non-empty: that is usually an in-place
    rewrite caught between truncate and write. Writers should still write atomically (temp
    file, then rename), as :func:`write_key` does. A file or stream directory that cannot be
    read keeps its last value; that is logged once as a WARNING, not on every poll.

    Nothing outside ``root`` is ever served: a symlink inside it (a stream directory or a key
    file) that resolves outside ``root`` is skipped, never read, and named in one WARNING.
    Symlinks that stay inside ``root`` are followed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        poll_interval: float = 0.5,
        log_limit: int = 100_000,
    ) -> None:
        super().__init__(poll_interval=poll_interval, log_limit=log_limit)
        self.root = Path(root)
        self._files: dict[str, dict[str, _Sig]] = {}
        self._racy: dict[str, set[str]] = {}
        self._problems: dict[str, str] = {}  # path -> what was logged about it
        self._real_root = ""  # os.path.realpath(root), refreshed on every scan

    def __repr__(self) -> str:
        return f"DirectorySource({str(self.root)!r})"

    def _scan(self) -> None:
        try:
            self._scan_root()
        except SourceError:
            raise
        except OSError as exc:  # anything not handled per stream or per file
            raise SourceError(f"cannot scan {self!r}: {exc}") from exc

    def _outside(self, path: str, problems: dict[str, str]) -> bool:
        """Whether the symlink ``path`` resolves outside the data directory (then it is
        recorded in ``problems``, to be logged once, and must not be read)."""
        real = os.path.realpath(path)
        root = self._real_root
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return False
        problems[path] = (
            f"{self!r}: skipping {path!r}: it is a symlink to {real!r}, outside the data "
            "directory; it is not served"
        )
        return True

    def _scan_root(self) -> None:
        now = time.time_ns()
        self._real_root = os.path.realpath(self.root)
        try:
            with os.scandir(self.root) as it:
                entries = list(it)
        except OSError as exc:
            raise SourceError(f"cannot read stream directory {str(self.root)!r}: {exc}") from exc
        problems: dict[str, str] = {}
        names: list[str] = []
        kept: set[str] = set()  # streams that could not be read this time: keep their data
        for entry in entries:
            try:
                if entry.is_symlink() and self._outside(entry.path, problems):
                    continue
                if entry.is_dir():
                    names.append(entry.name)
            except OSError as exc:
                kept.add(entry.name)
                problems[entry.path] = self._problem(entry.path, exc)
        for stream in set(self._files) - set(names) - kept:
            del self._files[stream]
            self._racy.pop(stream, None)
            self.remove_stream(stream)
        for stream in names:
            try:
                self._scan_stream(stream, now, problems)
            except FileNotFoundError:  # removed while scanning; the next poll forgets it
                continue
            except OSError as exc:
                path = os.path.join(self.root, stream)
                problems[path] = self._problem(path, exc)
        self._report(problems)

    def _problem(self, path: str, exc: OSError) -> str:
        reason = exc.strerror or str(exc)
        return f"{self!r}: cannot read {path!r} ({reason}); keeping its last data"

    def _report(self, problems: dict[str, str]) -> None:
        for path, text in problems.items():
            if self._problems.get(path) != text:
                logger.warning("%s", text)
        for path in self._problems.keys() - problems.keys():
            logger.info("%r: %r no longer fails", self, path)
        self._problems = problems

    def _scan_stream(self, stream: str, now: int, problems: dict[str, str]) -> None:
        directory = os.path.join(self.root, stream)
        prev = self._files.get(stream, {})
        racy = self._racy.get(stream, set())
        current: dict[str, _Sig] = {}
        new_racy: set[str] = set()
        changes: dict[str, bytes | None] = {}
        with os.scandir(directory) as it:
            entries = [e for e in it if not _skipped(e.name)]
        for entry in entries:
            name = entry.name
            try:
                path = entry.path
                if entry.is_symlink():
                    if self._outside(path, problems):
                        continue
                    path = os.path.realpath(path)
                if not entry.is_file():
                    continue
                st = entry.stat()
                sig = (st.st_ino, st.st_mtime_ns, st.st_size)
                recent = st.st_mtime_ns >= now - _RACY_NS
                if prev.get(name) == sig and name not in racy:
                    current[name] = sig
                    continue
                value = _read_nofollow(path)
            except FileNotFoundError:  # removed while scanning: a deletion
                continue
            except OSError as exc:  # EACCES, EIO, ELOOP...: keep the last value, retry next poll
                problems[entry.path] = self._problem(entry.path, exc)
                current[name] = _RETRY
                continue
            if not value and recent:  # likely truncated for an in-place rewrite: wait
                current[name] = _RETRY
                continue
            changes[unquote(name)] = value  # b"" (settled empty file) deletes the key
            current[name] = sig
            if recent:
                new_racy.add(name)
        for name in prev.keys() - current.keys():
            changes.setdefault(unquote(name), None)
        if changes or stream not in self._files:
            self.apply(stream, changes)
        self._files[stream] = current
        self._racy[stream] = new_racy


def _read_nofollow(path: str) -> bytes:
    """A file's bytes; a symlink swapped in since the scan is not followed (ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with open(fd, "rb") as f:
        return f.read()


class SQLiteSource(PollingSource):
    """One table per stream, named after the stream, with columns ``key`` and ``value``.

    ``CREATE TABLE "subscribers" (key TEXT PRIMARY KEY, value BLOB)``. Tables without both
    columns (and ``sqlite_*`` tables) are ignored; TEXT values are sent as UTF-8; a row whose
    value is NULL or empty is not a key (an empty value means a deletion).
    The database is opened read-only; ``PRAGMA data_version`` tells whether another connection
    committed since the last poll, and only then are the tables re-read. Each poll also checks
    that the path still names the file that was opened (device and inode), so a database that
    is replaced (``os.replace``, or deleted and re-created) is reopened and re-read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval: float = 0.5,
        log_limit: int = 100_000,
    ) -> None:
        super().__init__(poll_interval=poll_interval, log_limit=log_limit)
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the opened file

    def __repr__(self) -> str:
        return f"SQLiteSource({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.is_file():
                raise SourceError(f"SQLite database {str(self.path)!r} does not exist")
            uri = self.path.resolve().as_uri() + "?mode=ro"
            try:
                self._conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise SourceError(f"cannot open SQLite database {str(self.path)!r}: {exc}") from exc
            self._data_version = None
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _scan(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:  # keep the last data; reopen when it is back
            self._close()
            raise SourceError(f"SQLite database {str(self.path)!r} does not exist") from exc
        except OSError as exc:
            raise SourceError(f"cannot read SQLite database {str(self.path)!r}: {exc}") from exc
        ident = (st.st_dev, st.st_ino)
        if self._conn is not None and ident != self._ident:
            logger.info("%r: the database file was replaced; reopening it", self)
            self._close()
        conn = self._connect()  # a new connection starts with no data version
        self._ident = ident
        try:
            (data_version,) = conn.execute("PRAGMA data_version").fetchone()
            if data_version == self._data_version:
                return
            tables = self._read_all(conn)
        except sqlite3.Error as exc:
            self._close()
            raise SourceError(f"cannot read SQLite database {str(self.path)!r}: {exc}") from exc
        self._data_version = data_version
        for stream in set(self.streams()) - tables.keys():
            self.remove_stream(stream)
        for stream, mapping in tables.items():
            self.apply(stream, mapping, replace=True)

    @staticmethod
    def _read_all(conn: sqlite3.Connection) -> dict[str, dict[str, bytes]]:
        conn.execute("BEGIN")
        try:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                )
            ]
            tables: dict[str, dict[str, bytes]] = {}
            for name in names:
                quoted = '"' + name.replace('"', '""') + '"'
                columns = {row[1].lower() for row in conn.execute(f"PRAGMA table_info({quoted})")}
                if not {"key", "value"} <= columns:
                    continue
                tables[name] = {
                    str(key): _as_bytes(value)
                    for key, value in conn.execute(f"SELECT key, value FROM {quoted}")
                    if key is not None
                }
            return tables
        finally:
            conn.execute("COMMIT")


def _as_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
