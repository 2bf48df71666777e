"""Soak: does a running host stay flat (RSS, threads) under churn? Loopback only, bounded.

A real `streamer run` (log and sqlite plugins, [metrics] on) follows a real `streamer serve`
(push streams plus one poll stream, so it reconnects every 0.2 s: reconnect churn throughout).
Phases, each ``--phase`` seconds (30 by default; ``--quick``: 8):

1. idle: the baseline.
2. endpoint churn: rounds of 400 connections stalled mid-headers, 50 requests of 100 header
   lines x 60 kB, a /healthz and a /metrics, then everything closed.
3. server restarts: the server is stopped (SIGTERM) and started again on the same port every
   2 s; every stream reconnects each time.

The host's VmRSS and thread count (/proc/<pid>/status) are sampled every 0.25 s. The table
shows each phase's first, last and highest values; the numbers in examples/systemd's TasksMax=
and MemoryMax= come from the highest values here, with headroom (docs/benchmarks.md, "Soak").

    .venv/bin/python benchmarks/soak.py [--quick] [--phase SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> tuple[float, int]:
    """(VmRSS in MiB, threads) of ``pid``."""
    rss, threads = 0.0, 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


@dataclass
class Phase:
    name: str
    samples: list[tuple[float, int]] = field(default_factory=list)

    def row(self) -> str:
        rss = [s[0] for s in self.samples]
        thr = [s[1] for s in self.samples]
        return (
            f"| {self.name} | {len(self.samples)} | {rss[0]:.1f} | {rss[-1]:.1f} | {max(rss):.1f} "
            f"| {thr[0]} | {thr[-1]} | {max(thr)} |"
        )


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.phase: Phase | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            if self.phase is not None:
                self.phase.samples.append(proc_status(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start_server(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "serve", str(data), "--address",
             f"127.0.0.1:{port}", "--mode", "push", "--stream-mode", "p1=poll",
             "--log-level", "WARNING"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    raise RuntimeError("streamer serve did not start")


def endpoint_churn(address: str, stop: float) -> int:
    host, port = address.rsplit(":", 1)
    big = b"".join(b"X-%d: %s\r\n" % (i, b"h" * 60_000) for i in range(100))
    rounds = 0
    while time.monotonic() < stop:
        stalled = []
        for _ in range(400):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            stalled.append(s)

        def heavy() -> None:
            try:
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    s.sendall(b"GET /metrics HTTP/1.1\r\n" + big + b"\r\n")
                    s.recv(100)
            except OSError:
                pass  # closed by the server: that is the point

        workers = [threading.Thread(target=heavy) for _ in range(50)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
            r.read()
        for s in stalled:
            s.close()
        rounds += 1
    return rounds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--phase", type=float, default=None, help="seconds per phase")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    seconds = args.phase or (8.0 if args.quick else 30.0)

    with tempfile.TemporaryDirectory(prefix="streamer-soak-") as tmp:
        work = Path(tmp)
        data = work / "data"
        for stream in ("s1", "s2", "s3", "p1"):
            (data / stream).mkdir(parents=True)
            for i in range(200):
                (data / stream / f"imsi{i:05d}").write_bytes(os.urandom(64))
        port, mport = free_port(), free_port()
        cfg = work / "streamer.toml"
        cfg.write_text(
            f'plugins = ["log", "sqlite"]\n\n[cloud]\ntarget = "127.0.0.1:{port}"\n\n'
            "[streaming]\ninterval = 0.2\nbackoff_initial = 0.05\nbackoff_max = 0.5\n\n"
            '[plugin.log]\nstreams = ["s2", "s3", "p1"]\n\n'
            f'[plugin.sqlite]\nstreams = ["s1"]\npath = "{work / "mirror.db"}"\n\n'
            f'[metrics]\naddress = "127.0.0.1:{mport}"\n'
        )
        server = start_server(data, port, work / "server.log")
        host_log = (work / "host.log").open("wb")
        host = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "run", "--config", str(cfg),
             "--log-level", "WARNING"],
            stdout=host_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        address = f"127.0.0.1:{mport}"
        phases: list[Phase] = []
        sampler = Sampler(host.pid)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("host never became ready; see " + str(work / "host.log"))
                time.sleep(0.1)

            phases.append(Phase("idle (poll stream reconnecting every 0.2 s)"))
            sampler.phase = phases[-1]
            time.sleep(seconds)

            phases.append(Phase("endpoint churn (400 stalled + 50 x 6 MB headers / round)"))
            sampler.phase = phases[-1]
            rounds = endpoint_churn(address, time.monotonic() + seconds)
            phases[-1].name += f", {rounds} rounds"

            phases.append(Phase("server restarts every 2 s"))
            sampler.phase = phases[-1]
            stop, restarts = time.monotonic() + seconds, 0
            while time.monotonic() < stop:
                server.send_signal(signal.SIGTERM)
                server.wait(10)
                time.sleep(0.5)
                server = start_server(data, port, work / "server.log")
                restarts += 1
                time.sleep(1.5)
            phases[-1].name += f", {restarts} restarts"

            phases.append(Phase("idle again"))
            sampler.phase = phases[-1]
            time.sleep(min(seconds, 10.0))
        finally:
            sampler.stop()
            host.send_signal(signal.SIGTERM)
            code = host.wait(30)
            server.send_signal(signal.SIGTERM)
            server.wait(10)
            host_log.close()
        tracebacks = (work / "host.log").read_text(errors="replace").count("Traceback")

    if args.json:
        print(json.dumps([{"phase": p.name, "samples": p.samples} for p in phases]))
    else:
        print("| phase | samples | RSS first MiB | RSS last MiB | RSS max MiB "
              "| threads first | threads last | threads max |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for p in phases:
            print(p.row())
        print(f"\nhost exit status {code}; tracebacks in its log: {tracebacks}")
    return 0 if code == 0 and tracebacks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
