"""The README's run command: `streamer run --demo` shows updates flowing and stops cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.demo import BUILTIN_DATA, load_demo_data

ROOT = Path(__file__).resolve().parent.parent


def test_demo_data_in_examples_matches_builtin_copy() -> None:
    from_dir = load_demo_data(ROOT / "examples" / "demo" / "data")
    assert from_dir == BUILTIN_DATA


@pytest.mark.slow
def test_demo_shows_updates_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "run", "--demo", "--demo-interval", "0.3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if sum("<- subscriberdb  update" in x for x in lines) >= 2:
                break
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "<- subscriberdb  snapshot   3 key(s): IMSI001010000000001" in out
    assert "<- policydb      snapshot" in out
    assert "-> cloud: add subscriber IMSI001010000000004" in out
    assert "<- subscriberdb  update     1 key(s): IMSI001010000000004" in out
    match = re.search(r"Mirrored data is in (\S+)", out)
    assert match, out
    workdir = Path(match.group(1))
    files = workdir / "files"
    assert files.is_dir() and any(files.rglob("*")), "files plugin wrote nothing"
    assert (workdir / "streamer.db").exists()
