"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import make_sink_site
from tests.listeners import listener_path  # noqa: F401 - a fixture for every test module
from tests.pg import PgCluster, find_pg_bindir


@pytest.fixture
def sink_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site dir holding the ``reliability-sink`` distribution (entry point ``sink``), on
    sys.path for the test."""
    path = make_sink_site(tmp_path / "site", ["sink"])
    monkeypatch.syspath_prepend(str(path))
    yield path
    sys.modules.pop("reliability_sink", None)


def _pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster, removed afterwards (skipped without PostgreSQL's
    binaries, unless STREAMER_REQUIRE_POSTGRES=1, as in CI)."""
    bindir = find_pg_bindir()
    if bindir is None:
        if os.environ.get("STREAMER_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL (initdb, pg_ctl) not found and STREAMER_REQUIRE_POSTGRES=1")
        pytest.skip("PostgreSQL (initdb, pg_ctl) not installed")
    cluster = PgCluster(bindir)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL cluster: each test takes a database in it (``pg_dsn``)."""
    yield from _pg_cluster()


@pytest.fixture
def own_pg_cluster() -> Iterator[PgCluster]:
    """A cluster of the test's own, for tests that stop or restart PostgreSQL."""
    yield from _pg_cluster()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> str:
    """A fresh, empty database in the session's cluster."""
    return pg_cluster.new_database()
