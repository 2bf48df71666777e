"""The directory source never serves what lies outside its data directory, and builds its
per-write temp names without pathlib (issue 19). Real files and symlinks in temp dirs."""

from __future__ import annotations

import logging
import os
import pathlib
import sys
from pathlib import Path
from typing import Any

import pytest

from streamer.server.sources import DirectorySource, UnknownStreamError, write_key


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    outside = tmp_path / "elsewhere"
    (root / "subs").mkdir(parents=True)
    outside.mkdir()
    (outside / "shadow").write_bytes(b"root:x:0:0")
    (outside / "stream").mkdir()
    (outside / "stream" / "k").write_bytes(b"not yours")
    write_key(root, "subs", "imsi1", b"one")
    return root, outside


async def test_symlinked_key_file_outside_is_skipped_with_one_warning(
    layout: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    root, outside = layout
    os.symlink(outside / "shadow", root / "subs" / "passwd")
    source = DirectorySource(root)
    caplog.set_level(logging.WARNING, "streamer.server.reference")
    for _ in range(3):
        snap = await source.snapshot("subs")
        assert dict(snap.items) == {"imsi1": b"one"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(root / "subs" / "passwd") in warnings[0] and "outside" in warnings[0]


async def test_symlinked_stream_dir_outside_is_not_served(
    layout: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    root, outside = layout
    os.symlink(outside / "stream", root / "stolen")
    source = DirectorySource(root)
    caplog.set_level(logging.WARNING, "streamer.server.reference")
    await source.snapshot("subs")
    await source.snapshot("subs")
    assert source.streams() == ["subs"]
    with pytest.raises(UnknownStreamError):
        await source.snapshot("stolen")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(root / "stolen") in warnings[0], warnings


async def test_symlinks_that_stay_inside_are_followed(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    write_key(root, "other", "k", b"v")
    os.symlink(root / "other", root / "alias")
    os.symlink(root / "subs" / "imsi1", root / "other" / "linked")
    source = DirectorySource(root)
    assert dict((await source.snapshot("alias")).items) == {"k": b"v", "linked": b"one"}


async def test_link_retargeted_outside_drops_the_served_value(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    (root / "subs" / "inner").write_bytes(b"inner")
    link = root / "subs" / "alias"
    os.symlink(root / "subs" / "inner", link)
    source = DirectorySource(root)
    assert dict((await source.snapshot("subs")).items)["alias"] == b"inner"
    link.unlink()
    os.symlink(outside / "shadow", link)
    assert "alias" not in dict((await source.snapshot("subs")).items)


def test_write_key_builds_temp_names_without_pathlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pathlib interns every part it parses (3.10-3.12); on 3.12 interned strings are never
    freed, so a Path per unique temp name is a leak. Spy on pathlib's sys.intern."""
    interned: list[str] = []

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(sys, name)

        @staticmethod
        def intern(text: str) -> str:
            interned.append(text)
            return sys.intern(text)

    monkeypatch.setattr(pathlib, "sys", Spy(), raising=False)
    for i in range(5):
        write_key(tmp_path, "s", f"k{i}", b"v")
    assert not [t for t in interned if t.startswith(".tmp-")], interned
    assert sorted(os.listdir(tmp_path / "s")) == [f"k{i}" for i in range(5)]
