"""RSS growth of the directory source's per-write temp names, per installed Python.

CPython 3.12's pathlib interns every path part it parses, and 3.12 never frees interned
strings, so building one ``pathlib.Path`` per unique temp name (what ``write_key`` did) grows
the process for good. For each interpreter found, a fresh child process measures VmRSS growth
and reports it per 100,000 names:

- baseline: ``Path(root) / f".tmp-{pid}-{tid}-{ns}"`` 300,000 times (``--quick``: 100,000),
  each turned into the string the old ``write_key`` opened (no file I/O; 3.12's pathlib parses,
  and interns, lazily);
- project: ``streamer.server.sources.write_key(root, "s", "k", value)`` 20,000 times (``--quick``:
  5,000; real files on disk, so fewer).

Needs only the standard library and ``core/`` on PYTHONPATH, so bare interpreters work.

    .venv/bin/python benchmarks/bench_tempnames.py [--quick] [--python PATH ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = [
    "/root/.pyenv/versions/3.10.13/bin/python",
    sys.executable,
    "/root/.pyenv/versions/3.12.1/bin/python",
    "/root/.pyenv/versions/3.13.0/bin/python",
]

CHILD = r"""
import gc, json, os, sys, tempfile, threading, time
from pathlib import Path
from streamer.server.sources import write_key

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

n, which = int(sys.argv[1]), sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    write_key(tmp, "s", "k", b"warm")
    for _ in range(1000):
        _ = root / f".tmp-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    gc.collect()
    before = rss_kib()
    if which == "baseline":  # what the old write_key did with each name: open it
        for _ in range(n):
            tmp_path = root / f".tmp-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
            _ = os.fspath(tmp_path), tmp_path.name
    else:
        for i in range(n):
            write_key(tmp, "s", "k", b"v%d" % i)
    gc.collect()
    print(json.dumps({"python": sys.version.split()[0], "growth_kib": rss_kib() - before}))
"""


def measure(python: str, n: int, which: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "core"))
    out = subprocess.run(
        [python, "-c", CHILD, str(n), which],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--python", action="append", help="interpreters (default: those installed)")
    args = ap.parse_args()
    nb, np_ = (100_000, 5_000) if args.quick else (300_000, 20_000)
    pythons = args.python or [p for p in dict.fromkeys(PYTHONS) if os.access(p, os.X_OK)]
    print("RSS growth per 100,000 temp names, KiB (measured over N names)\n")
    print(f"| python | baseline: a Path per name (N={nb:,}) | project: write_key (N={np_:,}) |")
    print("|---|---|---|")
    for python in pythons:
        base = measure(python, nb, "baseline")
        proj = measure(python, np_, "project")
        b = int(base["growth_kib"]) * 100_000 // nb  # type: ignore[call-overload]
        p = int(proj["growth_kib"]) * 100_000 // np_  # type: ignore[call-overload]
        print(f"| {base['python']} | {b:,} | {p:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
