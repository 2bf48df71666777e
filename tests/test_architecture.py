"""The layers contract in pyproject.toml holds, and fails when a module imports upward.

``make lint`` runs ``lint-imports`` on the tree; these tests prove the contract is not a check
that cannot fail: a copy of the package with one planted upward import (or a runtime import of
a test-only package, or a cycle) breaks it, naming the offending import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is a dev tool (Python 3.11+)")

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree / "core")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and of the contract, to plant imports in."""
    shutil.copytree(
        ROOT / "core" / "streamer",
        tmp_path / "core" / "streamer",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / "core" / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_tree_keeps_the_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        # the runtime reaching up into the CLI
        (
            "streamer.client.backoff",
            "import streamer.cli.tables",
            "streamer.client is not allowed to import streamer.cli",
        ),
        # the host reaching into the reference server
        (
            "streamer.host.config",
            "from streamer.server import sources",
            "streamer.host is not allowed to import streamer.server",
        ),
        # the wire contract reaching into the client
        (
            "streamer.wire.digest",
            "from streamer.client import supervisor",
            "streamer.wire is not allowed to import streamer.client",
        ),
        # the sink kit and the observability endpoint are independent of each other
        (
            "streamer.sink.mirror",
            "from streamer.observability import http",
            "streamer.sink is not allowed to import streamer.observability",
        ),
        # a gateway install has no pytest
        ("streamer.host.plugins", "import pytest", "streamer.host is not allowed to import pytest"),
        # a cycle inside one sub-package
        ("streamer.client.supervisor", "from streamer.client import stream", "No cycles"),
    ],
)
def test_a_planted_import_breaks_the_contract(
    tree: Path, module: str, line: str, expected: str
) -> None:
    _plant(tree, module, line)
    result = _lint(tree)
    assert result.returncode != 0
    assert expected in result.stdout, result.stdout
