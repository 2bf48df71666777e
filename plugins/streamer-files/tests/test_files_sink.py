from __future__ import annotations

import errno
import logging
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from streamer_files import (
    MAX_NAME,
    FilesListener,
    FileStore,
    StoreLockedError,
    create_listeners,
    filename_to_key,
    key_to_filename,
    read_stream,
    stream_path,
)

from streamer import sinktest
from streamer.digest import EMPTY_DIGEST, snapshot_digest
from streamer.listener import listener_problems
from streamer.sinktest import listener_digest as _digest
from streamer.sinktest import make_batch as _batch


def _one(root: Path, stream: str = "s") -> FilesListener:
    (listener,) = create_listeners({"streams": [stream], "dir": str(root)})
    return listener


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def test_listeners_per_stream_contract_and_entry_point(root: Path) -> None:
    listeners = create_listeners({"streams": ["a", "b"], "dir": str(root)})
    try:
        assert [lst.name for lst in listeners] == ["a", "b"]
        assert all(listener_problems(lst) == [] for lst in listeners)
        assert not root.exists()  # the factory touches nothing (`streamer check` calls it)
        assert _digest(listeners[0]) == EMPTY_DIGEST
        assert (root / "a" / "current").is_symlink() and not (root / "b").exists()
    finally:
        for lst in listeners:
            lst.close()
    (ep,) = [e for e in entry_points(group="streamer.listeners") if e.name == "files"]
    assert ep.load() is create_listeners


def test_resync_replaces_the_content(root: Path) -> None:
    lst = _one(root)

    def one_file_per_key(expected: dict[str, bytes]) -> None:
        assert sorted(os.listdir(lst.store.live_dir)) == sorted(map(key_to_filename, expected))

    sinktest.check_resync_replaces(
        lst, lambda: read_stream(root, "s"), extra_check=one_file_per_key
    )
    lst.close()


def test_resync_keeps_keys_with_empty_values(root: Path) -> None:
    lst = _one(root)
    sinktest.check_resync_keeps_empty_values(lst, lambda: read_stream(root, "s"))
    lst.close()


def test_incremental_sets_and_empty_value_deletes(root: Path) -> None:
    lst = _one(root)
    sinktest.check_incremental(lst, lambda: read_stream(root, "s"))
    lst.close()


def test_digest_tracks_content_and_survives_reopen(root: Path) -> None:
    lst = _one(root)

    def reopen() -> FilesListener:
        lst.close()  # one writer per stream directory
        return _one(root)

    sinktest.check_digest(lst, lambda: read_stream(root, "s"), reopen=reopen)


HOSTILE = {
    "../x": b"dotdot",
    "../../etc/passwd": b"escape",
    "a/b": b"slash",
    "/abs": b"absolute",
    "x\x00y": b"nul",
    "k" * 1000: b"long",
    "Key": b"upper",
    "key": b"lower",
    "KEY": b"shout",
    ".": b"dot",
    "..": b"dotdot-alone",
    ".hidden": b"hidden",
    "~tilde": b"tilde",
    "": b"empty key",
    "100%": b"percent",
    "%41": b"looks encoded",
    "ü": b"nfc",
    "u\u0308": b"nfd",
    "a\nb": b"newline",
    "con": b"windows-reserved",
    "é" * 150: b"long-multibyte",
}


def test_hostile_keys_stay_inside_and_round_trip(root: Path) -> None:
    lst = _one(root)
    lst.update(_batch(HOSTILE, resync=True))
    assert read_stream(root, "s") == HOSTILE
    # Nothing escaped: the parent holds only the root, the stream dir only our entries.
    assert os.listdir(root.parent) == ["root"]
    assert os.listdir(root) == ["s"]
    live = lst.store.live_dir
    names = os.listdir(live)
    for name in names:
        assert (live / name).is_file() and not (live / name).is_symlink()
        assert name == name.lower() and len(name.encode()) <= MAX_NAME + 10
    assert len({n.casefold() for n in names}) == len(names)  # no case-insensitive clashes
    lst.close()
    reopened = _one(root)
    assert _digest(reopened) == snapshot_digest(HOSTILE.items())
    reopened.update(_batch(dict.fromkeys(HOSTILE, b"")))
    assert read_stream(root, "s") == {}
    assert os.listdir(reopened.store.live_dir) == []
    reopened.close()


def test_hostile_stream_names_stay_inside(root: Path) -> None:
    listeners = create_listeners({"streams": ["../up", "A/b", "a/b"], "dir": str(root)})
    for lst in listeners:
        lst.update(_batch({"k": lst.name.encode()}, resync=True))
    assert sorted(os.listdir(root)) == sorted(key_to_filename(n) for n in ["../up", "A/b", "a/b"])
    for lst in listeners:
        assert read_stream(root, lst.name) == {"k": lst.name.encode()}
        lst.close()


@given(st.text())
def test_names_round_trip_and_use_a_safe_alphabet(key: str) -> None:
    name = key_to_filename(key)
    assert name not in ("", ".", "..") and not name.startswith(".")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-%~")
    assert len(name) <= MAX_NAME
    if name.startswith("~"):
        assert filename_to_key(name) is None  # the key lives in a sidecar
    else:
        assert filename_to_key(name) == key


