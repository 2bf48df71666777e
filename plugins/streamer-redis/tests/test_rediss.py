"""``rediss://`` works end to end: a real redis-server serving TLS only, with a certificate
generated in the test, verified by the sink against the test CA (issue 19)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from streamer_redis import create_listeners

from streamer.sink.conformance import make_batch
from tests.certs import make_pki
from tests.helpers import free_port

pytestmark = pytest.mark.redis


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed")
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"]),
         "--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "redis-server (TLS) did not start"
            time.sleep(0.05)
        yield port, pki["ca"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_rediss_url_mirrors_over_verified_tls(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    url = f"rediss://localhost:{port}/0?ssl_ca_certs={ca}"
    (listener,) = create_listeners({"streams": ["s"], "url": url})
    try:
        assert listener.update(make_batch({"imsi1": b"k1"}, resync=True)) is True
    finally:
        listener.close()
    check = redis.Redis.from_url(url)
    try:
        assert check.hgetall("streamer:s") == {b"imsi1": b"k1"}
    finally:
        check.close()
    # plaintext to the TLS-only port does not get through
    plain = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()
