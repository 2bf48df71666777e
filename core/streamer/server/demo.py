"""``streamer run --demo``: the whole system in one process, with no config file and no cloud.

An in-process reference server on loopback serves demo data (``examples/demo/data`` when run
from a checkout, else a built-in copy), the first-party plugins mirror it into a temporary
directory, and a change is published every few seconds so updates can be seen arriving.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from streamer.host.config import config_from_text
from streamer.host.observers import hookimpl
from streamer.host.plugins import LISTENERS_GROUP, find_plugins
from streamer.wire.streamer_pb2 import DataUpdateBatch

if TYPE_CHECKING:
    from streamer.host.host import Host
    from streamer.server.sources import MemorySource

__all__ = ["demo_config_text", "load_demo_data", "run_demo"]

log = logging.getLogger("streamer.server.demo")

BUILTIN_DATA: dict[str, dict[str, bytes]] = {
    "subscriberdb": {
        f"IMSI00101000000000{i}": json.dumps(
            {"imsi": f"IMSI00101000000000{i}", "apn": "internet", "policy": "default"}
        ).encode()
        for i in (1, 2, 3)
    },
    "policydb": {
        "default": b'{"max_bitrate_ul": 10000000, "max_bitrate_dl": 50000000}',
        "throttled": b'{"max_bitrate_ul": 1000000, "max_bitrate_dl": 2000000}',
    },
    "network": {"gateway": b'{"mcc": "001", "mnc": "01", "tac": 1}'},
}
# Which plugin mirrors which demo stream, and how the demo server serves it.
PLAN = (
    ("subscriberdb", "files", "push"),
    ("policydb", "sqlite", "push"),
    ("network", "log", "poll"),
)


def load_demo_data(directory: Path | None = None) -> dict[str, dict[str, bytes]]:
    """Demo data from a directory laid out like the reference server's directory source
    (one subdirectory per stream, one file per key), or the built-in copy."""
    if directory is None:
        candidate = Path.cwd() / "examples" / "demo" / "data"
        directory = candidate if candidate.is_dir() else None
    if directory is None:
        return {s: dict(d) for s, d in BUILTIN_DATA.items()}
    data: dict[str, dict[str, bytes]] = {}
    for stream_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        data[stream_dir.name] = {
            unquote(f.name): f.read_bytes().strip()
            for f in sorted(stream_dir.iterdir())
            if f.is_file()
        }
    return data


def demo_config_text(address: str, workdir: Path, installed: set[str]) -> str:
    """The streamer.toml the demo runs with (printed at start, so it doubles as an example)."""
    plugins = [plugin for _, plugin, _ in PLAN if plugin in installed]
    lines = [
        f"plugins = {json.dumps(plugins)}",
        "",
        "[cloud]",
        f'target = "{address}"',
        "",
        "[streaming]",
        "interval = 5.0",
        "backoff_max = 5.0",
        "shutdown_timeout = 5.0",
    ]
    for stream, plugin, _ in PLAN:
        if plugin not in installed:
            continue
        lines += ["", f"[plugin.{plugin}]", f'streams = ["{stream}"]']
        if plugin == "files":
            lines.append(f"dir = {json.dumps(str(workdir / 'files'))}")
        elif plugin == "sqlite":
            lines.append(f"path = {json.dumps(str(workdir / 'streamer.db'))}")
    return "\n".join(lines) + "\n"


class DemoPrinter:
    """Observer that prints each batch in a human-readable line (keys, never values).

    A snapshot that leaves a stream as it was (a poll stream re-serving the same data every
    interval) is not news and is not printed.
    """

    def __init__(self) -> None:
        self._held: dict[str, dict[str, bytes]] = {}

    @hookimpl
    def streamer_batch_received(self, stream: str, batch: DataUpdateBatch) -> None:
        before = self._held.get(stream)
        after = {} if batch.resync else dict(before or {})
        for u in batch.updates:
            if u.value:
                after[u.key] = u.value
            else:
                after.pop(u.key, None)
        self._held[stream] = after
        if batch.resync and before == after:
            return
        keys = [u.key + ("" if u.value else " (deleted)") for u in batch.updates]
        shown = ", ".join(keys[:4]) + (f", ... {len(keys) - 4} more" if len(keys) > 4 else "")
        kind = "snapshot" if batch.resync else "update"
        print(f"  <- {stream:<13} {kind:<8} {len(keys):>3} key(s): {shown or '-'}", flush=True)


def changes(data: dict[str, dict[str, bytes]]) -> Iterator[tuple[str, str, bytes | None, str]]:
    """An endless, repeating script of cloud-side changes: (stream, key, value|None, what)."""
    for n in itertools.count(4):
        imsi = f"IMSI0010100000{n:05d}"
        value = json.dumps({"imsi": imsi, "apn": "internet", "policy": "default"}).encode()
        yield "subscriberdb", imsi, value, f"add subscriber {imsi}"
        rate = 1_000_000 * (n % 5 + 1)
        rule = json.dumps({"max_bitrate_ul": rate, "max_bitrate_dl": 2 * rate}).encode()
        yield "policydb", "throttled", rule, f"change policy 'throttled' to {rate} bit/s"
        yield "subscriberdb", imsi, None, f"delete subscriber {imsi}"
        tac = json.dumps({"mcc": "001", "mnc": "01", "tac": n}).encode()
        yield "network", "gateway", tac, f"set network tac={n} (poll stream: seen next poll)"


async def _demo(interval: float, duration: float | None, workdir: Path) -> int:
    from streamer.host.host import Host
    from streamer.server.reference import ReferenceServer
    from streamer.server.sources import MemorySource

    data = load_demo_data()
    source = MemorySource(data)
    modes = {stream: mode for stream, _, mode in PLAN}
    server = ReferenceServer(source, "push", modes=modes, record_requests=False)
    await server.start()
    try:
        installed = {p.name for p in find_plugins(LISTENERS_GROUP)}
        missing = [plugin for _, plugin, _ in PLAN if plugin not in installed]
        text = demo_config_text(server.address, workdir, installed)
        config_path = workdir / "streamer.toml"
        config_path.write_text(text)
        plan = ", ".join(
            f"{stream} ({mode}) -> {plugin}" for stream, plugin, mode in PLAN if plugin in installed
        )
        print(f"streamer demo: a reference server on {server.address} serves {plan}")
        print(f"  config: {config_path}; Ctrl-C to stop", flush=True)
        if missing:
            print(f"  (plugins not installed, their streams skipped: {', '.join(missing)})")
        config = config_from_text(text, config_path)
        host = Host(config, extra_observers=[DemoPrinter()])
        return await _run(host, source, data, installed, interval, duration)
    finally:
        await server.stop(grace=0.5)


async def _run(
    host: Host,
    source: MemorySource,
    data: dict[str, dict[str, bytes]],
    installed: set[str],
    interval: float,
    duration: float | None,
) -> int:
    modes = {stream for stream, _, _ in PLAN}

    async def publish() -> None:
        for stream, key, value, what in changes(data):
            await asyncio.sleep(interval)
            if stream not in modes or PLAN_BY_STREAM[stream] not in installed:
                continue
            print(f"  -> cloud: {what}", flush=True)
            if value is None:
                source.delete(stream, key)
            else:
                source.set(stream, key, value)

    async def stop_later() -> None:
        if duration is not None:
            await asyncio.sleep(duration)
            host.request_shutdown()

    helpers = [asyncio.create_task(publish()), asyncio.create_task(stop_later())]
    try:
        code = await host.run()
    finally:
        for task in helpers:
            task.cancel()
    return code


PLAN_BY_STREAM = {stream: plugin for stream, plugin, _ in PLAN}


def _where_the_data_went(workdir: Path, log_path: Path) -> str:
    lines = [f"streamer demo: stopped. Mirrored data is in {workdir}"]
    if (workdir / "files").is_dir():
        lines.append(f"  subscriberdb: one file per key under {workdir / 'files'}")
    if (workdir / "streamer.db").exists():
        lines.append(f"  policydb: SQLite database {workdir / 'streamer.db'}")
    lines.append(f"  logs (network's updates are logged by the log plugin): {log_path}")
    return "\n".join(lines)


def run_demo(
    interval: float = 3.0,
    duration: float | None = None,
    log_level: str = "INFO",
    log_format: str = "human",
) -> int:
    """Run the demo; only the story goes to stdout, logs go to ``streamer.log`` in its
    working directory, named at exit."""
    from streamer.host.logsetup import configure_logging

    workdir = Path(tempfile.mkdtemp(prefix="streamer-demo-"))
    log_path = workdir / "streamer.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(fd, "a", encoding="utf-8", buffering=1) as log_file:
        configure_logging(log_level, log_format, stream=log_file)
        try:
            return asyncio.run(_demo(interval, duration, workdir))
        except KeyboardInterrupt:  # Ctrl-C before the host installed its handler
            print("streamer demo: interrupted", file=sys.stderr)
            return 0
        finally:
            logging.shutdown()
            print(_where_the_data_went(workdir, log_path), flush=True)
