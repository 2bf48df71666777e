"""Smoke test for benchmarks/: the quick versions run and print the results table.

Timing targets are never asserted here (wall-clock limits make flaky tests on shared machines);
the benchmarks themselves report pass/miss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_run_all_quick_subset_prints_a_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--only", "B5,B8"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| id "))
    assert "baseline" in header and "project" in header and "result" in header
    ids = {line.split("|")[1].strip() for line in lines if line.startswith("| B")}
    assert ids == {"B5", "B8"}
    results = {line.split("|")[-2].strip() for line in lines if line.startswith("| B")}
    assert results <= {"pass", "miss", "info", "n/a"}


@pytest.mark.slow
def test_files_benchmarks_run_both_designs(tmp_path: Path) -> None:
    """B13 and B13-RSS (issue 17/19) run the plugin's store and the old one, tiny sizes
    (on tmpfs when there is one: a virtual disk's file creations would dominate)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm) as tmp:
            _run_files_benchmarks(Path(tmp))
    else:
        _run_files_benchmarks(tmp_path)


def _run_files_benchmarks(tmp_path: Path) -> None:
    def rows(*args: str) -> list[dict[str, str]]:
        proc = subprocess.run(
            [sys.executable, *args, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    b13 = rows(
        str(ROOT / "benchmarks" / "bench_files.py"),
        "--quick",
        "--sizes",
        "300",
        "--dir",
        str(tmp_path),
    )
    assert [r["id"] for r in b13] == ["B13"] * 6  # snapshot, resync, one key x fsync off/on
    for r in b13:
        float(r["baseline"].replace(",", "")), float(r["project"].replace(",", ""))
    rss = rows(
        str(ROOT / "benchmarks" / "bench_files_rss.py"),
        "--batches",
        "300",
        "--pythons",
        sys.executable,
        "--dir",
        str(tmp_path),
    )
    assert len(rss) == 1 and rss[0]["id"] == "B13-RSS" and rss[0]["baseline"].endswith("KiB")
    assert os.listdir(tmp_path) == []  # both cleaned up after themselves
