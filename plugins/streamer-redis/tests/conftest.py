"""A real redis-server for the streamer-redis tests, on an ephemeral port in a temp dir.

Skipped when ``redis-server`` is not on PATH, unless ``STREAMER_REQUIRE_REDIS=1`` (CI), which
turns the absence into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(exe: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    for _ in range(5):  # another process may grab the port between probe and bind
        port = _free_port()
        log = open(workdir / f"redis-{port}.log", "wb")  # noqa: SIM115 - closed with the server
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                redis.Redis.from_url(url, socket_timeout=1).ping()
                return proc, url
            except redis.ConnectionError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"redis-server did not start; see the logs in {workdir}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private redis-server for this test session."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("STREAMER_REQUIRE_REDIS") == "1":
            pytest.fail("STREAMER_REQUIRE_REDIS=1 but redis-server is not on PATH")
        pytest.skip("redis-server is not on PATH")
    proc, url = _start(exe, tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's server, emptied for each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    yield redis_server
    client.close()
