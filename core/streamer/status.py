"""The observability HTTP endpoint and the ``streamer status`` client. Standard library only.

The server (:class:`ObservabilityServer`) runs ``http.server.ThreadingHTTPServer`` in a daemon
thread, so a slow scrape never touches the event loop. It serves:

- ``/metrics``: Prometheus text (or OpenMetrics when asked for) from the metrics observer;
- ``/healthz``: 200 while the host process runs;
- ``/readyz``: 200 once every enabled stream has had a call accepted since it started and none
  is failing (its listener's latest failure not yet followed by an accepted batch), else 503
  with a JSON body naming the streams that are not ready;
- ``/status``: JSON, one object per stream (what ``streamer status`` prints).

A client connection that sends nothing (or stalls mid-request) for ``request_timeout`` seconds
(10 by default) is closed, so idle or slow clients cannot hold handler threads forever.

What is served comes from a :class:`StatusSource` (``streamer.metrics.MetricsObserver``); this
module does not import prometheus-client, so ``streamer status`` works without it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

__all__ = [
    "HostUnreachable",
    "ObservabilityServer",
    "StatusSource",
    "fetch_status",
    "format_status",
    "query_address",
]

log = logging.getLogger("streamer.status")

ENDPOINTS = ("/metrics", "/healthz", "/readyz", "/status")


class StatusSource(Protocol):
    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        """The exposition body and its content type, for this ``Accept`` header."""

    def status(self) -> dict[str, Any]:
        """``{"ready": bool, "not_ready": [...], "streams": [{...}, ...]}``."""


# -- server ----------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    source: StatusSource
    request_timeout: float = 10.0


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "streamer"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Without a timeout an idle or stalled connection holds its thread until the client
        # goes away; on timeout handle_one_request closes the connection.
        self.connection.settimeout(self.server.request_timeout)

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
                self._json(200 if ready else 503, {"ready": ready, "not_ready": doc["not_ready"]})
            elif path == "/status":
                self._json(200, self.server.source.status())
            else:
                self._json(404, {"error": f"no such endpoint {path!r}", "endpoints": ENDPOINTS})
        except Exception:
            log.exception("observability endpoint %s failed", path)
            self._json(500, {"error": "internal error; see the host's log"})

    def do_HEAD(self) -> None:
        self.do_GET()

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


class ObservabilityServer:
    """``/metrics``, ``/healthz``, ``/readyz``, ``/status`` on ``host:port`` (port 0: any free
    port; :attr:`address` is the bound one). Binding happens in the constructor (OSError).

    A connection idle (or stalled mid-request) for ``request_timeout`` seconds is closed."""

    def __init__(
        self, source: StatusSource, host: str, port: int, *, request_timeout: float = 10.0
    ) -> None:
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0, got {request_timeout}")
        cls = _Server6 if ":" in host else _Server
        self._httpd = cls((host, port), _Handler)
        self._httpd.source = source
        self._httpd.request_timeout = request_timeout
        self._thread: threading.Thread | None = None

    @property
    def request_timeout(self) -> float:
        return self._httpd.request_timeout

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


# -- client (`streamer status`) --------------------------------------------------------------


class HostUnreachable(Exception):
    """No streamer host answered at ``address``; ``reason`` says why."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(
            f"no streamer host is answering at {address} ({reason}); "
            "is `streamer run` running with [metrics] address set?"
        )


def query_address(address: str) -> str:
    """The address to dial for a listen address: a wildcard host becomes loopback."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address
    if host in ("", "0.0.0.0"):
        return f"127.0.0.1:{port}"
    if host in ("[::]", "::"):
        return f"[::1]:{port}"
    return address


def fetch_status(address: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET ``http://<address>/status`` and decode it. Raises :class:`HostUnreachable`."""
    import urllib.error
    import urllib.request

    url = f"http://{address}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise HostUnreachable(address, f"HTTP {exc.code} from {url}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise HostUnreachable(address, str(text).lower()) from exc
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed address
        raise HostUnreachable(address, str(exc) or type(exc).__name__) from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise HostUnreachable(address, f"{url} did not return JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("streams"), list):
        raise HostUnreachable(address, f"{url} did not return a streamer status document")
    return doc


def _age(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "never"
    if seconds < 60:
        return f"{seconds:.1f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def format_status(doc: dict[str, Any]) -> str:
    """A table, one row per stream, and a readiness line."""
    header = ("STREAM", "PLUGIN", "STATE", "LAST BATCH", "UPDATES", "ERRORS", "LAST ERROR")
    rows = [header]
    for s in doc.get("streams", []):
        state = str(s.get("state", "?"))
        backoff = s.get("backoff") or 0
        if state == "waiting" and backoff:
            state += f" (backoff {backoff:.1f}s)"
        if s.get("failing"):
            state = f"failing ({s.get('failing')} x{s.get('failures_in_a_row', 1)}); {state}"
        rows.append(
            (
                str(s.get("stream", "?")),
                str(s.get("plugin") or "-"),
                state,
                _age(s.get("last_batch_age_s")),
                str(s.get("updates", 0)),
                str(s.get("errors", 0)),
                str(s.get("last_error") or "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    if len(rows) == 1:
        lines.append("(no streams)")
    not_ready = doc.get("not_ready") or []
    if doc.get("ready"):
        lines.append("ready: every stream has received data")
    else:
        lines.append(f"not ready: {', '.join(map(str, not_ready)) or 'no streams running'}")
    return "\n".join(lines)
