"""File-system operations relative to directory file descriptors, never following a symlink.

Every name handed to these helpers is one path component opened relative to a directory fd
with ``O_NOFOLLOW``, so nothing planted in a directory (a symlink, a pre-created directory of
another user) can redirect a read or a write elsewhere. Names are plain ``str``: no pathlib
object is built per batch (CPython 3.12 interns path parts and never frees them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

__all__ = [
    "DIR_FLAGS",
    "UnsafeDirectoryError",
    "dir_mode_for",
    "fsync_name",
    "open_private_dir",
    "read_fd",
    "read_name",
    "remove_flat_dir",
    "umask_keeps",
    "write_name",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeDirectoryError(PermissionError):
    """A directory the sink would write is a symlink, another user's, or writable by others."""


def dir_mode_for(file_mode: int) -> int:
    """Directories get the file mode's read bits plus search: 0600 -> 0700, 0640 -> 0750."""
    mode = file_mode | 0o700
    if file_mode & 0o040:
        mode |= 0o010
    return mode


def open_private_dir(parent_fd: int, name: str, shown: str, mode: int) -> int:
    """Open (creating it if missing) the directory ``name`` under ``parent_fd`` for writing.

    Refuses, with :class:`UnsafeDirectoryError` naming ``shown``, a directory that is a
    symlink, is not owned by this process's user, or is group/world-writable; then sets its
    mode to ``mode`` (whatever the umask was).
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=parent_fd)
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
            except OSError:
                what = "not a directory"
            raise UnsafeDirectoryError(
                exc.errno,
                f"{shown} is {what}; streamer-files writes only into a real "
                "directory it owns (remove it, or point 'dir' elsewhere)",
            ) from exc
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise UnsafeDirectoryError(
                errno.EPERM,
                f"{shown} is owned by uid {st.st_uid}, not by this process's user "
                f"(uid {os.geteuid()}); streamer-files refuses a directory another user controls",
            )
        if st.st_mode & 0o022:
            raise UnsafeDirectoryError(
                errno.EPERM,
                f"{shown} is writable by its group or by everyone (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); streamer-files refuses it (chmod go-w it "
                "if that is intended to be yours)",
            )
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_name(dir_fd: int, name: str) -> bytes:
    """The content of the regular file ``name`` (a symlink raises ``OSError`` ELOOP)."""
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def read_fd(fd: int) -> bytes:
    """Everything from ``fd``'s offset to its end."""
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def umask_keeps(mode: int) -> bool:
    """Whether this process's umask (from /proc/self/status) leaves ``mode`` as it is, so a
    file created with it needs no ``fchmod``. False when it cannot tell. (A umask only ever
    removes bits: if it changes later, files come out stricter, never looser.)"""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & mode == 0
    except (OSError, ValueError):
        pass
    return False


def write_name(
    dir_fd: int, name: str, data: bytes, mode: int, fsync: bool = False, chmod: bool = True
) -> None:
    """Create or truncate ``name`` with mode ``mode`` and write ``data``; ``chmod``: set the
    mode with ``fchmod`` too (needed unless the umask keeps ``mode``, see umask_keeps)."""
    fd = os.open(name, _WRITE_FLAGS, mode, dir_fd=dir_fd)
    try:
        if chmod:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_name(dir_fd: int, name: str) -> None:
    """fsync the file ``name`` if it exists (a missing one was deleted: nothing to flush)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_flat_dir(parent_fd: int, name: str) -> None:
    """Remove the directory ``name`` and the files in it (never following a symlink)."""
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    try:
        for entry in os.listdir(fd):
            os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
