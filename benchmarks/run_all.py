"""Run every benchmark (B1-B12, B13, B13-RSS) and print one table.

Each benchmark is its own script (run here in a fresh subprocess, so one benchmark's threads,
channels and memory never leak into the next) and can be run alone; see docs/benchmarks.md.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only B1,B5,...] [--strict]

Exit status: 0 when every benchmark ran (missed targets are reported, not failed; with
``--strict`` a miss exits 1), 2 when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import PYTHON, Row, table  # noqa: E402

# id -> (script, extra arguments)
SCRIPTS: dict[str, tuple[str, list[str]]] = {
    "B1": ("bench_throughput.py", ["--only", "B1"]),
    "B2": ("bench_throughput.py", ["--only", "B2"]),
    "B3": ("bench_streams.py", []),
    "B4": ("bench_latency.py", []),
    "B5": ("bench_remove.py", []),
    "B6": ("bench_reconnect.py", []),
    "B7": ("bench_time_to_data.py", []),
    "B8": ("bench_cold_start.py", []),
    "B9": ("bench_sink.py", []),
    "B10": ("bench_fleet.py", ["--only", "B10"]),
    "B11": ("bench_fleet.py", ["--only", "B11"]),
    "B12": ("bench_fleet.py", ["--only", "B12"]),
    "B13": ("bench_files.py", []),
    "B13-RSS": ("bench_files_rss.py", []),
}
# Scripts that need more than the default 300 s (seconds, full run).
TIMEOUTS = {"B13": 1200, "B13-RSS": 900}


def run_one(bid: str, quick: bool) -> tuple[list[Row], str | None]:
    script, extra = SCRIPTS[bid]
    argv = [PYTHON, str(HERE / script), "--json", *extra, *(["--quick"] if quick else [])]
    timeout = TIMEOUTS.get(bid, 300)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        return [], f"{bid}: {script} exited {proc.returncode}\n{proc.stderr[-2000:]}"
    try:
        rows = [Row(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]
    except (ValueError, IndexError, TypeError) as exc:
        return [], f"{bid}: {script} printed no result rows ({exc})\n{proc.stdout[-2000:]}"
    return rows, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI-friendly smoke versions")
    p.add_argument(
        "--only", default=",".join(SCRIPTS), help="comma-separated ids (B1..B12, B13, B13-RSS)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    ids = [i.strip().upper() for i in args.only.split(",") if i.strip()]
    unknown = [i for i in ids if i not in SCRIPTS]
    if unknown:
        p.error(f"unknown benchmark id(s): {', '.join(unknown)}")
    rows: list[Row] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    for bid in ids:
        t = time.perf_counter()
        got, err = run_one(bid, args.quick)
        rows += got
        if err:
            errors.append(err)
        print(f"{bid} done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    mode = "quick" if args.quick else "full"
    print(
        f"streamer benchmarks ({mode}), {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, total "
        f"{time.perf_counter() - t0:.0f} s\n"
    )
    print(table(rows))
    for err in errors:
        print(f"\nERROR {err}", file=sys.stderr)
    if errors:
        return 2
    if args.strict and any(r.status == "miss" for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