@pytest.mark.parametrize("name", ["A", "%2", "%zz", "%61", "%2E", "x%2e", ".x", "~x", "a/b", "é"])
def test_names_this_plugin_never_writes_are_not_decoded(name: str) -> None:
    assert filename_to_key(name) is None


def test_unchanged_values_are_linked_not_rewritten(root: Path) -> None:
    lst = _one(root)
    lst.update(_batch({"a": b"1", "b": b"2"}, resync=True))
    inode_a = os.stat(lst.store.live_dir / "a").st_ino
    target = os.readlink(stream_path(root, "s") / "current")
    lst.update(_batch({"a": b"1", "b": b"2"}, resync=True))  # identical snapshot: no-op
    assert os.readlink(stream_path(root, "s") / "current") == target
    lst.update(_batch({"a": b"1", "b": b"3"}, resync=True))
    assert os.readlink(stream_path(root, "s") / "current") != target
    assert os.stat(lst.store.live_dir / "a").st_ino == inode_a
    assert sorted(os.listdir(stream_path(root, "s"))) == [".lock", "current", "g-2"]
    lst.close()


def test_a_failed_batch_leaves_the_old_state_and_the_next_one_succeeds(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lst = _one(root)
    lst.update(_batch({"a": b"1", "b": b"2"}, resync=True))
    before = _digest(lst)
    real_fsync = os.fsync
    calls = 0

    def failing_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        lst.update(_batch({"a": b"x", "c": b"3"}))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert read_stream(root, "s") == {"a": b"1", "b": b"2"}
    assert _digest(lst) == before
    assert sorted(os.listdir(stream_path(root, "s"))) == [".lock", "current", "g-1"]
    assert lst.update(_batch({"a": b"x", "c": b"3"})) is True
    assert read_stream(root, "s") == {"a": b"x", "b": b"2", "c": b"3"}
    lst.close()


def test_leftovers_of_an_interrupted_batch_are_removed_at_open(root: Path) -> None:
    lst = _one(root)
    lst.update(_batch({"a": b"1"}, resync=True))
    lst.close()
    base = stream_path(root, "s")
    (base / "g-7").mkdir()
    (base / "g-7" / "a").write_bytes(b"half-written")
    os.symlink("g-7", base / ".current.tmp")
    reopened = _one(root)
    reopened.get_extra_args()  # opens the store
    assert sorted(os.listdir(base)) == [".lock", "current", "g-1"]
    assert read_stream(root, "s") == {"a": b"1"}
    reopened.close()


def test_one_writer_per_stream_directory(root: Path) -> None:
    lst = _one(root)
    lst.get_extra_args()
    with pytest.raises(StoreLockedError, match="already written"):
        FileStore(root, "s")
    second = _one(root)
    with pytest.raises(StoreLockedError):  # reported by the supervisor, retried later
        second.get_extra_args()
    lst.close()
    assert _digest(second) == EMPTY_DIGEST  # the lock went with close(): the retry works
    second.close()


def test_dir_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="'dir'"):
        create_listeners({"streams": ["s"], "dir": str(tmp_path / "f")})


def test_update_after_close_raises(root: Path) -> None:
    lst = _one(root)
    lst.close()
    with pytest.raises(RuntimeError, match="closed"):
        lst.update(_batch({"a": b"1"}))


def test_report_error_keeps_streaming_and_leaves_logging_to_the_host(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lst = _one(root)
    with caplog.at_level(logging.DEBUG):
        assert lst.report_error(EOFError("gone\nforged")) is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]  # the host logs it once
    assert (
        "EOFError" in caplog.text and "stream=s" in caplog.text and "gone\\nforged" in caplog.text
    )
    lst.close()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"dir": "/tmp/x"}, "streams"),
        ({"streams": [], "dir": "/tmp/x"}, "streams"),
        ({"streams": "abc", "dir": "/tmp/x"}, "streams"),
        ({"streams": ["a", "a"], "dir": "/tmp/x"}, "streams"),
        ({"streams": ["a", ""], "dir": "/tmp/x"}, "streams"),
        ({"streams": ["a"]}, "dir"),
        ({"streams": ["a"], "dir": ""}, "dir"),
        ({"streams": ["a"], "dir": 5}, "dir"),
        ({"streams": ["a"], "dir": "/tmp/x", "fsync": "yes"}, "fsync"),
        ({"streams": ["a"], "dir": "/tmp/x", "directory": "/y"}, "directory"),
    ],
)
def test_bad_config_names_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}'"):
        create_listeners(table)


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_old_or_new_state(root: Path) -> None:
    base = stream_path(root, "crash")

    def only_the_live_generation_is_left(held: dict[str, bytes]) -> None:
        assert sorted(os.listdir(base)) == [".lock", "current", os.readlink(base / "current")]

    report = sinktest.check_crash_consistency(
        "streamer_files:create_listeners",
        {"streams": ["crash"], "dir": str(root)},
        lambda: read_stream(root, "crash"),
        # Hashed (long) and escaped ("/") names, so the sidecar path is exercised too.
        states=sinktest.CrashStates(n=400, key_format="K/{i:04d}", long_every=7, value_repeat=3),
        check_reopened=only_the_live_generation_is_left,  # recovery removed the leftovers
        max_delay=0.4,
        seed=1234,
    )
    assert report.outcomes
