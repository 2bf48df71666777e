"""Fixtures shared by several test modules."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import make_sink_site


@pytest.fixture
def sink_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site dir holding the ``reliability-sink`` distribution (entry point ``sink``), on
    sys.path for the test."""
    path = make_sink_site(tmp_path / "site", ["sink"])
    monkeypatch.syspath_prepend(str(path))
    yield path
    sys.modules.pop("reliability_sink", None)
