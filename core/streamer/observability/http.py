"""The observability HTTP endpoint (the ``streamer status`` client is ``streamer.cli.status``).

Standard library only.

The server (:class:`ObservabilityServer`) runs ``http.server.ThreadingHTTPServer`` in a daemon
thread, so a slow scrape never touches the event loop. It serves:

- ``/metrics``: Prometheus text (or OpenMetrics when asked for) from the metrics observer;
- ``/healthz``: 200 while the host process runs;
- ``/readyz``: 200 once every enabled stream has had a call accepted since it started and none
  is failing (its listener's latest failure not yet followed by an accepted batch), else 503
  with a JSON body naming the streams that are not ready;
- ``/status``: JSON, one object per stream (what ``streamer status`` prints);
- ``POST /release/STREAM``: ``streamer release``; applies the batch the mass-change guard holds
  on STREAM now. 200 released, 409 nothing held, 404 no such stream, 403 refused. Refused
  unless the endpoint listens on loopback (or ``remote_release`` is set), and refused for a
  request with an ``Origin`` header (a browser page cannot release anything); the body must be
  empty or at most ``MAX_POST_BODY`` bytes, sent with a ``Content-Length``.

Every connection is bounded (see docs/observability.md, "Limits"):

- at most ``max_connections`` (32) at once, one thread each. When all are taken, a new
  connection replaces the one that has waited longest for its request (idle or stalled
  mid-headers), so a fresh ``/healthz`` is answered even while idle clients fill the cap; if
  every connection is busy being answered (or as many are still being closed), the new one is
  closed at once. Threads are therefore at most 2 x ``max_connections``;
- the request line plus headers may hold ``max_header_bytes`` (16 KiB); beyond that the answer is
  ``431`` and the connection is closed;
- a connection that sends nothing (or stalls mid-request) for ``request_timeout`` seconds (10)
  is closed;
- a client that goes away mid-answer is logged at DEBUG, never as a traceback.

What is served comes from a :class:`StatusSource`
(``streamer.observability.metrics.MetricsObserver``); this module does not import
prometheus-client, so ``streamer status`` works without it.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from streamer.base.logs import escape

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_HEADER_BYTES",
    "MAX_POST_BODY",
    "REQUEST_TIMEOUT",
    "ObservabilityServer",
    "Releaser",
    "StatusSource",
]

log = logging.getLogger("streamer.observability.http")

ENDPOINTS = ("/metrics", "/healthz", "/readyz", "/status", "POST /release/STREAM")
RELEASE = "/release/"
MAX_POST_BODY = 64
MAX_STREAM_NAME = 1024

Releaser = Callable[[str], "dict[str, Any]"]
"""``streamer release``: the stream's name -> ``{"released": bool, "known": bool, "detail":
str, ...}`` (``known`` False: no such stream). Called on the endpoint's thread."""


class StatusSource(Protocol):
    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        """The exposition body and its content type, for this ``Accept`` header."""

    def status(self) -> dict[str, Any]:
        """``{"ready": bool, "not_ready": [...], "streams": [{...}, ...]}``."""


# -- server ----------------------------------------------------------------------------------


