"""B8: ``streamer check`` cold start with 500 installed distributions.

Creates 500 synthetic ``*.dist-info`` directories (METADATA + entry_points.txt; five of them in
``streamer.listeners``, the rest in other groups) in a temporary directory put on PYTHONPATH,
and a config enabling the installed ``log`` plugin. Alternating rounds time, each in a fresh
interpreter:

- baseline: ``importlib_metadata.entry_points(group="streamer.listeners")`` (the floor for
  finding plugins at all);
- project: the ``streamer check --config ...`` console script, end to end.

Also asserts that ``streamer check`` and ``streamer list`` never import gRPC.

    .venv/bin/python benchmarks/bench_cold_start.py [--quick] [--dists 500]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, Row, bench_main, fmt, in_turn, median, parser, ratios, verdict

TARGET_S = 0.5
STREAMER = str(Path(PYTHON).with_name("streamer"))
BASELINE = "import importlib_metadata; importlib_metadata.entry_points(group='streamer.listeners')"
NO_GRPC = """
import json, sys
from streamer.cli.main import main
codes = {{}}
for argv in (["check", "--config", {cfg!r}], ["list", "--config", {cfg!r}]):
    codes[argv[0]] = main(argv)
print(json.dumps({{"codes": codes, "grpc": sorted(m for m in sys.modules
                  if m == "grpc" or m.startswith(("grpc.", "grpc_", "google.protobuf")))}}))
"""


def make_site(root: Path, n: int) -> Path:
    site = root / "site"
    site.mkdir()
    for i in range(n):
        d = site / f"synth_dist_{i:04d}-1.{i}.0.dist-info"
        d.mkdir()
        (d / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: synth-dist-{i:04d}\nVersion: 1.{i}.0\n"
            f"Summary: synthetic distribution {i}\n"
        )
        if i % 100 == 0:
            eps = f"[streamer.listeners]\nsynth{i} = synth_plugin_{i}:create_listeners\n"
        else:
            eps = f"[console_scripts]\nsynth-{i} = synth_{i}.cli:main\n\n[other.group]\nx = y:z\n"
        (d / "entry_points.txt").write_text(eps)
        (d / "RECORD").write_text("")
    cfg = root / "streamer.toml"
    cfg.write_text(
        'plugins = ["log"]\n\n[cloud]\ntarget = "127.0.0.1:50051"\n\n'
        '[plugin.log]\nstreams = ["subscribers"]\n'
    )
    return site


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return elapsed


def run(quick: bool, dists: int) -> list[Row]:
    rounds = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="streamer-b8-") as tmp:
        root = Path(tmp)
        site = make_site(root, dists)
        cfg = str(root / "streamer.toml")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
        env.pop("STREAMER_CONFIG", None)
        variants = {
            "bare": [PYTHON, "-c", BASELINE],
            "check": [STREAMER, "check", "--config", cfg],
            "list": [STREAMER, "list", "--config", cfg],
            "python": [PYTHON, "-c", "pass"],
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for argv in variants.values():  # warm the page cache once
            timed(argv, env)
        for k, argv in in_turn(rounds, list(variants.items())):
            times[k].append(timed(argv, env))
        probe = subprocess.run(
            [PYTHON, "-c", NO_GRPC.format(cfg=cfg)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        found = json.loads(probe.stdout.strip().splitlines()[-1])
    check_s, bare_s = median(times["check"]), median(times["bare"])
    ratio = median(ratios(times["check"], times["bare"]))
    return [
        Row(
            "B8",
            f"`streamer check` cold start, {dists} dists: s",
            fmt(bare_s),
            fmt(check_s),
            f"x{ratio:.2f}; <= {TARGET_S:g} s",
            verdict(check_s <= TARGET_S),
            f"median of {rounds} rounds; `streamer list` {fmt(median(times['list']))} s; "
            f"bare `python -c pass` {fmt(median(times['python']))} s",
        ),
        Row(
            "B8",
            "modules imported by `check` + `list` matching grpc*/google.protobuf",
            "—",
            ", ".join(found["grpc"]) or "none",
            "none",
            verdict(not found["grpc"] and set(found["codes"].values()) == {0}),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--dists", type=int, default=500)
    return bench_main(p, argv, lambda args: run(args.quick, args.dists))


if __name__ == "__main__":
    sys.exit(main())
