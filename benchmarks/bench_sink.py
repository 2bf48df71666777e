"""B9: sink apply cost: streamer-sqlite resync of 20k keys where 1 % changed vs rewriting all.

Uses the plugin's own functions (plugins/streamer-sqlite): ``SqliteMirror.sync_snapshot`` (writes
only the rows that differ) against its rewrite-all baseline ``SqliteMirror.rewrite_snapshot``
(DELETE every row, INSERT every row, one transaction: what Magma's gateways do). A second row
times the whole ``SqliteListener.update()`` with a resync ``DataUpdateBatch`` against a naive
DELETE-all + INSERT-all of the same batch in one transaction, written here. Before each timed
run the table is reset to the old snapshot and the WAL checkpointed; the two ways alternate and
the per-round ratio's median is reported.

    .venv/bin/python benchmarks/bench_sink.py [--quick] [--keys 20000]
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Row, bench_main, fmt, in_turn, median, parser, ratios, verdict  # noqa: E402

TARGET = 10.0
CHANGED = 0.01


def import_plugin():  # type: ignore[no-untyped-def]
    try:
        import streamer_sqlite
    except ImportError:  # not pip-installed: use the source tree
        sys.path.insert(0, str(HERE.parent / "plugins" / "streamer-sqlite" / "src"))
        import streamer_sqlite
    return streamer_sqlite


def naive_rewrite(conn: sqlite3.Connection, table: str, batch) -> None:  # type: ignore[no-untyped-def]
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"DELETE FROM {table}")
    conn.executemany(
        f"INSERT INTO {table} (key, value) VALUES (?, ?)",
        ((u.key, u.value) for u in batch.updates),
    )
    conn.execute("COMMIT")


def run(quick: bool, keys: int) -> list[Row]:
    try:
        plugin = import_plugin()
        SqliteMirror = plugin.SqliteMirror
        make_snapshots = plugin.make_snapshots
    except (ImportError, AttributeError) as exc:
        return [Row("B9", "sqlite resync", "—", "n/a", f">= {TARGET:g}x", "n/a", repr(exc))]
    from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch

    rounds = 3 if quick else 7
    old, new = make_snapshots(keys, CHANGED)
    batch = DataUpdateBatch(
        updates=[DataUpdate(key=k, value=v) for k, v in new.items()], resync=True
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="streamer-b9-") as tmp:
        mirror = SqliteMirror(Path(tmp) / "mirror.db", "bench")

        def reset() -> None:
            mirror.rewrite_snapshot(old)
            mirror.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        def timed(fn) -> float:  # type: ignore[no-untyped-def]
            reset()
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        sync_s: list[float] = []
        rewrite_s: list[float] = []
        pair = [
            (sync_s, lambda: mirror.sync_snapshot(new)),
            (rewrite_s, lambda: mirror.rewrite_snapshot(new)),
        ]
        for out, fn in in_turn(rounds, pair):
            out.append(timed(fn))
        assert mirror.read() == new
        ratio = median(ratios(rewrite_s, sync_s))
        rows.append(
            Row(
                "B9",
                f"SqliteMirror resync, {keys:,} keys, {CHANGED:.0%} changed: ms",
                f"{fmt(1000 * median(rewrite_s))} (rewrite_snapshot)",
                f"{fmt(1000 * median(sync_s))} (sync_snapshot)",
                f"{ratio:.1f}x (>= {TARGET:g}x)",
                verdict(ratio >= TARGET),
                f"mirror: {rounds} rounds; rows written {keys * CHANGED:.0f} vs {keys:,} (plus "
                f"{keys:,} deleted) by the baseline",
            )
        )
        mirror.close()

        # The listener end to end (batch -> dict -> diff -> transaction) vs a naive rewrite.
        listener = plugin.SqliteListener(Path(tmp) / "listener.db", "bench")
        lm = listener.mirror
        conn = lm.connection
        table = 'main."' + plugin.table_name("bench") + '"'

        def lreset() -> None:
            lm.rewrite_snapshot(old)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        upd_s: list[float] = []
        naive_s: list[float] = []
        pair = [
            (upd_s, lambda: listener.update(batch)),
            (naive_s, lambda: naive_rewrite(conn, table, batch)),
        ]
        for out, fn in in_turn(rounds, pair):
            lreset()
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        listener.close()
        ratio = median(ratios(naive_s, upd_s))
        rows.append(
            Row(
                "B9",
                f"SqliteListener.update(resync batch), {keys:,} keys: ms",
                f"{fmt(1000 * median(naive_s))} (naive DELETE+INSERT)",
                fmt(1000 * median(upd_s)),
                f"{ratio:.1f}x (target is for the apply step)",
                "info",
                "listener: end to end, including reading 20k DataUpdate messages out of the "
                "batch (~8 ms with upb, paid by the baseline too)",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--keys", type=int, default=20_000)
    return bench_main(p, argv, lambda args: run(args.quick, args.keys))


if __name__ == "__main__":
    sys.exit(main())
