"""Safe sync, for real: `streamer run` (a child process) with the files, SQLite and Redis sinks
against a reference server on loopback that suddenly serves empty snapshots.

- every sink keeps its data while the guard holds, and `streamer status` / `/readyz` say so;
- the cloud serving the same snapshot three times applies it;
- `streamer release STREAM` (a CLI child process) applies it at once;
- a stream that has not been in sync for longer than max_staleness turns `/readyz` red.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from streamer_files import read_stream

from streamer.server.reference import ReferenceServer
from streamer.server.sources import MemorySource
from tests import helpers
from tests.helpers import RunningHost, run_cli, streamer_env

pytestmark = pytest.mark.slow

eventually = functools.partial(helpers.eventually, timeout=20.0, interval=0.05)
STREAMS = ("subs", "rules", "sessions")


def data() -> dict[str, dict[str, bytes]]:
    return {
        "subs": {f"IMSI{i:015d}": b'{"apn": "internet"}' for i in range(100)},
        "rules": {f"rule-{i}": f"rate={i}".encode() for i in range(40)},
        "sessions": {f"sess-{i}": f"ue-{i}".encode() for i in range(20)},
    }


class Sinks:
    def __init__(self, work: Path, redis_url: str) -> None:
        self.work = work
        self.redis = redis.Redis.from_url(redis_url)

    def read(self) -> dict[str, dict[str, bytes]]:
        try:
            files = read_stream(self.work / "files", "subs")
        except OSError:
            files = {}
        rows: dict[str, bytes] = {}
        db = self.work / "mirror.db"
        if db.exists():
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                rows = {
                    k: bytes(v) for k, v in conn.execute('SELECT key, value FROM "stream_rules"')
                }
            except sqlite3.OperationalError:
                rows = {}
            finally:
                conn.close()
        hashed = {k.decode(): v for k, v in self.redis.hgetall("safe:sessions").items()}
        return {"subs": files, "rules": rows, "sessions": hashed}


class Host(RunningHost):
    def address(self) -> str:
        m = re.search(r"metrics and health on http://(\S+) ", self.logtext())
        return m.group(1) if m else ""


def write_config(
    cfg: Path, target: str, work: Path, redis_url: str, interval: float, **files: object
) -> Path:
    plugins: dict[str, dict[str, object]] = {
        "files": {"streams": ["subs"], "dir": str(work / "files"), **files},
        "sqlite": {"streams": ["rules"], "path": str(work / "mirror.db")},
        "redis": {"streams": ["sessions"], "url": redis_url, "key_prefix": "safe:"},
    }
    streaming = {"interval": interval, "backoff_max": interval, "shutdown_timeout": 3.0}
    return helpers.write_config(
        cfg,
        target,
        plugins,
        streaming=streaming,
        tables={"metrics": {"address": "127.0.0.1:0"}},
    )


def get(address: str, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def status_now(address: str) -> dict[str, dict[str, object]]:
    _, doc = get(address, "/status")
    return {str(r["stream"]): r for r in doc["streams"]}  # type: ignore[attr-defined]


async def status(address: str) -> dict[str, dict[str, object]]:
    return await asyncio.to_thread(status_now, address)


def held(rows: dict[str, dict[str, object]], stream: str) -> dict[str, object] | None:
    value = rows.get(stream, {}).get("held")
    return value if isinstance(value, dict) else None


@pytest.fixture
async def cloud() -> AsyncIterator[tuple[ReferenceServer, MemorySource]]:
    source = MemorySource(data())
    server = ReferenceServer(source, "poll")
    await server.start()
    yield server, source
    await server.stop(0)


async def start(cfg: Path, work: Path) -> Host:
    host = await Host.start(cfg, work / "host.log", env=streamer_env(XDG_CONFIG_HOME="/none"))
    await eventually(host.address, "the metrics address in the host's log")
    return host


async def test_an_empty_snapshot_is_held_in_every_sink_until_served_three_times(
    tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource], redis_server: str
) -> None:
    server, source = cloud
    sinks = Sinks(tmp_path, redis_server)
    before = data()
    # A 1 s interval leaves time to look at the hold between the calls that serve it.
    cfg = write_config(tmp_path / "streamer.toml", server.address, tmp_path, redis_server, 1.0)
    host = await start(cfg, tmp_path)
    try:
        await eventually(lambda: sinks.read() == before, "every sink mirrors the cloud")
        for stream in STREAMS:
            source.replace(stream, {})  # a cloud bug: every stream served empty
        address = host.address()
        for served in (1, 2):
            rows: dict[str, dict[str, object]] = {}

            async def served_n(n: int = served) -> bool:
                nonlocal rows
                rows = await status(address)
                return all((held(rows, s) or {}).get("served") == n for s in STREAMS)

            deadline = asyncio.get_running_loop().time() + 20
            while not await served_n():
                assert asyncio.get_running_loop().time() < deadline, rows
                await asyncio.sleep(0.05)
            assert sinks.read() == before  # the listeners' data untouched
            subs = held(rows, "subs")
            assert (
                subs is not None and subs["text"] == "held snapshot: would delete 100 of 100 keys"
            )
            code, ready = await asyncio.to_thread(get, address, "/readyz")
            assert code == 503 and ready["reasons"] == {
                "subs": "held snapshot: would delete 100 of 100 keys",
                "rules": "held snapshot: would delete 40 of 40 keys",
                "sessions": "held snapshot: would delete 20 of 20 keys",
            }
        code, out = await asyncio.to_thread(
            run_cli, "status", "--address", address, env=streamer_env()
        )
        assert code == 0, out
        assert "subs: held: would delete 100 of 100 keys (applied after 1 more identical" in out
        assert re.search(r"^subs +files +held; ", out, re.M), out
        # The third time the cloud serves it, it is applied.
        await eventually(
            lambda: sinks.read() == {s: {} for s in STREAMS}, "the insisted snapshot applied"
        )
        rows = await status(address)
        assert all(held(rows, s) is None for s in STREAMS)
        await eventually(lambda: get(address, "/readyz")[0] == 200, "ready again once in sync")
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'streamer_holds_total{plugin="files",stream="subs"} 1.0' in metrics
        assert 'streamer_held_would_delete_keys{plugin="files",stream="subs"} 0.0' in metrics
    finally:
        assert await host.stop() == 0, host.logtext()
        sinks.redis.close()
    log = host.logtext()
    for stream, n in (("subs", 100), ("rules", 40), ("sessions", 20)):
        warnings = [
            line
            for line in log.splitlines()
            if "WARNING" in line and f"stream {stream}: held snapshot" in line
        ]
        assert len(warnings) == 1, log  # one WARNING per hold, not one per call
        assert f"would delete {n} of {n} keys" in warnings[0]
        assert f"`streamer release {stream}`" in warnings[0]
    assert "the cloud served the held snapshot again: applied" in log


async def test_streamer_release_applies_the_held_snapshot_at_once(
    tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource], redis_server: str
) -> None:
    server, source = cloud
    sinks = Sinks(tmp_path, redis_server)
    before = data()
    # [plugin.files] guard_confirmations = 1000: only an operator can apply it in this test.
    cfg = write_config(
        tmp_path / "streamer.toml",
        server.address,
        tmp_path,
        redis_server,
        0.2,
        guard_confirmations=1000,
    )
    host = await start(cfg, tmp_path)
    env = streamer_env()
    try:
        await eventually(lambda: sinks.read() == before, "every sink mirrors the cloud")
        address = host.address()
        code, out = await asyncio.to_thread(
            run_cli, "release", "subs", "--address", address, env=env
        )
        assert code == 1 and "stream subs: nothing held" in out, out
        source.replace("subs", {f"IMSI{i:015d}": b"{}" for i in range(3)})  # truncated
        await eventually(lambda: held(status_now(address), "subs"), "the hold")
        await asyncio.sleep(1.0)  # five more calls serve it: still held, sink untouched
        assert sinks.read()["subs"] == before["subs"]
        code, out = await asyncio.to_thread(
            run_cli, "release", "subs", "--address", address, env=env
        )
        assert code == 0, out
        assert out.strip() == (
            "stream subs: released: applying the snapshot: would delete 97 of 100 keys"
        )
        await eventually(lambda: sinks.read()["subs"] == source.get("subs"), "the release")
        assert held(await status(address), "subs") is None
        code, out = await asyncio.to_thread(
            run_cli, "release", "nosuch", "--address", address, env=env
        )
        assert code == 2 and "no stream 'nosuch' is running" in out, out
    finally:
        assert await host.stop() == 0, host.logtext()
        sinks.redis.close()
    code, out = await asyncio.to_thread(run_cli, "release", "subs", "--address", address, env=env)
    assert code == 2 and "no streamer host is answering" in out, out
    assert "held batch released by an operator" in host.logtext()


async def test_a_stale_stream_turns_readyz_red(
    tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource]
) -> None:
    server, _ = cloud
    plugins = {"sqlite": {"streams": ["rules"], "path": str(tmp_path / "mirror.db")}}
    cfg = helpers.write_config(
        tmp_path / "streamer.toml",
        server.address,
        plugins,
        streaming={"interval": 0.2, "max_staleness": 1.5, "shutdown_timeout": 3.0},
        tables={"metrics": {"address": "127.0.0.1:0"}},
    )
    host = await start(cfg, tmp_path)
    try:
        address = host.address()
        await eventually(lambda: get(address, "/readyz")[0] == 200, "ready")
        await asyncio.sleep(2.0)  # polling in sync: the digest matches, nothing to apply
        assert get(address, "/readyz")[0] == 200
        await server.stop(0)  # the cloud goes away: no more confirmations
        await eventually(lambda: get(address, "/readyz")[0] == 503, "stale", timeout=10)
        _, doc = get(address, "/readyz")
        reason = doc["reasons"]["rules"]  # type: ignore[index]
        assert re.fullmatch(
            r"stale since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(max_staleness 1\.5 s\)", reason
        ), reason
        code, out = await asyncio.to_thread(
            run_cli, "status", "--address", address, env=streamer_env()
        )
        assert code == 0, out
        assert re.search(r"^rules: stale since \S+Z \(max_staleness 1\.5 s\)$", out, re.M), out
    finally:
        assert await host.stop() == 0, host.logtext()
