"""streamer-files against planted symlinks, foreign directories and loose permissions (issue 19),
and its migration from the older ``current -> g-N`` layout. Real files and symlinks in temp dirs."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamer_files import (
    FilesListener,
    FileStore,
    UnsafeDirectoryError,
    create_listeners,
    key_to_filename,
    read_snapshot,
    read_stream,
    stream_path,
)

from streamer.sink.conformance import listener_digest as _digest
from streamer.sink.conformance import make_batch as _batch
from streamer.wire.digest import snapshot_digest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory the sink must never write into, with one file it must never change."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "victim").write_bytes(b"precious")
    return path


def _untouched(outside: Path) -> None:
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_bytes() == b"precious"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_stream_directory_that_is_a_symlink_is_refused_and_the_others_carry_on(
    root: Path, outside: Path
) -> None:
    root.mkdir()
    os.symlink(outside, root / "planted")
    planted, good = create_listeners({"streams": ["planted", "good"], "dir": str(root)})
    with pytest.raises(UnsafeDirectoryError, match=f"{root / 'planted'} is a symbolic link"):
        planted.update(_batch({"k": b"v"}, resync=True))
    assert good.update(_batch({"k": b"v"}, resync=True)) is True
    assert read_stream(root, "good") == {"k": b"v"}
    with pytest.raises(UnsafeDirectoryError):  # still refused on the supervisor's retry
        planted.get_extra_args()
    _untouched(outside)
    with pytest.raises(OSError):  # readers do not follow it either
        read_stream(root, "planted")
    planted.close()
    good.close()


def test_a_group_or_world_writable_stream_directory_is_refused(root: Path) -> None:
    for i, mode in enumerate((0o770, 0o702, 0o777)):
        path = root / f"s{i}"
        path.mkdir(parents=True)
        path.chmod(mode)
        with pytest.raises(UnsafeDirectoryError, match=f"{path} is writable by its group"):
            FileStore(root, f"s{i}")
        assert os.listdir(path) == []  # refused before anything was written


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_stream_directory_of_another_user_is_refused(root: Path) -> None:
    path = root / "s"
    path.mkdir(parents=True)
    os.chown(path, 54321, -1)
    with pytest.raises(UnsafeDirectoryError, match=f"{path} is owned by uid 54321"):
        FileStore(root, "s")
    assert os.listdir(path) == []


def test_a_stream_path_that_is_a_file_is_refused(root: Path) -> None:
    root.mkdir()
    (root / "s").write_bytes(b"")
    with pytest.raises(UnsafeDirectoryError, match="not a directory"):
        FileStore(root, "s")


@pytest.mark.parametrize("name", ["journal", ".lock"])
def test_planted_symlinks_for_the_sinks_own_files_are_never_followed(
    root: Path, outside: Path, name: str
) -> None:
    base = root / "s"
    base.mkdir(parents=True, mode=0o700)
    os.symlink(outside / "victim", base / name)
    with pytest.raises(OSError, match=f"{base} \\(stream 's'\\): {name}: Too many levels"):
        FileStore(root, "s")
    _untouched(outside)


def test_planted_temp_names_and_key_symlinks_are_replaced_not_followed(
    root: Path, outside: Path
) -> None:
    store = FileStore(root, "s")
    store.apply(True, {"a": b"1"})
    store.close()
    base = root / "s"
    os.symlink(outside / "victim", base / ".tmp")
    os.symlink(outside / "victim", base / ".tmp-3")
    os.symlink(outside / "victim", base / "current" / "b")
    store = FileStore(root, "s")
    assert store.keys() == {"a"}  # the planted key symlink is ignored, never read
    assert read_stream(root, "s") == {"a": b"1"}
    store.apply(False, {"b": b"2"})  # the symlink itself is replaced by the key's file
    assert not (base / "current" / "b").is_symlink()
    assert read_stream(root, "s") == {"a": b"1", "b": b"2"}
    store.apply(True, {f"k{i}": b"x" for i in range(600)})  # the threaded writers' temp names
    store.close()
    _untouched(outside)


def test_current_pointing_outside_is_not_followed(root: Path, outside: Path) -> None:
    base = root / "s"
    base.mkdir(parents=True, mode=0o700)
    os.symlink(outside, base / "current")
    assert read_stream(root, "s") == {}
    store = FileStore(root, "s")
    store.apply(True, {"victim": b"overwritten?"})
    store.close()
    _untouched(outside)
    assert (base / "current").is_dir() and not (base / "current").is_symlink()
    assert read_stream(root, "s") == {"victim": b"overwritten?"}


def test_files_are_private_whatever_the_umask(root: Path, loose_umask: None) -> None:
    lst = _one(root)
    lst.update(_batch({"a": b"1", "k" * 300: b"long"}, resync=True))
    lst.update(_batch({"b": b"2"}))
    base = stream_path(root, "s")
    assert _mode(root) == 0o700
    assert _mode(base) == 0o700 and _mode(base / "current") == 0o700
    for path in [base / ".lock", base / "journal", *(base / "current").iterdir()]:
        assert _mode(path) == 0o600, path
    lst.close()


def test_file_mode_0640_shares_read_access_with_the_group(root: Path, loose_umask: None) -> None:
    (lst,) = create_listeners({"streams": ["s"], "dir": str(root), "file_mode": "0640"})
    lst.update(_batch({"a": b"1", "k" * 300: b"long"}, resync=True))
    base = stream_path(root, "s")
    assert _mode(base) == 0o750 and _mode(base / "current") == 0o750
    for path in [base / "journal", *(base / "current").iterdir()]:
        assert _mode(path) == 0o640, path
    lst.close()
    lst = _one(root)  # back to the default: the modes are tightened again at open
    lst.get_extra_args()
    assert _mode(base) == 0o700
    assert all(_mode(p) == 0o600 for p in (base / "current").iterdir())
    lst.close()


def test_file_mode_0640_holds_under_a_strict_umask(root: Path) -> None:
    old = os.umask(0o077)
    try:
        (lst,) = create_listeners({"streams": ["s"], "dir": str(root), "file_mode": "0640"})
        lst.update(_batch({"a": b"1"}, resync=True))
        lst.update(_batch({"b": b"2"}))
    finally:
        os.umask(old)
    base = stream_path(root, "s")
    assert _mode(base) == 0o750
    for path in [base / "journal", *(base / "current").iterdir()]:
        assert _mode(path) == 0o640, path
    lst.close()


@pytest.mark.parametrize("mode", ["0644", "0660", "0666", "0604", "0700", "640", "rw", 0o640])
def test_file_modes_granting_more_are_refused(mode: object) -> None:
    with pytest.raises(ValueError, match=r"^file_mode: expected one of '0600', '0640', got "):
        create_listeners({"streams": ["s"], "dir": "/tmp/x", "file_mode": mode})


def _one(root: Path) -> FilesListener:
    (listener,) = create_listeners({"streams": ["s"], "dir": str(root)})
    return listener


def _old_layout(root: Path, data: dict[str, bytes]) -> Path:
    """A stream directory as the older streamer-files left it (umask 022, links, leftovers)."""
    base = root / "s"
    (base / "g-41").mkdir(parents=True)
    for key, value in data.items():
        (base / "g-41" / key_to_filename(key)).write_bytes(value)
        (base / "g-41" / key_to_filename(key)).chmod(0o644)
    (base / "g-40").mkdir()  # a generation an interrupted batch left behind
    (base / "g-40" / "a").write_bytes(b"stale")
    os.symlink("g-41", base / "current")
    (base / ".lock").write_bytes(b"")
    base.chmod(0o755)
    return base


def test_the_older_layout_is_read_and_migrated_in_place(root: Path) -> None:
    data = {"a": b"1", "B": b"2"}
    base = _old_layout(root, data)
    assert read_snapshot(root, "s") == (0, data)  # readers before the writer's upgrade
    lst = _one(root)
    assert _digest(lst) == snapshot_digest(data.items())
    assert sorted(os.listdir(base)) == [".lock", "current", "journal"]
    assert (base / "current").is_dir() and not (base / "current").is_symlink()
    assert _mode(base) == 0o700 and all(_mode(p) == 0o600 for p in (base / "current").iterdir())
    assert read_stream(root, "s") == data
    lst.update(_batch({"a": b"one"}))
    assert read_snapshot(root, "s") == (1, {"a": b"one", "B": b"2"})
    lst.close()


def test_a_migration_interrupted_halfway_is_finished(root: Path) -> None:
    data = {"a": b"1"}
    base = _old_layout(root, data)
    os.rename(base / "current", base / ".old-current")  # killed right after the first step
    assert read_stream(root, "s") == data
    lst = _one(root)
    assert _digest(lst) == snapshot_digest(data.items())
    assert sorted(os.listdir(base)) == [".lock", "current", "journal"]
    lst.close()


def test_a_migration_stopped_before_its_journal_reads_from_current(root: Path) -> None:
    data = {"a": b"1"}
    base = _old_layout(root, data)
    os.rename(base / "current", base / ".old-current")
    os.rename(base / "g-41", base / "current")  # killed after the second step
    assert read_stream(root, "s") == data
    lst = _one(root)
    assert _digest(lst) == snapshot_digest(data.items())
    assert sorted(os.listdir(base)) == [".lock", "current", "journal"]
    lst.close()
