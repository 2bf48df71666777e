"""B13: streamer-files at subscriber scale: what one batch costs as the stream grows.

For 1,000 and 20,000 keys (values of 200 B, IMSI-like keys), with ``fsync`` off and on, the
plugin's store (``streamer_files.FileStore``: one journal record per batch, changed files
replaced in place) and the baseline, the store as it was before issue 17
(``benchmarks/_files_store_v1.py``: one hard-linked generation directory per batch), each:

- **snapshot**: the first full snapshot into an empty directory;
- **1 % resync**: a full snapshot in which 1 % of the values changed;
- **one-key batch**: an incremental batch that changes one key (median of several).

The two designs alternate round by round in the same run, on the same file system (``--dir``,
default: the temp dir). A third column times what the changed files alone cost: writing them
(and fsyncing each when ``fsync`` is on), which is the floor for any design that keeps one file
per key; the ``fsync = true`` one-key target is within 2x of it.

    .venv/bin/python benchmarks/bench_files.py [--quick] [--dir /dev/shm] [--sizes 1000,20000]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Row, bench_main, fmt, in_turn, median, parser, verdict  # noqa: E402

ONE_KEY_TARGET_MS = 5.0
SNAPSHOT_TARGET_S = 1.0
FSYNC_RATIO_TARGET = 2.0
NO_DISK_S = 50e-6  # writing + fsyncing one file faster than this means fsync reached no disk


def import_stores() -> tuple[Any, Any]:
    try:
        import streamer_files
    except ImportError:  # not pip-installed: use the source tree
        sys.path.insert(0, str(HERE.parent / "plugins" / "streamer-files" / "src"))
        import streamer_files
    import _files_store_v1

    return streamer_files.FileStore, _files_store_v1.FileStore


def snapshot(n: int, salt: str = "") -> dict[str, bytes]:
    return {f"IMSI{i:015d}": (f"{salt}{i:08d}-".encode() * 20)[:200] for i in range(n)}


def one_percent_changed(snap: dict[str, bytes]) -> dict[str, bytes]:
    out = dict(snap)
    for i, key in enumerate(snap):
        if i % 100 == 0:
            out[key] = b"changed-" + snap[key][8:]
    return out


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def changed_files_only(base: str, values: list[bytes], fsync: bool) -> float:
    """The floor: write just the changed values, one file each (and fsync each)."""
    d = tempfile.mkdtemp(dir=base, prefix="b13-floor-")
    t0 = time.perf_counter()
    for i, value in enumerate(values):
        fd = os.open(f"{d}/k{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, value)
        if fsync:
            os.fsync(fd)
        os.close(fd)
    elapsed = time.perf_counter() - t0
    for i in range(len(values)):
        os.unlink(f"{d}/k{i}")
    os.rmdir(d)
    return elapsed


def measure(store_cls: Any, base: str, n: int, fsync: bool, one_key: int) -> dict[str, float]:
    """One round for one design: a fresh directory, snapshot, 1 % resync, one-key batches."""
    first = snapshot(n)
    second = one_percent_changed(first)
    with tempfile.TemporaryDirectory(dir=base, prefix="b13-") as tmp:
        store = store_cls(tmp, "subscriberdb", fsync=fsync)
        try:
            snap_s = timed(lambda: store.apply(True, first))
            resync_s = timed(lambda: store.apply(True, second))
            keys = list(first)
            one = []
            for i in range(one_key):
                change = {keys[i * 7 % n]: b"one-key %d" % i}
                t0 = time.perf_counter()
                store.apply(False, change)
                one.append(time.perf_counter() - t0)
        finally:
            store.close()
    return {"snapshot": snap_s, "resync": resync_s, "one": median(one)}


def run(quick: bool, base: str, sizes: list[int]) -> list[Row]:
    try:
        new_store, old_store = import_stores()
    except ImportError as exc:
        return [Row("B13", "files sink", "—", "n/a", "—", "n/a", repr(exc))]
    rows: list[Row] = []
    for fsync in (False, True):
        for n in sizes:
            big = n >= 10_000
            rounds = 1 if quick or (fsync and big) else 2
            one_key = 5 if quick else 15
            got: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
            variants = [("old", old_store), ("new", new_store)]
            for name, cls in in_turn(rounds, variants):
                # The old design's one-key batch re-links every file: fewer samples at scale.
                reps = max(3, one_key // 3) if name == "old" and big else one_key
                got[name].append(measure(cls, base, n, fsync, reps))
            floor_one = median(
                [changed_files_only(base, [b"x" * 200], fsync) for _ in range(one_key)]
            )
            floor_resync = changed_files_only(base, [b"x" * 200] * max(1, n // 100), fsync)

            def med(name: str, what: str, got: dict[str, list[dict[str, float]]] = got) -> float:
                return median([r[what] for r in got[name]])

            label = f"{n:,} keys, fsync={'on' if fsync else 'off'}"
            old_s, new_s = med("old", "snapshot"), med("new", "snapshot")
            target = f"<= {SNAPSHOT_TARGET_S:g} s" if big and not fsync else "info"
            ok = new_s <= SNAPSHOT_TARGET_S if big and not fsync else None
            rows.append(
                Row(
                    "B13",
                    f"{label}: first snapshot, s",
                    fmt(old_s),
                    fmt(new_s),
                    f"speedup {old_s / new_s:.1f}x; {target}",
                    "info" if ok is None else verdict(ok),
                )
            )
            old_r, new_r = med("old", "resync"), med("new", "resync")
            rows.append(
                Row(
                    "B13",
                    f"{label}: 1% resync, ms",
                    fmt(1000 * old_r),
                    fmt(1000 * new_r),
                    f"speedup {old_r / new_r:.1f}x; changed files alone {fmt(1000 * floor_resync)}",
                    "info",
                )
            )
            old_o, new_o = med("old", "one"), med("new", "one")
            if fsync:
                ratio = new_o / floor_one
                ratio_s = f"{ratio:.2f}x the changed file alone ({fmt(1000 * floor_one)})"
                if floor_one < NO_DISK_S:  # an fsync this cheap reaches no disk (tmpfs)
                    ratio_s += "; fsync is a no-op here"
                    status = "info"
                else:
                    status = verdict(ratio <= FSYNC_RATIO_TARGET) if big else "info"
                    ratio_s += f"; <= {FSYNC_RATIO_TARGET:g}x" if big else ""
            else:
                ratio_s = f"speedup {old_o / new_o:.0f}x" + (
                    f"; <= {ONE_KEY_TARGET_MS:g} ms" if big else ""
                )
                status = verdict(1000 * new_o <= ONE_KEY_TARGET_MS) if big else "info"
            rows.append(
                Row(
                    "B13",
                    f"{label}: one-key batch, ms (median)",
                    fmt(1000 * old_o),
                    fmt(1000 * new_o),
                    ratio_s,
                    status,
                    (
                        f"{label}: {rounds} round(s) alternating; baseline = one hard-linked "
                        f"generation per batch (benchmarks/_files_store_v1.py); dir {base}"
                    ),
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="file system to measure on")
    p.add_argument("--sizes", default="", help="comma-separated key counts (default 1000,20000)")

    def go(args: Any) -> list[Row]:
        sizes = [int(s) for s in args.sizes.split(",") if s] or (
            [1000, 5000] if args.quick else [1000, 20_000]
        )
        return run(args.quick, args.dir, sizes)

    return bench_main(p, argv, go)


if __name__ == "__main__":
    sys.exit(main())
