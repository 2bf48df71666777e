"""Shared helpers for the benchmark scripts: alternating rounds, the result table, the server
process, RSS, no-op listeners, the command line. Standard library only (plus grpc where a helper
says so)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
SERVER_SCRIPT = HERE / "push_server.py"

T = TypeVar("T")


@dataclass
class Row:
    """One line of the results table."""

    id: str
    metric: str
    baseline: str
    project: str
    ratio: str  # "ratio (target)" or "value vs target"
    status: str  # "pass", "miss" or "info"
    note: str = ""


def fmt(x: float, digits: int = 3) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def in_turn(rounds: int, variants: Sequence[T]) -> Iterator[T]:
    """Every variant once per round, in order (baseline, project, baseline, ...).

    The order flips on odd rounds so neither side always runs "warm" after the other.
    """
    for r in range(rounds):
        yield from (variants if r % 2 == 0 else reversed(variants))


def alternate(
    rounds: int, variants: Sequence[tuple[str, Callable[[], float]]]
) -> dict[str, list[float]]:
    """Run every variant once per round (see ``in_turn``); each one's results, by name."""
    out: dict[str, list[float]] = {name: [] for name, _ in variants}
    for name, fn in in_turn(rounds, variants):
        out[name].append(fn())
    return out


def ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Per-round ratios (each round's two runs are neighbours in time, so they drift together)."""
    return [a / b for a, b in zip(num, den, strict=False) if b]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib() -> int:
    """This process's resident set size (VmRSS) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds() -> float:
    """CPU time of this process, every thread (nanosecond resolution; os.times() ticks in
    10 ms, too coarse for a run of a few hundred batches)."""
    return time.process_time()


# -- listeners ---------------------------------------------------------------------------------


class Idle:
    """A listener that takes every batch and does nothing; subclasses override ``update``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get_extra_args(self) -> None:
        return None

    def update(self, batch: Any) -> bool:
        return True

    def report_error(self, err: BaseException) -> None:
        return None


class AsyncIdle(Idle):
    async def update(self, batch: Any) -> bool:  # type: ignore[override]
        return True


# -- the server process ------------------------------------------------------------------------


class ServerProcess:
    """``push_server.py`` in its own process (its CPU never shares the client's GIL)."""

    def __init__(self, port: int | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self._extra = extra
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), *self._extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line.startswith("ready") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"push_server did not start: {line!r}")
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes the way a crashed cloud does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_child(
    args: Sequence[str], timeout: float = 120.0, env: dict[str, str] | None = None
) -> Any:
    """Run a Python child that prints one JSON document on its last stdout line."""
    proc = subprocess.run(
        [PYTHON, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- command line and output -------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="CI-friendly smoke version (fewer rounds)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (for run_all.py)")
    return p


HEADER = ("id", "metric", "baseline", "project", "ratio / target", "result")


def table(rows: Sequence[Row]) -> str:
    cells = [HEADER] + [(r.id, r.metric, r.baseline, r.project, r.ratio, r.status) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [f"- {r.id}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def emit(rows: Sequence[Row], as_json: bool) -> None:
    if as_json:
        print(json.dumps([asdict(r) for r in rows]))
    else:
        print(table(rows))


def bench_main(
    p: argparse.ArgumentParser,
    argv: list[str] | None,
    run: Callable[[argparse.Namespace], Sequence[Row] | Coroutine[Any, Any, Sequence[Row]]],
) -> int:
    """Parse ``argv`` with ``p`` (from ``parser``), run the benchmark (in a fresh event loop when
    ``run`` returns a coroutine) and print its rows."""
    args = p.parse_args(argv)
    result = run(args)
    rows = asyncio.run(result) if isinstance(result, Coroutine) else result
    emit(rows, args.json)
    return 0


def verdict(ok: bool) -> str:
    return "pass" if ok else "miss"
