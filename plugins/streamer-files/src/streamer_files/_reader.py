"""The reader side of the journal contract: a consistent snapshot of one stream, never
following a symlink below the root (see the README's "Reading" section).

A stream directory holds ``current/`` (one file per key) and ``journal`` (the batches since the
last checkpoint). :func:`read_snapshot` lists and reads ``current/``, then reads the journal
through the descriptor it opened before the listing, replays the journal's valid records over
what it read, and starts again if ``journal`` was replaced (checkpointed) meanwhile. Streams
still in the older ``current -> g-N`` layout are read as they are.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from streamer_files._fs import DIR_FLAGS, read_fd, read_name
from streamer_files._journal import parse
from streamer_files._names import (
    filename_to_key,
    is_hashed_name,
    key_to_filename,
    sidecar_name,
)

__all__ = [
    "CURRENT",
    "GEN",
    "JOURNAL",
    "OLD_CURRENT",
    "Snapshot",
    "read_dir",
    "read_snapshot",
    "read_stream",
    "scan",
    "stream_path",
]

_log = logging.getLogger("streamer.plugin.files")

CURRENT = "current"
JOURNAL = "journal"
OLD_CURRENT = ".old-current"  # the older layout's symlink, while the writer migrates it
GEN = re.compile(r"g-([0-9]{1,18})")


class Snapshot(NamedTuple):
    """What a stream holds: ``seq`` is the number of the last batch applied (0 for none, and it
    only grows: every batch that changed something got the next number), ``data`` is
    ``{key: value}``."""

    seq: int
    data: dict[str, bytes]


def stream_path(root: str | os.PathLike[str], stream: str) -> Path:
    """The directory that holds ``stream`` under ``root``; its files are in ``<that>/current``."""
    return Path(root) / key_to_filename(stream)


def scan(dir_fd: int, shown: str) -> Iterator[tuple[str, str, int]]:
    """(key, file name, fd open for reading) for every key file in ``dir_fd``; the caller
    closes the fd. Files that vanish while being listed are skipped (a journal record that
    the caller replays afterwards covers them)."""
    for name in sorted(os.listdir(dir_fd)):
        if name[0] == ".":
            continue
        if is_hashed_name(name):
            try:
                key = read_name(dir_fd, sidecar_name(name)).decode("utf-8", "surrogatepass")
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as exc:
                _log.warning(
                    "%s: ignoring %s: its key sidecar is unreadable (%s)", shown, name, exc
                )
                continue
            if key_to_filename(key) != name:
                _log.warning("%s: ignoring %s: its sidecar names another key", shown, name)
                continue
        else:
            decoded = filename_to_key(name)
            if decoded is None:
                _log.warning("%s: ignoring %s: not a name this plugin writes", shown, name)
                continue
            key = decoded
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as exc:  # ELOOP: a symlink this plugin never makes; never followed
            _log.warning("%s: ignoring %s: %s", shown, name, exc.strerror)
            continue
        yield key, name, fd


def read_dir(dir_fd: int, shown: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, _name, fd in scan(dir_fd, shown):
        try:
            out[key] = read_fd(fd)
        finally:
            os.close(fd)
    return out


def _read_old_layout(stream_fd: int, shown: str) -> Snapshot | None:
    """The snapshot of a stream still in the older ``current -> g-N`` layout (None if it is
    not in that layout)."""
    for link in (CURRENT, OLD_CURRENT):
        try:
            target = os.readlink(link, dir_fd=stream_fd)
        except OSError:
            continue
        if not GEN.fullmatch(target):
            return Snapshot(0, {})  # not a link this plugin made: never followed (nor kept)
        try:
            gen_fd = os.open(target, DIR_FLAGS, dir_fd=stream_fd)
        except FileNotFoundError:
            return None  # already moved to current/ by a migration
        try:
            return Snapshot(0, read_dir(gen_fd, f"{shown}/{target}"))
        finally:
            os.close(gen_fd)
    return None


def _read_once(stream_fd: int, shown: str) -> Snapshot | None:
    """One attempt of :func:`read_snapshot`; None when a checkpoint raced it."""
    try:
        jfd = os.open(JOURNAL, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stream_fd)
    except FileNotFoundError:
        old = _read_old_layout(stream_fd, shown)
        if old is not None:
            return old
        # No journal yet: current/ is being set up or was just migrated; it holds everything.
        try:
            cur_fd = os.open(CURRENT, DIR_FLAGS, dir_fd=stream_fd)
        except FileNotFoundError:
            return Snapshot(0, {})  # never written
        try:
            data = read_dir(cur_fd, f"{shown}/{CURRENT}")
        finally:
            os.close(cur_fd)
        try:
            os.stat(JOURNAL, dir_fd=stream_fd, follow_symlinks=False)
        except FileNotFoundError:
            return Snapshot(0, data)
        return None  # the writer started its journal meanwhile: read again
    try:
        ino = os.fstat(jfd).st_ino
        try:
            cur_fd = os.open(CURRENT, DIR_FLAGS, dir_fd=stream_fd)
        except FileNotFoundError:
            return None
        try:
            data = read_dir(cur_fd, f"{shown}/{CURRENT}")
        finally:
            os.close(cur_fd)
        journal = parse(read_fd(jfd))  # read after the files: covers whatever they showed
        if os.stat(JOURNAL, dir_fd=stream_fd, follow_symlinks=False).st_ino != ino:
            return None  # checkpointed meanwhile: the files may mix two journals' batches
    except FileNotFoundError:
        return None
    finally:
        os.close(jfd)
    for _seq, changes in journal.records:
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
    return Snapshot(journal.seq, data)


def read_snapshot(root: str | os.PathLike[str], stream: str) -> Snapshot:
    """A consistent snapshot of what the sink holds for ``stream`` and its batch number.

    This is the reader side of the journal contract (README, "Reading"): list and read
    ``current/``, then read ``journal`` through the fd opened before, replay its valid records
    over what was read, and start again if ``journal`` was replaced (checkpointed) meanwhile.
    Safe while the writer runs, and after it was killed or lost power. Never follows a symlink
    below ``root``.
    """
    base = stream_path(root, stream)
    shown = str(base)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Snapshot(0, {})
    try:
        try:
            stream_fd = os.open(base.name, DIR_FLAGS, dir_fd=root_fd)
        except FileNotFoundError:
            return Snapshot(0, {})
    finally:
        os.close(root_fd)
    try:
        for attempt in range(200):
            snap = _read_once(stream_fd, shown)
            if snap is not None:
                return snap
            time.sleep(min(0.001 * attempt, 0.05))
    finally:
        os.close(stream_fd)
    raise RuntimeError(f"{shown}: the stream kept changing while it was being read")


def read_stream(root: str | os.PathLike[str], stream: str) -> dict[str, bytes]:
    """``{key: value}`` of :func:`read_snapshot` (for readers and tests)."""
    return read_snapshot(root, stream).data
