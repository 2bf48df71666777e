"""``python -m streamer_sqlite``: run the resync benchmark once and print the result."""

from __future__ import annotations

from streamer_sqlite._bench import benchmark_resync


def main() -> None:
    r = benchmark_resync()
    print(
        f"{r.n_keys} keys, {r.changed} changed: sync {r.sync_seconds * 1e3:.1f} ms "
        f"({r.sync_rows_changed} rows), rewrite-all {r.rewrite_seconds * 1e3:.1f} ms "
        f"({r.rewrite_rows_changed} rows), speedup x{r.speedup:.1f}"
    )


if __name__ == "__main__":
    main()
