"""`streamer run` with [metrics] as a subprocess against a real reference server: the endpoints
answer, `streamer status` prints the streams, and says so clearly when no host is there."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamer.cli.status import format_status, query_address
from streamer.observability.http import ObservabilityServer
from streamer.server.reference import ReferenceServer
from streamer.server.sources import MemorySource
from tests import helpers
from tests.helpers import RunningHost, free_port, run_cli, streamer_env

pytestmark = pytest.mark.slow


def write_config(path: Path, target: str, streams: list[str], metrics: str) -> Path:
    """The log plugin on ``streams``, metrics and health on ``metrics``."""
    return helpers.write_config(
        path,
        target,
        {"log": {"streams": streams}},
        streaming={"shutdown_timeout": 3.0},
        tables={"metrics": {"address": metrics}},
    )


def env() -> dict[str, str]:
    return streamer_env(XDG_CONFIG_HOME="/nonexistent")


async def streamer(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer.cli",
        *args,
        cwd=cwd,
        env=env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(address: str, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, f"http://{address}{path}")


# `streamer run` answers in a child process: poll every 50 ms for up to 15 s.
eventually = functools.partial(helpers.eventually, timeout=15.0, interval=0.05)


class Host(RunningHost):
    address = ""

    def metrics_address(self) -> str:
        m = re.search(r"metrics and health on http://(\S+) ", self.logtext())
        return m.group(1) if m else ""


@pytest.fixture
async def cloud() -> AsyncIterator[tuple[ReferenceServer, MemorySource]]:
    source = MemorySource({"s1": {"k0": b"v0"}, "s2": {"k0": b"v0"}})
    server = ReferenceServer(source, "push")
    await server.start()
    yield server, source
    await server.stop(0)


@pytest.fixture
async def host(tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource]) -> AsyncIterator[Host]:
    server, _ = cloud
    cfg = write_config(tmp_path / "streamer.toml", server.address, ["s1", "nosuch"], "127.0.0.1:0")
    h = await Host.start(cfg, tmp_path / "host.log", cwd=tmp_path, env=env())
    try:
        await eventually(h.metrics_address, "the metrics address in the log")
        h.address = h.metrics_address()
        yield h
    finally:
        await h.stop()


async def test_endpoints_and_status_against_a_running_host(host: Host, tmp_path: Path) -> None:
    assert (await get(host.address, "/healthz"))[0] == 200
    # "nosuch" is unknown to the server: UNAVAILABLE, backoff, never ready.
    deadline = time.monotonic() + 15
    while True:
        rows = {
            r["stream"]: r for r in json.loads((await get(host.address, "/status"))[1])["streams"]
        }
        if rows.get("s1", {}).get("batches") and rows.get("nosuch", {}).get("errors"):
            break
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.05)
    code, body = await get(host.address, "/readyz")
    assert code == 503 and json.loads(body)["not_ready"] == ["nosuch"], body

    code, body = await get(host.address, "/metrics")
    assert code == 200
    assert 'streamer_batches_total{plugin="log",stream="s1"} 1.0' in body
    assert re.search(
        r'streamer_errors_total\{kind="UNAVAILABLE",plugin="log",stream="nosuch"\} [1-9]', body
    )
    assert 'streamer_stream_state{plugin="log",state="streaming",stream="s1"} 1.0' in body

    code, out, err = await streamer("status", "--address", host.address, cwd=tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "STREAM", "PLUGIN", "STATE", "LAST", "BATCH", "UPDATES", "ERRORS", "LAST", "ERROR"
    ]  # fmt: skip
    s1 = next(line for line in lines if line.startswith("s1 "))
    assert s1.split()[:3] == ["s1", "log", "streaming"] and "ago" in s1
    nosuch = next(line for line in lines if line.startswith("nosuch "))
    assert "never" in nosuch and "UNAVAILABLE" in nosuch
    assert lines[-1] == "not ready: nosuch"

    code, out, err = await streamer("status", "--address", host.address, "--json", cwd=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    rows = {r["stream"]: r for r in doc["streams"]}
    assert rows["s1"]["updates"] == 1 and rows["s1"]["errors"] == 0
    assert rows["nosuch"]["errors"] >= 1 and rows["nosuch"]["last_error"].startswith("UNAVAILABLE")
    assert "v0" not in out  # values never leave the process

    code, out, err = await streamer(
        "top", "--address", host.address, "--iterations", "2", "--interval", "0.05", cwd=tmp_path
    )
    assert code == 0, err
    assert out.count(f"streamer top - {host.address} - ") == 2
    assert "\x1b[" not in out  # no screen control when stdout is not a terminal
    assert any(line.split()[:3] == ["s1", "log", "streaming"] for line in out.splitlines())

    # The address can come from a config file's [metrics] table.
    other = tmp_path / "status.toml"
    other.write_text(f'[metrics]\naddress = "{host.address}"\n')
    code, out, err = await streamer("status", "--config", str(other), cwd=tmp_path)
    assert code == 0, err
    assert "s1" in out
    # ... even when the file has since become invalid: status needs only the address.
    other.write_text(f'plugins = 7\n[metrics]\naddress = "{host.address}"\n')
    code, out, err = await streamer("status", "--config", str(other), cwd=tmp_path)
    assert code == 0, err
    assert "s1" in out
    assert f"note: {other} is not valid now" in err and "plugins" in err

    # After shutdown nothing answers there any more.
    host.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(host.proc.wait(), 10) == 0, host.logtext()
    code, out, err = await streamer("status", "--address", host.address, cwd=tmp_path)
    assert code == 1 and out == ""
    assert f"no streamer host is answering at {host.address}" in err


async def test_readyz_turns_ready_when_every_stream_has_data(
    tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource]
) -> None:
    server, _ = cloud
    port = free_port()
    cfg = write_config(tmp_path / "streamer.toml", server.address, ["s1", "s2"], f"0.0.0.0:{port}")
    host = await RunningHost.start(cfg, tmp_path / "host.log", cwd=tmp_path, env=env())
    try:
        address = f"127.0.0.1:{port}"
        ready: list[int] = []

        async def poll() -> None:
            while True:
                try:
                    code, _ = await get(address, "/readyz")
                except OSError:
                    code = 0
                if code == 200:
                    ready.append(code)
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poll(), 15)
        # `streamer status` with only the config: wildcard listen address -> loopback.
        code, out, err = await streamer("status", "--config", str(cfg), cwd=tmp_path)
        assert code == 0, err + host.logtext()
        assert out.splitlines()[-1] == "ready: every stream has received data"
    finally:
        assert await host.stop() == 0, host.logtext()


async def test_status_without_a_host_says_so(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, out, err = await streamer("status", "--address", address, cwd=tmp_path)
    assert code == 1 and out == ""
    assert err.strip() == (
        f"streamer: no streamer host is answering at {address} (connection refused); "
        "is `streamer run` running with [metrics] address set?"
    )


async def test_status_without_an_address(tmp_path: Path) -> None:
    code, _, err = await streamer("status", cwd=tmp_path)
    assert code == 2
    assert "pass --address HOST:PORT or set [metrics] address" in err
    cfg = tmp_path / "streamer.toml"
    cfg.write_text('[metrics]\naddress = "127.0.0.1:0"\n')
    code, _, err = await streamer("status", cwd=tmp_path)
    assert code == 2 and "port 0" in err


def test_check_accepts_metrics_when_prometheus_is_installed(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "streamer.toml", "127.0.0.1:1", ["s1"], "127.0.0.1:0")
    code, out = run_cli("check", "--config", str(cfg), env=env())
    assert code == 0, out


def test_query_address_maps_wildcards_to_loopback() -> None:
    assert query_address("0.0.0.0:9464") == "127.0.0.1:9464"
    assert query_address("[::]:9464") == "[::1]:9464"
    assert query_address("10.0.0.5:9464") == "10.0.0.5:9464"


def test_format_status_table() -> None:
    doc = {
        "ready": False,
        "not_ready": ["policydb"],
        "streams": [
            {
                "stream": "subscriberdb",
                "plugin": "files",
                "state": "streaming",
                "last_batch_age_s": 1.25,
                "updates": 18000,
                "errors": 0,
                "last_error": None,
                "backoff": 0.0,
            },
            {
                "stream": "policydb",
                "plugin": "files",
                "state": "waiting",
                "last_batch_age_s": None,
                "updates": 0,
                "errors": 3,
                "last_error": "UNAVAILABLE: failed to connect",
                "backoff": 2.56,
            },
        ],
    }
    assert format_status(doc).splitlines() == [
        "STREAM        PLUGIN  STATE                   LAST BATCH  UPDATES  ERRORS  LAST ERROR",
        "subscriberdb  files   streaming               1.2s ago    18000    0       -",
        "policydb      files   waiting (backoff 2.6s)  never       0        3       "
        "UNAVAILABLE: failed to connect",
        "not ready: policydb",
    ]


class _StaticStatus:
    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        return b"", "text/plain"

    def status(self) -> dict[str, object]:
        return {"ready": True, "not_ready": [], "streams": []}


def test_idle_and_slow_connections_are_closed() -> None:
    default = ObservabilityServer(_StaticStatus(), "127.0.0.1", 0)
    assert default.request_timeout == 10.0
    default.stop()
    server = ObservabilityServer(_StaticStatus(), "127.0.0.1", 0, request_timeout=0.3)
    server.start()
    try:
        host, port = server.address.rsplit(":", 1)
        with (
            socket.create_connection((host, int(port)), timeout=5) as idle,
            socket.create_connection((host, int(port)), timeout=5) as slow,
        ):
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never end
            started = time.monotonic()
            assert idle.recv(1) == b""  # closed by the server, not our 5 s timeout
            assert slow.recv(1) == b""
            assert time.monotonic() - started < 4
        assert _get(f"http://{server.address}/healthz") == (200, "ok\n")
    finally:
        server.stop()
