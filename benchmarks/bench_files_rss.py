"""B13-RSS: streamer-files' memory over 100,000 one-key batches, on every installed Python.

Issue 19: the store used to build a new ``g-N`` path with pathlib for every batch, and CPython
3.12 interns path parts and never frees them (~80 bytes a batch, forever). This applies
100,000 one-key batches to a 10-key stream with ``fsync = false`` in a fresh interpreter per
Python version and design, and prints how much the process's RSS grew after a 2,000-batch
warm-up. Baseline: the store before issue 17 (``benchmarks/_files_store_v1.py``), same run.

Interpreters: ``/root/.pyenv/versions/3.1[0-3].*/bin/python`` (or ``--pythons``), run against
the source tree (core/ and plugins/streamer-files/src on PYTHONPATH: the store needs neither
gRPC nor protobuf). Files go to ``--dir`` (default /dev/shm when it exists: RSS does not
depend on the disk, and a virtual disk would make the run take minutes).

    .venv/bin/python benchmarks/bench_files_rss.py [--quick] [--batches 100000]
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import Row, bench_main, fmt, parser, rss_kib, verdict  # noqa: E402

TARGET_KIB = 1024  # per 100,000 batches: flat, within allocator noise
WARMUP = 2000
DEFAULT_PYTHONS = "/root/.pyenv/versions/3.1[0-3].*/bin/python"


def child(design: str, batches: int, base: str) -> dict[str, Any]:
    store_cls: Any
    if design == "new":
        from streamer_files import FileStore as store_cls
    else:
        from _files_store_v1 import FileStore as store_cls
    with tempfile.TemporaryDirectory(dir=base, prefix="b13rss-") as tmp:
        store = store_cls(tmp, "s", fsync=False)
        store.apply(True, {f"k{i}": b"v" * 200 for i in range(10)})
        for i in range(min(WARMUP, batches)):
            store.apply(False, {f"k{i % 10}": b"w%d" % i})
        gc.collect()
        start = rss_kib()
        for i in range(batches):
            store.apply(False, {f"k{i % 10}": b"x%d" % i})
        gc.collect()
        end = rss_kib()
        store.close()
    return {"version": sys.version.split()[0], "start": start, "end": end}


def run_child(python: str, design: str, batches: int, base: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "core"), str(ROOT / "plugins" / "streamer-files" / "src"), str(HERE)]
    )
    proc = subprocess.run(
        [python, __file__, "--child", design, "--batches", str(batches), "--dir", base],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{python} {design}: exited {proc.returncode}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(quick: bool, batches: int, pythons: list[str], base: str, baseline: bool) -> list[Row]:
    if quick:
        batches = min(batches, 10_000)
    rows = []
    for python in pythons:
        new = run_child(python, "new", batches, base)
        old = run_child(python, "old", batches, base) if baseline else None
        grown = new["end"] - new["start"]
        per_100k = grown * 100_000 / batches
        old_s = "—" if old is None else f"{old['end'] - old['start']:,} KiB"
        rows.append(
            Row(
                "B13-RSS",
                f"Python {new['version']}: RSS growth over {batches:,} one-key batches",
                old_s,
                f"{grown:,} KiB",
                f"{fmt(per_100k)} KiB per 100k (<= {TARGET_KIB} KiB)",
                verdict(per_100k <= TARGET_KIB),
                f"{python}: RSS {new['start']:,} -> {new['end']:,} KiB after a "
                f"{min(WARMUP, batches):,}-batch "
                f"warm-up; files in {base}",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--batches", type=int, default=100_000)
    p.add_argument("--pythons", default=DEFAULT_PYTHONS, help="glob of interpreters")
    p.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    p.add_argument("--no-baseline", action="store_true", help="skip the old store")
    p.add_argument("--child", choices=["new", "old"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    base = args.dir or tempfile.gettempdir()
    if args.child:
        print(json.dumps(child(args.child, args.batches, base)))
        return 0
    pythons = sorted(glob.glob(args.pythons)) or [sys.executable]
    return bench_main(p, argv, lambda a: run(a.quick, a.batches, pythons, base, not a.no_baseline))


if __name__ == "__main__":
    sys.exit(main())
