"""The resync benchmark: sync-only-what-changed against rewrite-everything, same data.

``benchmark_resync()`` is what a benchmark runner calls (``python -m streamer_sqlite`` prints one
run); the two timed operations are :meth:`SqliteMirror.sync_snapshot` and the baseline
:meth:`SqliteMirror.rewrite_snapshot`.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from streamer_sqlite._mirror import SqliteMirror

__all__ = ["ResyncBenchmark", "benchmark_resync", "make_snapshots"]


@dataclass(frozen=True, slots=True)
class ResyncBenchmark:
    n_keys: int
    changed: int
    sync_seconds: float
    """Best time of :meth:`SqliteMirror.sync_snapshot` from the old to the new snapshot."""
    rewrite_seconds: float
    """Best time of :meth:`SqliteMirror.rewrite_snapshot` of the new snapshot (baseline)."""
    sync_rows_changed: int
    rewrite_rows_changed: int

    @property
    def speedup(self) -> float:
        return self.rewrite_seconds / self.sync_seconds


def make_snapshots(
    n_keys: int = 20_000, changed_fraction: float = 0.01, value_size: int = 200, seed: int = 0
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """An old snapshot and a new one in which ``changed_fraction`` of the values differ."""
    rng = random.Random(seed)
    old = {f"IMSI{i:015d}": rng.randbytes(value_size) for i in range(n_keys)}
    new = dict(old)
    for key in rng.sample(sorted(old), round(n_keys * changed_fraction)):
        new[key] = rng.randbytes(value_size)
    return old, new


def benchmark_resync(
    n_keys: int = 20_000,
    changed_fraction: float = 0.01,
    value_size: int = 200,
    repeat: int = 5,
    directory: str | os.PathLike[str] | None = None,
    synchronous: str = "NORMAL",
) -> ResyncBenchmark:
    """Time a full resync of ``n_keys`` keys of which ``changed_fraction`` changed, both ways.

    Each round first resets the table to the old snapshot, then times one resync to the new
    one; the best of ``repeat`` rounds is kept for each way.
    """
    old, new = make_snapshots(n_keys, changed_fraction, value_size)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        mirror = SqliteMirror(Path(tmp) / "bench.db", "bench", synchronous=synchronous)
        try:
            sync_best = rewrite_best = float("inf")
            sync_rows = rewrite_rows = 0
            for _ in range(repeat):
                mirror.rewrite_snapshot(old)
                mirror.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                start = time.perf_counter()
                sync_rows = mirror.sync_snapshot(new).rows_changed
                sync_best = min(sync_best, time.perf_counter() - start)

                mirror.rewrite_snapshot(old)
                mirror.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                start = time.perf_counter()
                rewrite_rows = mirror.rewrite_snapshot(new).rows_changed
                rewrite_best = min(rewrite_best, time.perf_counter() - start)
        finally:
            mirror.close()
    changed = sum(1 for k in new if old.get(k) != new[k])
    return ResyncBenchmark(n_keys, changed, sync_best, rewrite_best, sync_rows, rewrite_rows)
