"""The SQLite mirror and its -wal/-shm files are private whatever the umask (issue 19):
0600 by default, a documented ``file_mode`` to share with a group, world access refused."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamer_sqlite import create_listeners

from streamer.sink.conformance import make_batch


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o002)  # the loosest common umask: files 0664 unless the plugin says so
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _mirror(db: Path, **table: object) -> list[Path]:
    (listener,) = create_listeners({"streams": ["s"], "path": str(db), **table})
    try:
        listener.update(make_batch({"imsi1": b"secret-k"}, resync=True))
        listener.update(make_batch({"imsi2": b"secret-k2"}))
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert all(f.exists() for f in files)  # checked while open: WAL files exist
        return files
    finally:
        listener.close()


def test_database_and_wal_files_are_0600_whatever_the_umask(
    tmp_path: Path, loose_umask: None
) -> None:
    db = tmp_path / "new" / "mirror.db"
    for f in _mirror(db):
        if f.exists():
            assert _mode(f) == 0o600, (f, oct(_mode(f)))
    assert _mode(db.parent) == 0o700


def test_existing_loose_database_is_tightened(tmp_path: Path, loose_umask: None) -> None:
    db = tmp_path / "mirror.db"
    db.touch()
    os.chmod(db, 0o644)
    Path(f"{db}-wal").touch()
    os.chmod(f"{db}-wal", 0o666)
    _mirror(db)
    assert _mode(db) == 0o600
    assert not Path(f"{db}-wal").exists() or _mode(Path(f"{db}-wal")) == 0o600


def test_file_mode_shares_with_the_group_on_purpose(tmp_path: Path, loose_umask: None) -> None:
    db = tmp_path / "mirror.db"
    for f in _mirror(db, file_mode="0640"):
        if f.exists():
            assert _mode(f) == 0o640, (f, oct(_mode(f)))


@pytest.mark.parametrize("mode", ["0644", "0604", "0666", "0700", "0400", "640x", "0o640", 640])
def test_file_mode_granting_others_or_nonsense_is_refused(tmp_path: Path, mode: object) -> None:
    with pytest.raises(ValueError, match=r"^file_mode: "):
        create_listeners({"streams": ["s"], "path": str(tmp_path / "m.db"), "file_mode": mode})
