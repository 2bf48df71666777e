"""The client side of the observability endpoints: ``streamer status`` and ``streamer fleet``.

Standard library only, so ``streamer status`` works without gRPC or prometheus-client.
"""

from __future__ import annotations

import json
from typing import Any

from streamer.base.errors import StreamerError
from streamer.base.logs import escape
from streamer.cli.tables import age, table

__all__ = ["HostUnreachable", "fetch_status", "format_fleet", "format_status", "query_address"]


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
                age(s.get("last_batch_age_s")),
                str(s.get("updates", 0)),
                str(s.get("errors", 0)),
                str(s.get("last_error") or "-"),
            )
        )
    lines = table(rows, free_last=True)
    if len(rows) == 1:
        lines.append("(no streams)")
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
