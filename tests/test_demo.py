"""The README's run command: `streamer run --demo` shows updates flowing and stops cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.server.demo import BUILTIN_DATA, DemoPrinter, load_demo_data
from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch

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
    # Only the story on the terminal: log lines go to a private file named at exit.
    assert not re.search(r"\b(INFO|WARNING|ERROR|DEBUG)\b", out), out
    log_path = workdir / "streamer.log"
    assert f"logs (network's updates are logged by the log plugin): {log_path}" in out
    assert (log_path.stat().st_mode & 0o777) == 0o600
    assert "streamer.host.host: streaming 3 stream(s)" in log_path.read_text()


def _batch(resync: bool, **kv: str) -> DataUpdateBatch:
    return DataUpdateBatch(
        updates=[DataUpdate(key=k, value=v.encode()) for k, v in kv.items()], resync=resync
    )


def test_demo_printer_skips_snapshots_that_change_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printer = DemoPrinter()
    printer.streamer_batch_received("network", _batch(True, gateway="tac=1"))
    printer.streamer_batch_received("network", _batch(True, gateway="tac=1"))  # poll, same
    printer.streamer_batch_received("network", _batch(True, gateway="tac=2"))  # poll, changed
    printer.streamer_batch_received("network", _batch(False, gateway="tac=2"))  # an update
    printer.streamer_batch_received("other", _batch(True))  # first snapshot, even empty
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "  <- network       snapshot   1 key(s): gateway",
        "  <- network       snapshot   1 key(s): gateway",
        "  <- network       update     1 key(s): gateway",
        "  <- other         snapshot   0 key(s): -",
    ]