MAX_CONNECTIONS = 32
MAX_HEADER_BYTES = 16 * 1024
REQUEST_TIMEOUT = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # accepted promptly, then capped by max_connections
    source: StatusSource
    releaser: Releaser | None = None
    release_allowed: bool = False
    request_timeout: float = REQUEST_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    max_header_bytes: int = MAX_HEADER_BYTES

    def server_activate(self) -> None:
        super().server_activate()
        self._conn_lock = threading.Lock()
        # connection -> monotonic time it started waiting for a request, or None while busy
        self._conns: dict[socket.socket, float | None] = {}
        # evicted connections whose threads have not ended yet (bounded too: threads are at
        # most 2 x max_connections even under churn)
        self._closing: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            if len(self._conns) >= self.max_connections and not self._evict_idle():
                log.debug("observability endpoint: all connections busy; closed a new one")
                self.shutdown_request(request)
                return
            self._conns[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def _evict_idle(self) -> bool:
        """Close the connection that has waited longest for a request (lock held)."""
        idle = [(since, conn) for conn, since in self._conns.items() if since is not None]
        if not idle or len(self._closing) >= self.max_connections:
            return False
        _, oldest = min(idle, key=lambda pair: pair[0])
        del self._conns[oldest]
        self._closing.add(oldest)
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)  # its thread sees EOF and ends
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._conn_lock:
            self._conns.pop(request, None)
            self._closing.discard(request)

    def mark(self, conn: socket.socket, *, busy: bool) -> None:
        with self._conn_lock:
            if conn in self._conns:
                self._conns[conn] = None if busy else time.monotonic()

    def connections(self) -> int:
        with self._conn_lock:
            return len(self._conns) + len(self._closing)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # reset, broken pipe, timeout: the client's doing
            log.debug("observability endpoint: connection from %s: %r", client_address, exc)
        else:
            log.error("observability endpoint: %s: request failed", client_address, exc_info=exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _HeaderBudget:
    """The request stream, with a byte budget for the request line plus headers: reading past it
    raises ``http.client.LineTooLong``, which the handler answers with 431."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self.raw = raw
        self.left = 0

    def readline(self, size: int = -1) -> bytes:
        if self.left < 0:
            raise http.client.LineTooLong("request line and headers")
        cap = self.left + 1 if size < 0 else min(size, self.left + 1)
        line = self.raw.readline(cap)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.LineTooLong("request line and headers")
        return line

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "streamer"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Without a timeout an idle or stalled connection holds its thread until the client
        # goes away; on timeout handle_one_request closes the connection.
        self.connection.settimeout(self.server.request_timeout)
        self._budget = _HeaderBudget(self.rfile)
        self.rfile = self._budget  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        """The standard library's, with the header budget and the connection's busy mark."""
        self._budget.left = self.server.max_header_bytes
        self.server.mark(self.connection, busy=False)
        try:
            try:
                self.raw_requestline = self.rfile.readline(65537)
            except http.client.LineTooLong:
                self.requestline, self.request_version, self.command = "", "", ""
                self.send_error(431, "Request line and headers too large")
                self.close_connection = True
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():  # 431 (via LineTooLong) when headers are too large
                return
            self.server.mark(self.connection, busy=True)
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
                return
            method()
            self.wfile.flush()
        except TimeoutError as exc:
            self.log_error("Request timed out: %r", exc)
            self.close_connection = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                body, ctype = self.server.source.render_metrics(self.headers.get("Accept", ""))
                self._send(200, body, ctype)
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                doc = self.server.source.status()
                ready = bool(doc.get("ready"))
                answer = {"ready": ready, "not_ready": doc["not_ready"]}
                if "reasons" in doc:
                    answer["reasons"] = doc["reasons"]
                self._json(200 if ready else 503, answer)
            elif path == "/status":
                self._json(200, self.server.source.status())
            else:
                self._json(404, {"error": f"no such endpoint {path!r}", "endpoints": ENDPOINTS})
        except OSError:  # the client went away mid-answer: handle_error logs it at DEBUG
            raise
        except Exception:
            log.exception("observability endpoint %s failed", path)
            self._json(500, {"error": "internal error; see the host's log"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        """``POST /release/STREAM``, bounded: no browser, a tiny body, loopback by default."""
        path = self.path.split("?", 1)[0]
        if not path.startswith(RELEASE) or self.server.releaser is None:
            self.close_connection = True
            self._json(404, {"error": f"no such endpoint {path!r}", "endpoints": ENDPOINTS})
            return
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            self._json(411, {"error": "send the body with a Content-Length (an empty body)"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_POST_BODY:
            self.close_connection = True
            self._json(413, {"error": f"the body must be empty (at most {MAX_POST_BODY} bytes)"})
            return
        if length:
            self.rfile.read(length)  # bounded by the check above and the connection's timeout
        if self.headers.get("Origin") is not None:
            self._json(403, {"error": "refused: requests from a web page (Origin header)"})
            return
        if not self.server.release_allowed:
            self._json(
                403,
                {
                    "error": "refused: this endpoint listens off loopback; set [metrics] "
                    "remote_release = true to allow releases from the network"
                },
            )
            return
        try:
            stream = urllib.parse.unquote(path[len(RELEASE) :], errors="strict")
        except UnicodeDecodeError:
            stream = ""  # not a name any stream can have
        if not stream or len(stream) > MAX_STREAM_NAME:
            self._json(400, {"error": "expected POST /release/STREAM with a stream name"})
            return
        try:
            doc = self.server.releaser(stream)
        except Exception:
            log.exception("observability endpoint: release of a stream failed")
            self._json(500, {"error": "internal error; see the host's log"})
            return
        log.info(
            "POST /release from %s: stream %s: %s",
            self.address_string(),
            escape(stream),
            escape(str(doc.get("detail", ""))),
        )
        if doc.get("released"):
            code = 200
        elif doc.get("busy"):  # the host did not answer in time: nothing was released
            code = 503
        else:
            code = 409 if doc.get("known") else 404
        self._json(code, doc)

    def _json(self, code: int, doc: object) -> None:
        body = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
        self._send(code, body, "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %r %s", self.address_string(), self.requestline[:200], code)


class ObservabilityServer:
    """``/metrics``, ``/healthz``, ``/readyz``, ``/status`` on ``host:port`` (port 0: any free
    port; :attr:`address` is the bound one). Binding happens in the constructor (OSError).

    Bounded as the module docstring says: ``max_connections`` connections (32),
    ``max_header_bytes`` of request line plus headers (16 KiB, else 431), ``request_timeout``
    seconds (10) for a connection that sends nothing."""

    def __init__(
        self,
        source: StatusSource,
        host: str,
        port: int,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_header_bytes: int = MAX_HEADER_BYTES,
        releaser: Releaser | None = None,
        remote_release: bool = False,
    ) -> None:
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0, got {request_timeout}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if max_header_bytes < 256:
            raise ValueError(f"max_header_bytes must be >= 256, got {max_header_bytes}")
        cls = _Server6 if ":" in host else _Server
        self._httpd = cls((host, port), _Handler)
        self._httpd.source = source
        self._httpd.releaser = releaser
        self._httpd.release_allowed = releaser is not None and (
            remote_release or _is_loopback(self._httpd.server_address[0])
        )
        self._httpd.request_timeout = request_timeout
        self._httpd.max_connections = max_connections
        self._httpd.max_header_bytes = max_header_bytes
        self._thread: threading.Thread | None = None

    @property
    def request_timeout(self) -> float:
        return self._httpd.request_timeout

    @property
    def release_allowed(self) -> bool:
        """Whether ``POST /release`` is served: a releaser is set and the endpoint listens on
        loopback, or ``remote_release`` was asked for."""
        return self._httpd.release_allowed

    @property
    def connections(self) -> int:
        """Connections open right now, being served or being closed (each has a thread; at
        most 2 x ``max_connections``)."""
        return self._httpd.connections()

    @property
    def address(self) -> str:
        host, port = self._httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="streamer-observability",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._httpd.shutdown()
            thread.join(5)
        self._httpd.server_close()


def _is_loopback(host: object) -> bool:
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
