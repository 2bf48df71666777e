"""End to end: reference server + `streamer run` subprocess + every first-party plugin.

Data must land in files, SQLite and Redis; after a SIGKILL of the host in the middle of a
stream of changes and a restart, every sink converges on the server's current snapshot.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sqlite3
from pathlib import Path

import pytest
import redis
from streamer_files import read_stream

from streamer.server.reference import ReferenceServer
from streamer.server.sources import MemorySource
from tests import helpers
from tests.helpers import RunningHost

pytestmark = pytest.mark.slow

STREAMS = {"subscriberdb": "files", "policydb": "sqlite", "sessions": "redis", "network": "log"}


def write_config(path: Path, target: str, work: Path, redis_url: str) -> None:
    plugins: dict[str, dict[str, object]] = {
        "files": {"streams": ["subscriberdb"], "dir": str(work / "files")},
        "sqlite": {"streams": ["policydb"], "path": str(work / "mirror.db")},
        "redis": {"streams": ["sessions"], "url": redis_url, "key_prefix": "e2e:"},
        "log": {"streams": ["network"]},
    }
    streaming = {"interval": 0.3, "backoff_max": 0.3, "shutdown_timeout": None}
    helpers.write_config(path, target, plugins, streaming=streaming)


class Sinks:
    def __init__(self, work: Path, redis_url: str) -> None:
        self.work = work
        self.redis = redis.Redis.from_url(redis_url)

    def files(self) -> dict[str, bytes]:
        try:
            return read_stream(self.work / "files", "subscriberdb")
        except (FileNotFoundError, OSError):
            return {}

    def sqlite(self) -> dict[str, bytes]:
        db = self.work / "mirror.db"
        if not db.exists():
            return {}
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute('SELECT key, value FROM "stream_policydb"').fetchall()
        except sqlite3.OperationalError:
            return {}
        finally:
            conn.close()
        return {k: bytes(v) for k, v in rows}

    def redis_hash(self) -> dict[str, bytes]:
        return {k.decode(): v for k, v in self.redis.hgetall("e2e:sessions").items()}

    def all(self) -> dict[str, dict[str, bytes]]:
        return {
            "subscriberdb": self.files(),
            "policydb": self.sqlite(),
            "sessions": self.redis_hash(),
        }


# Poll every 50 ms for up to 20 s.
eventually = functools.partial(helpers.eventually, timeout=20.0, interval=0.05)


def initial_data() -> dict[str, dict[str, bytes]]:
    return {
        "subscriberdb": {f"IMSI{i:015d}": f'{{"apn": "internet-{i}"}}'.encode() for i in range(50)},
        "policydb": {f"rule-{i}": f"rate={i}".encode() for i in range(30)},
        "sessions": {f"sess-{i}": f"ue-{i}".encode() for i in range(20)},
        "network": {"gateway": b'{"tac": 1}'},
    }


async def test_all_plugins_mirror_and_converge_after_sigkill(
    tmp_path: Path, redis_server: str
) -> None:
    data = initial_data()
    source = MemorySource(data)
    server = ReferenceServer(source, "push", modes={"network": "poll"})
    await server.start()
    cfg, log = tmp_path / "streamer.toml", tmp_path / "host.log"
    write_config(cfg, server.address, tmp_path, redis_server)
    sinks = Sinks(tmp_path, redis_server)
    mirrored = {s: source.get(s) for s in ("subscriberdb", "policydb", "sessions")}
    host = await RunningHost.start(cfg, log, append=True)
    try:
        await eventually(lambda: sinks.all() == mirrored, "initial snapshots in every sink")
        assert "stream=network updates=1 resync=True" in host.logtext()

        # Live changes, including deletions, arrive in every sink.
        source.set("subscriberdb", "IMSI999", b"new")
        source.delete("subscriberdb", "IMSI000000000000000")
        source.set("policydb", "rule-0", b"rate=fast")
        source.delete("sessions", "sess-1")
        expected = {s: source.get(s) for s in mirrored}
        await eventually(lambda: sinks.all() == expected, "pushed changes")

        # Hammer every stream with changes and SIGKILL the host in the middle.
        async def churn() -> None:
            for n in range(400):
                source.set("subscriberdb", f"IMSI{n % 60:015d}", f"v{n}".encode())
                source.set("policydb", f"rule-{n % 40}", f"rate={n}".encode())
                source.set("sessions", f"sess-{n % 25}", f"ue-{n}".encode())
                if n % 7 == 0:
                    source.delete("sessions", f"sess-{(n + 3) % 25}")
                await asyncio.sleep(0.002)

        churner = asyncio.create_task(churn())
        await asyncio.sleep(0.3)
        host.proc.send_signal(signal.SIGKILL)
        await host.proc.wait()
        await churner
        source.replace("policydb", {"only-rule": b"rate=1"})
        expected = {s: source.get(s) for s in mirrored}

        # Restart: every sink converges on the server's current snapshot.
        host = await RunningHost.start(cfg, log, append=True)
        await eventually(lambda: sinks.all() == expected, "convergence after SIGKILL")
    finally:
        if host.proc.returncode is None:
            try:
                code = await host.stop(15)
            except asyncio.TimeoutError:
                host.proc.kill()
                code = await host.proc.wait()
            assert code == 0, log.read_text()[-3000:]
        sinks.redis.close()
        await server.stop(0)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
