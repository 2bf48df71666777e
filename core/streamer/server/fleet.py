"""The cloud's view of its gateways: which gateway has applied what, per stream.

No new field on the wire: a Magma-compatible request already carries what is needed. Each
``GetUpdates`` request names the stream and, in ``extra_args``, the digest of what the gateway
has applied (:mod:`streamer.wire.digest`); the gateway is identified by its client certificate when
the server requires one (mTLS), else by ``gatewayId``, else by its peer address.

For every (gateway, stream) the server keeps: the digest last reported, when it was reported,
whether it equals the stream's current digest, since when that has been so, whether a call is
open, and what an open push call has been sent since. States:

- ``in sync``: the digest last reported equals the stream's current one;
- ``delivered``: a push call is open and has been sent everything up to the current data (the
  gateway acknowledges it with its next request's digest);
- ``behind``: neither.

``streamer serve --status-address HOST:PORT`` serves this as JSON (``/status``), Prometheus
text (``/metrics``: gateways per stream and state) and ``/healthz``; ``streamer fleet`` prints
the table (``streamer.cli.status``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["CurrentData", "FleetView", "GatewayStream", "identify"]

_STATES = ("in sync", "delivered", "behind")
# Bound the memory a fleet view may take: gateways that have not been seen for a week and hold
# no call are forgotten first.
MAX_ENTRIES = 200_000
FORGET_AFTER_S = 7 * 24 * 3600


@runtime_checkable
class CurrentData(Protocol):
    def current(self, stream: str) -> tuple[int, str] | None:
        """The stream's (version, digest) now, or None when it does not exist."""


@dataclass
class GatewayStream:
    gateway: str
    identity: str  # "certificate", "gatewayId" or "peer"
    stream: str
    reported: str | None = None  # digest in the last request (None: none sent)
    reported_at: float = 0.0
    last_seen: float = 0.0
    open_calls: int = 0
    delivered_version: int | None = None  # what the open call has been sent up to
    state: str = "behind"
    since: float = 0.0


def identify(
    auth: Mapping[str, Iterable[bytes]] | None, gateway_id: str, peer: str
) -> tuple[str, str]:
    """(identity, how): the client certificate's common name under mTLS, else ``gatewayId``,
    else the peer address."""
    if auth:
        for key in ("x509_common_name", "x509_subject_alternative_name"):
            values = list(auth.get(key) or ())
            if values:
                return values[0].decode("utf-8", "replace"), "certificate"
    if gateway_id:
        return gateway_id, "gatewayId"
    return peer, "peer"


class FleetView:
    """Thread-safe: the server's event loop records, the status endpoint's threads read."""

    def __init__(self, data: CurrentData, *, clock: Callable[[], float] = time.time) -> None:
        self._data = data
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], GatewayStream] = {}

    # -- recording (from the server) -----------------------------------------------------

    def call_started(self, gateway: str, identity: str, stream: str, reported: str | None) -> None:
        now = self._clock()
        with self._lock:
            row = self._row(gateway, identity, stream, now)
            row.reported, row.reported_at, row.last_seen = reported, now, now
            row.open_calls += 1
            row.delivered_version = None
            self._restate(row, now)

    def delivered(self, gateway: str, stream: str, version: int) -> None:
        """O(1): called for every batch pushed; the state is worked out when it is read."""
        with self._lock:
            row = self._rows.get((gateway, stream))
            if row is not None:
                row.delivered_version = version
                row.last_seen = self._clock()

    def call_ended(self, gateway: str, stream: str) -> None:
        now = self._clock()
        with self._lock:
            row = self._rows.get((gateway, stream))
            if row is not None:
                row.open_calls = max(row.open_calls - 1, 0)
                row.last_seen = now
                if not row.open_calls:
                    row.delivered_version = None
                self._restate(row, now)

    def _row(self, gateway: str, identity: str, stream: str, now: float) -> GatewayStream:
        row = self._rows.get((gateway, stream))
        if row is None:
            if len(self._rows) >= MAX_ENTRIES:
                self._forget(now)
            row = self._rows[(gateway, stream)] = GatewayStream(gateway, identity, stream)
            row.since = now
        return row

    def _forget(self, now: float) -> None:
        idle = sorted(
            (r for r in self._rows.values() if not r.open_calls), key=lambda r: r.last_seen
        )
        old = [r for r in idle if now - r.last_seen > FORGET_AFTER_S] or idle[: len(idle) // 10]
        for r in old:
            del self._rows[(r.gateway, r.stream)]

    @staticmethod
    def _state(row: GatewayStream, current: tuple[int, str] | None) -> str:
        if current is None:
            return "behind"
        version, digest = current
        if row.reported is not None and row.reported == digest:
            return "in sync"
        if (
            row.open_calls
            and row.delivered_version is not None
            and row.delivered_version >= version
        ):
            return "delivered"
        return "behind"

    def _restate(
        self, row: GatewayStream, now: float, current: tuple[int, str] | None = None
    ) -> None:
        """``current``: the stream's (version, digest) when the caller already has it."""
        state = self._state(row, current or self._data.current(row.stream))
        if state != row.state:
            row.state, row.since = state, now

    # -- reading (status endpoint) -------------------------------------------------------

    def rows(self) -> list[GatewayStream]:
        """Every (gateway, stream), states brought up to date with the data as it is now."""
        now = self._clock()
        with self._lock:
            # One digest per stream, not one per (gateway, stream): a stream has many gateways.
            current = {stream: self._data.current(stream) for _, stream in self._rows}
            for row in self._rows.values():
                self._restate(row, now, current[row.stream])
            return sorted(
                (GatewayStream(**vars(r)) for r in self._rows.values()),
                key=lambda r: (r.stream, r.gateway),
            )

    def status(self) -> dict[str, Any]:
        now = self._clock()
        rows = self.rows()
        streams: dict[str, dict[str, int]] = {}
        for r in rows:
            counts = streams.setdefault(r.stream, dict.fromkeys(_STATES, 0))
            counts[r.state] += 1
        return {
            "ready": True,
            "not_ready": [],
            "streams": [{"stream": s, **c} for s, c in sorted(streams.items())],
            "gateways": [
                {
                    "gateway": r.gateway,
                    "identity": r.identity,
                    "stream": r.stream,
                    "state": r.state,
                    "since_s": round(now - r.since, 3),
                    "last_seen_s": round(now - r.last_seen, 3),
                    "open_calls": r.open_calls,
                    "reported_digest": r.reported,
                }
                for r in rows
            ],
        }

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        """Prometheus text: ``streamer_fleet_gateways{stream, state}``."""
        doc = self.status()
        lines = [
            "# HELP streamer_fleet_gateways Gateways per stream by sync state "
            "(in sync, delivered = pushed but not yet acknowledged, behind).",
            "# TYPE streamer_fleet_gateways gauge",
        ]
        for s in doc["streams"]:
            name = json.dumps(s["stream"])
            for state in _STATES:
                label = state.replace(" ", "_")
                lines.append(f'streamer_fleet_gateways{{stream={name},state="{label}"}} {s[state]}')
        return ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4; charset=utf-8"
