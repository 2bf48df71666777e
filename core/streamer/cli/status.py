"""The client side of the observability endpoints: ``streamer status`` and ``streamer fleet``.

Standard library only, so ``streamer status`` works without gRPC or prometheus-client.
"""

from __future__ import annotations

import json
from typing import Any

from streamer.base.errors import StreamerError
from streamer.base.logs import escape
from streamer.cli.tables import age, table

__all__ = [
    "HostUnreachable",
    "fetch_status",
    "format_fleet",
    "format_status",
    "post_release",
    "query_address",
]


class HostUnreachable(StreamerError):
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


def post_release(address: str, stream: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """``POST http://<address>/release/<stream>`` with an empty body: the HTTP status and the
    decoded answer. Raises :class:`HostUnreachable` when no host answers (or not in JSON)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"http://{address}/release/{urllib.parse.quote(stream, safe='')}"
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            code, raw = resp.status, resp.read(65536)
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read(65536)
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise HostUnreachable(address, str(text).lower()) from exc
    except (OSError, ValueError) as exc:
        raise HostUnreachable(address, str(exc) or type(exc).__name__) from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise HostUnreachable(address, f"{url} did not return JSON (HTTP {code})") from exc
    if not isinstance(doc, dict):
        raise HostUnreachable(address, f"{url} did not return a JSON object (HTTP {code})")
    return code, doc


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
        if s.get("held"):
            state = f"held; {state}"
        elif s.get("stale_since"):
            state = f"stale; {state}"
        rows.append(
            (
                str(s.get("stream", "?")),
                str(s.get("plugin") or "-"),
                state,
                age(s.get("last_batch_age_s")),
                str(s.get("updates", 0)),
                str(s.get("errors", 0)),
                str(s.get("last_error") or "-"),
            )
        )
    lines = table(rows, free_last=True)
    if len(rows) == 1:
        lines.append("(no streams)")
    for s in doc.get("streams", []):
        name = escape(str(s.get("stream", "?")), 80)
        held = s.get("held")
        if isinstance(held, dict):
            text = str(held.get("text", "held")).removeprefix("held snapshot: ")
            text = text.removeprefix("held update: ")
            if held.get("snapshot"):
                more = f"applied after {held.get('remaining', '?')} more identical snapshot(s)"
            else:
                more = "applied when a snapshot passes the guard"
            lines.append(f"{name}: held: {text} ({more}, or now: streamer release {name})")
        if s.get("stale_since"):
            lines.append(
                f"{name}: stale since {s['stale_since']} "
                f"(max_staleness {s.get('max_staleness', 0):g} s)"
            )
    not_ready = doc.get("not_ready") or []
    if doc.get("ready"):
        lines.append("ready: every stream has received data")
    else:
        lines.append(f"not ready: {', '.join(map(str, not_ready)) or 'no streams running'}")
    return "\n".join(lines)


def format_fleet(doc: dict[str, Any]) -> str:
    """The ``streamer fleet`` table: one row per (gateway, stream), then totals per stream."""
    header = ("STREAM", "GATEWAY", "BY", "STATE", "SINCE", "LAST SEEN", "CALLS")
    rows = [header]
    for g in doc.get("gateways", []):
        rows.append(
            (
                escape(str(g.get("stream", "?")), 40),
                escape(str(g.get("gateway", "?")), 40),
                str(g.get("identity", "?")),
                str(g.get("state", "?")),
                age(float(g.get("since_s", 0)), ""),
                age(float(g.get("last_seen_s", 0))),
                str(g.get("open_calls", 0)),
            )
        )
    lines = table(rows)
    if len(rows) == 1:
        lines.append("(no gateway has called yet)")
    for s in doc.get("streams", []):
        lines.append(
            f"{s['stream']}: {s['in sync']} in sync, {s['delivered']} delivered, "
            f"{s['behind']} behind"
        )
    return "\n".join(lines)
