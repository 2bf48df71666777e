"""The observability endpoint is bounded in connections, header bytes and time, over real
sockets (issue 19): idle clients cannot pile up threads, headers cannot pile up memory, a fresh
/healthz still answers while idle clients fill the cap, and clients that go away print no
tracebacks."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from streamer.observability.http import MAX_CONNECTIONS, MAX_HEADER_BYTES, ObservabilityServer


class _Source:
    def __init__(self, body: bytes = b"m 1\n") -> None:
        self.body = body
        self.gate = threading.Event()
        self.gate.set()

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        return self.body, "text/plain"

    def status(self) -> dict[str, object]:
        self.gate.wait(10)
        return {"ready": True, "not_ready": [], "streams": []}


def _get(address: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _raw(address: str, request: bytes) -> bytes:
    with _connect(address) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.fixture
def served() -> Iterator[tuple[ObservabilityServer, _Source]]:
    source = _Source()
    server = ObservabilityServer(source, "127.0.0.1", 0, request_timeout=30, max_connections=4)
    server.start()
    try:
        yield server, source
    finally:
        source.gate.set()
        server.stop()


def _wait(predicate: object, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_documented_defaults() -> None:
    assert (MAX_CONNECTIONS, MAX_HEADER_BYTES) == (32, 16 * 1024)
    server = ObservabilityServer(_Source(), "127.0.0.1", 0)
    try:
        assert server.request_timeout == 10.0
    finally:
        server.stop()


def test_idle_clients_cannot_pile_up_threads_and_healthz_still_answers(
    served: tuple[ObservabilityServer, _Source],
) -> None:
    server, _ = served
    before = threading.active_count()
    idle = [_connect(server.address) for _ in range(40)]
    try:
        for s in idle[:3]:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # stalled mid-headers
        time.sleep(0.3)
        assert server.connections <= 8
        assert threading.active_count() <= before + 8
        for _ in range(3):  # a fresh probe gets through every time
            assert _get(server.address, "/healthz") == (200, b"ok\n")
        assert threading.active_count() <= before + 8
    finally:
        for s in idle:
            s.close()


def test_excess_is_closed_at_once_when_every_connection_is_busy(
    served: tuple[ObservabilityServer, _Source],
) -> None:
    server, source = served
    source.gate.clear()  # /status blocks: those connections are busy, not idle
    busy = [_connect(server.address) for _ in range(4)]
    try:
        for s in busy:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        _wait(lambda: server.connections == 4, "four busy connections")
        time.sleep(0.2)
        with _connect(server.address) as extra:
            started = time.monotonic()
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                got = extra.recv(100)
            except ConnectionResetError:
                got = b""
            assert got == b"" and time.monotonic() - started < 2
        source.gate.set()
        for s in busy:
            assert s.recv(12).startswith(b"HTTP/1.0 200")
    finally:
        for s in busy:
            s.close()
    assert _get(server.address, "/healthz")[0] == 200


def test_request_line_plus_headers_are_capped_with_431(
    served: tuple[ObservabilityServer, _Source],
) -> None:
    server, _ = served
    fine = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 10_000 + b"\r\n\r\n"
    assert _raw(server.address, fine).startswith(b"HTTP/1.0 200")
    many = b"GET /healthz HTTP/1.1\r\n" + b"".join(
        b"X-%d: %s\r\n" % (i, b"b" * 1000) for i in range(20)
    )
    assert _raw(server.address, many + b"\r\n").startswith(b"HTTP/1.0 431")
    long_line = b"GET /" + b"c" * 20_000 + b" HTTP/1.1\r\n\r\n"
    assert _raw(server.address, long_line).startswith(b"HTTP/1.0 431")
    assert _get(server.address, "/healthz")[0] == 200


def test_clients_leaving_mid_answer_print_no_traceback(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    source = _Source(body=b"x" * 8_000_000)
    server = ObservabilityServer(source, "127.0.0.1", 0, max_connections=4)
    server.start()
    try:
        for _ in range(5):
            s = _connect(server.address)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(1)  # the answer has started
            s.close()  # reset: the server's write fails
        _wait(lambda: server.connections == 0, "the connections to end")
        assert _get(server.address, "/healthz")[0] == 200
    finally:
        server.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Reset" not in err, err
