"""Prometheus metrics, readiness and ``/status`` for the host, fed by the observer hooks.

Needs the optional ``prometheus-client`` (``pip install 'streamer[metrics]'``); ``streamer
check`` reports it missing when ``[metrics] address`` is set. Each :class:`MetricsObserver` owns
its own ``CollectorRegistry`` (never the process-wide one), so two hosts in one process, a test
suite or a reload never collide.

Labels are ``stream`` and ``plugin`` (plus ``kind``, ``reason`` or ``state`` where noted), so the
number of series is bounded by the number of streams: keys and values never become labels.
Nothing here logs or exposes keys or values; ``last_error`` is a short, value-free description.

Hooks run on the event loop thread; scrapes run in the HTTP server's threads. Shared state is
guarded by one lock and every hook does O(1) work under it.
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamer.base.logs import escape
from streamer.client.events import Decision, StreamState
from streamer.client.supervisor import ListenerDeclined
from streamer.host.observers import hookimpl
from streamer.observability.http import ObservabilityServer

if TYPE_CHECKING:
    from streamer.client.guard import Hold
    from streamer.host.config import Config
    from streamer.observability.http import Releaser
    from streamer.wire.streamer_pb2 import DataUpdateBatch

__all__ = [
    "ERROR_KINDS",
    "UPDATE_DURATION_BUCKETS",
    "MetricsObserver",
    "error_kind",
    "start_observability",
    "start_observer",
]

log = logging.getLogger("streamer.observability.metrics")

LABELS = ("stream", "plugin")
ERROR_KINDS = (
    "<RPC status code name>",
    "listener_exception",
    "update_declined",
    "extra_args",
    "report_error_raised",
)
_KIND_OF_EVENT = {
    "update raised": "listener_exception",
    "update declined": "update_declined",
    "get_extra_args failed": "extra_args",
    "report_error raised": "report_error_raised",
}
# Listener events after which a stream is not ready until the listener accepts a batch.
_LISTENER_FAILURES = frozenset(("update raised", "update declined", "get_extra_args failed"))
UPDATE_DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf,
)  # fmt: skip
_MAX_ERROR_TEXT = 200


def error_kind(
    error: BaseException, *, event: str | None = None, update_raised: bool = False
) -> str:
    """The ``kind`` label for an error given to ``report_error``.

    ``event`` (from the ``streamer_error_reported`` hook) decides: a failed call is labelled
    with its status code name, anything else by what the listener did, even when the listener
    raised a gRPC error of its own. Without ``event`` the kind is guessed as before: gRPC
    errors (duck-typed, ``.code()`` returning a ``grpc.StatusCode``) by their code, and
    ``update_raised`` says that the last ``update`` on the stream raised.
    """
    if event is not None:
        if event in _KIND_OF_EVENT:
            return _KIND_OF_EVENT[event]
        return _rpc_code(error) or "UNKNOWN"
    code = _rpc_code(error)
    if code is not None:
        return code
    if isinstance(error, ListenerDeclined):
        return "update_declined"
    return "listener_exception" if update_raised else "extra_args"


def _rpc_code(error: BaseException) -> str | None:
    code = getattr(error, "code", None)
    if not callable(code):
        return None
    try:
        value = code()
    except Exception:  # an RpcError that is not a call
        return None
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None


def _describe(kind: str, error: BaseException) -> str:
    """One short line for ``/status``: what happened, never the data.

    Exception messages from listeners may quote keys or values, so only their type is shown;
    the full message goes to the log at WARNING (``streamer.host.observers.LoggingObserver``).
    """
    if kind in ("listener_exception", "extra_args"):
        text = f"{kind}: {type(error).__name__}"
    elif kind == "update_declined":
        text = f"{kind}: {error}"
    else:
        details = getattr(error, "details", None)
        diagnosis = getattr(error, "diagnosis", None)  # a connection failure, explained
        try:
            more = diagnosis.cause if diagnosis else details() if callable(details) else None
        except Exception:
            more = None
        text = f"{kind}: {more}" if more else kind
    text = escape(" ".join(text.split()))  # no terminal escapes in `streamer status`
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 1] + "…"


@dataclass(slots=True)
class _Stream:
    """What the observer knows about one stream. Counts are cumulative for the host's life,
    like the counters; ``last_batch_at`` and ``started_at`` restart with the stream."""

    plugin: str
    started_at: float
    state: StreamState = StreamState.STOPPED
    last_batch_at: float | None = None
    synced: bool = False  # a call was accepted (headers or data) since the stream started
    batches: int = 0
    updates: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    backoff: float = 0.0
    update_raised: bool = False
    ended: bool = False  # stream_stopped seen since the latest stream_started
    removed: bool = False  # ended from outside (reload or shutdown), not by its listener
    failing: str | None = None  # the listener failure not yet followed by an accepted batch
    failures: int = 0  # listener failures in a row (reset by an accepted batch)
    hold: Hold | None = None  # the batch the guard holds now
    held_at: float | None = None
    synced_at: float | None = None  # last applied batch or confirmed sync (None: not since start)


class MetricsObserver:
    """Hook implementation that keeps Prometheus metrics and the ``/status`` document.

    ``owners`` maps stream -> plugin name (the host's own dict; read when a stream starts).
    ``staleness`` maps stream -> its ``max_staleness`` in seconds (the host's dict; absent:
    never stale). ``clock`` is monotonic seconds, ``wall`` the time of day for "stale since"
    (both injectable for tests).

    A stream is *in sync* while a call is open and nothing is held, and at each applied batch
    or call that ended with nothing to apply; it is *stale* when that was longer than its
    ``max_staleness`` ago (since it started, if never).
    """

    def __init__(
        self,
        owners: Mapping[str, str] | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        staleness: Mapping[str, float] | None = None,
    ) -> None:
        self.owners: Mapping[str, str] = owners if owners is not None else {}
        self.staleness: Mapping[str, float] = staleness if staleness is not None else {}
        self._wall = wall
        self.registry = registry if registry is not None else CollectorRegistry()
        self.server: ObservabilityServer | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._announced: tuple[str, ...] | None = None  # from streamer_host_started
        self._stopping = False
        r = self.registry
        self.batches = Counter(
            "streamer_batches", "DataUpdateBatch messages received.", LABELS, registry=r
        )
        self.updates = Counter(
            "streamer_updates", "DataUpdate entries received (summed over batches).", LABELS,
            registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "streamer_errors",
            "Errors given to report_error, by kind: an RPC status code name (UNAVAILABLE, ...), "
            "listener_exception (update raised), update_declined (update returned non-True), "
            "extra_args (get_extra_args failed).",
            (*LABELS, "kind"),
            registry=r,
        )
        self.reconnects = Counter(
            "streamer_reconnects",
            "New GetUpdates calls scheduled, by reason: interval (poll cadence) or backoff.",
            (*LABELS, "reason"),
            registry=r,
        )
        self.holds = Counter(
            "streamer_holds",
            "Batches held by the mass-change guard (each hold once, not each time the cloud "
            "serves the held snapshot again).",
            LABELS,
            registry=r,
        )
        self.update_duration = Histogram(
            "streamer_update_duration_seconds",
            "Time the listener's update() took.",
            LABELS,
            buckets=UPDATE_DURATION_BUCKETS,
            registry=r,
        )
        r.register(_StreamCollector(self))

    # -- hooks ---------------------------------------------------------------------------

    @hookimpl
    def streamer_stream_started(self, stream: str) -> None:
        plugin = self.owners.get(stream, "")
        now = self._clock()
        with self._lock:
            old = self._streams.get(stream)
            if old is None or old.plugin != plugin:
                self._streams[stream] = _Stream(plugin=plugin, started_at=now)
            else:
                old.started_at, old.last_batch_at, old.synced = now, None, False
                old.backoff, old.update_raised = 0.0, False
                old.ended = old.removed = False
                old.failing, old.failures = None, 0
                old.hold = old.held_at = old.synced_at = None

    @hookimpl
    def streamer_state_changed(self, stream: str, state: StreamState) -> None:
        with self._lock:
            s = self._get(stream)
            if s.state is StreamState.STREAMING and s.hold is None:
                s.synced_at = self._clock()  # in sync while the call was open
            s.state = state
            if state is StreamState.STREAMING:
                s.synced = True
                if s.failing == "get_extra_args failed":  # it answered this time
                    s.failing, s.failures = None, 0

    @hookimpl
    def streamer_batch_received(self, stream: str, batch: DataUpdateBatch) -> None:
        n = len(batch.updates)
        now = self._clock()
        with self._lock:
            s = self._get(stream)
            s.batches += 1
            s.updates += n
            s.last_batch_at = now
            s.synced = True
            plugin = s.plugin
        self.batches.labels(stream, plugin).inc()
        if n:
            self.updates.labels(stream, plugin).inc(n)

    @hookimpl
    def streamer_update_done(self, stream: str, duration: float, verdict: bool | None) -> None:
        with self._lock:
            s = self._get(stream)
            s.update_raised = verdict is None
            if verdict:
                s.synced_at = self._clock()
                s.backoff = 0.0
                s.failing, s.failures = None, 0
            plugin = s.plugin
        self.update_duration.labels(stream, plugin).observe(max(duration, 0.0))

    @hookimpl
    def streamer_error_reported(
        self, stream: str, error: BaseException, decision: Decision, event: str
    ) -> None:
        now = self._clock()
        with self._lock:
            s = self._get(stream)
            kind = error_kind(error, event=event)
            s.update_raised = False
            if event in _LISTENER_FAILURES:
                s.failing = event
                s.failures += 1
            s.errors += 1
            s.last_error = _describe(kind, error)
            s.last_error_at = now
            plugin = s.plugin
        self.errors.labels(stream, plugin, kind).inc()

    @hookimpl
    def streamer_reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        with self._lock:
            s = self._get(stream)
            if reason == "backoff":
                s.backoff = delay
            plugin = s.plugin
        self.reconnects.labels(stream, plugin, reason).inc()

    @hookimpl
    def streamer_batch_held(self, stream: str, hold: Hold) -> None:
        with self._lock:
            s = self._get(stream)
            new = s.hold is None
            if new or hold.seen == 1:
                s.held_at = self._clock()
            s.hold = hold
            plugin = s.plugin
        if new:
            self.holds.labels(stream, plugin).inc()

    @hookimpl
    def streamer_hold_ended(self, stream: str, how: str) -> None:
        with self._lock:
            s = self._get(stream)
            s.hold = s.held_at = None

    @hookimpl
    def streamer_in_sync(self, stream: str) -> None:
        with self._lock:
            self._get(stream).synced_at = self._clock()

    @hookimpl
    def streamer_stream_stopped(self, stream: str, error: BaseException | None) -> None:
        with self._lock:
            s = self._get(stream)
            s.state = StreamState.STOPPED
            s.ended, s.removed = True, error is None

    @hookimpl
    def streamer_host_started(self, streams: list[str]) -> None:
        with self._lock:
            self._announced = tuple(streams)

    @hookimpl
    def streamer_host_stopping(self) -> None:
        with self._lock:
            self._stopping = True
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def _get(self, stream: str) -> _Stream:
        s = self._streams.get(stream)
        if s is None:  # an event before stream_started (observer registered late)
            s = self._streams[stream] = _Stream(self.owners.get(stream, ""), self._clock())
        return s

    # -- what the endpoint serves ----------------------------------------------------------

    def render_metrics(self, accept: str = "") -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def rows(self) -> list[tuple[str, _Stream, float]]:
        """(stream, a copy of its record, now), sorted: every stream seen, except those that a
        reload removed (stopped from outside and no longer announced by the host)."""
        now = self._clock()
        with self._lock:
            announced = None if self._announced is None else set(self._announced)
            return [
                (name, _copy(s), now)
                for name, s in sorted(self._streams.items())
                if announced is None or name in announced or not s.removed
            ]

    def not_ready(self) -> list[str]:
        """Enabled streams that are not in sync: no call accepted by the server since they
        started (a server whose data matches the sink's digest sends no batch, so having
        received one is not required), stopped, or failing: the listener's latest failure
        (update raised or declined, get_extra_args failed) has not been followed by an
        accepted batch (for get_extra_args: by a call the server accepted). A crash-looping
        stream is therefore never ready, whatever its server does. A stream whose batch the
        guard holds, or that is stale (``max_staleness``), is not ready either."""
        return sorted(self.reasons())

    def reasons(self) -> dict[str, str]:
        """:meth:`not_ready`'s streams, each with why (what ``/readyz`` answers)."""
        now, wall = self._clock(), self._wall()
        with self._lock:
            if self._stopping:
                return {"(host is stopping)": "the host is shutting down"}
            if self._announced is not None:
                expected: Iterable[str] = self._announced
            else:
                expected = [n for n, s in self._streams.items() if not s.removed]
            out: dict[str, str] = {}
            for name in expected:
                why = self._why_not_ready(name, self._streams.get(name), now, wall)
                if why:
                    out[name] = why
            if not out and not expected:
                out["(no streams running)"] = "no streams running"
            return out

    def _why_not_ready(self, name: str, s: _Stream | None, now: float, wall: float) -> str:
        """'' when ready (lock held)."""
        if s is None:
            return "not started"
        if s.ended:
            return "stopped"
        if s.failing is not None:
            return f"failing: {s.failing}"
        if not s.synced:
            return "no call accepted yet"
        if s.hold is not None:
            return s.hold.describe()
        stale = self._stale_since(name, s, now, wall)
        if stale is not None:
            return f"stale since {stale} (max_staleness {self.staleness[name]:g} s)"
        return ""

    def in_sync_age(self, s: _Stream, now: float) -> float:
        if s.state is StreamState.STREAMING and s.hold is None:
            return 0.0
        since = s.synced_at if s.synced_at is not None else s.started_at
        return max(now - since, 0.0)

    def _stale_since(self, name: str, s: _Stream, now: float, wall: float) -> str | None:
        """When the stream was last in sync (ISO 8601, UTC), if that is longer ago than its
        max_staleness; else None."""
        limit = self.staleness.get(name)
        if limit is None or s.ended:
            return None
        age = self.in_sync_age(s, now)
        if age <= limit:
            return None
        return _iso(wall - age)

    def status(self) -> dict[str, Any]:
        streams = []
        wall = self._wall()
        for name, s, now in self.rows():
            hold = s.hold
            stale = self._stale_since(name, s, now, wall)
            streams.append(
                {
                    "stream": name,
                    "plugin": s.plugin,
                    "state": s.state.value,
                    "last_batch_age_s": _round(now - s.last_batch_at)
                    if s.last_batch_at is not None
                    else None,
                    "batches": s.batches,
                    "updates": s.updates,
                    "errors": s.errors,
                    "last_error": s.last_error,
                    "last_error_age_s": _round(now - s.last_error_at)
                    if s.last_error_at is not None
                    else None,
                    "backoff": _round(s.backoff),
                    "failing": s.failing,
                    "failures_in_a_row": s.failures,
                    "held": None
                    if hold is None
                    else {
                        "text": hold.describe(),
                        "snapshot": hold.resync,
                        "would_delete": hold.would_delete,
                        "held_keys": hold.held_keys,
                        "served": hold.seen,
                        "remaining": hold.remaining,
                        "age_s": _round(now - s.held_at) if s.held_at is not None else None,
                    },
                    "in_sync_age_s": _round(self.in_sync_age(s, now)),
                    "max_staleness": self.staleness.get(name),
                    "stale_since": stale,
                }
            )
        reasons = self.reasons()
        not_ready = sorted(reasons)
        return {
            "ready": not not_ready,
            "not_ready": not_ready,
            "reasons": reasons,
            "streams": streams,
        }


def _iso(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _copy(s: _Stream) -> _Stream:
    return _Stream(**{f: getattr(s, f) for f in _Stream.__dataclass_fields__})


def _round(seconds: float) -> float:
    return round(max(seconds, 0.0), 3)


class _StreamCollector(Collector):
    """Per-stream gauges computed at scrape time (ages need the current time)."""

    def __init__(self, observer: MetricsObserver) -> None:
        self._observer = observer

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "streamer_stream_state",
            "1 for the stream's current state (connecting, streaming, waiting, stopped), "
            "0 for the others.",
            labels=(*LABELS, "state"),
        )
        age = GaugeMetricFamily(
            "streamer_seconds_since_last_batch",
            "Seconds since the stream's last batch, or since it started if none arrived yet.",
            labels=LABELS,
        )
        backoff = GaugeMetricFamily(
            "streamer_backoff_seconds",
            "Last backoff delay scheduled after an error; 0 once update() accepts data.",
            labels=LABELS,
        )
        held = GaugeMetricFamily(
            "streamer_held_would_delete_keys",
            "Keys the batch the mass-change guard holds would delete; 0 when nothing is held.",
            labels=LABELS,
        )
        in_sync = GaugeMetricFamily(
            "streamer_seconds_since_in_sync",
            "Seconds since the stream last applied a batch or confirmed it is in sync (0 while "
            "a call is open and nothing is held).",
            labels=LABELS,
        )
        ready = GaugeMetricFamily(
            "streamer_ready",
            "1 when every enabled stream has had a call accepted since it started and none is "
            "failing (its listener's latest failure not yet followed by an accepted batch).",
        )
        for name, s, now in self._observer.rows():
            for st in StreamState:
                state.add_metric((name, s.plugin, st.value), 1.0 if st is s.state else 0.0)
            since = s.last_batch_at if s.last_batch_at is not None else s.started_at
            age.add_metric((name, s.plugin), max(now - since, 0.0))
            backoff.add_metric((name, s.plugin), s.backoff)
            would = s.hold.would_delete if s.hold is not None else 0
            held.add_metric((name, s.plugin), float(would))
            in_sync.add_metric((name, s.plugin), self._observer.in_sync_age(s, now))
        ready.add_metric((), 0.0 if self._observer.not_ready() else 1.0)
        yield from (state, age, backoff, held, in_sync, ready)


def start_observability(
    config: Config,
    owners: Mapping[str, str],
    *,
    staleness: Mapping[str, float] | None = None,
    releaser: Releaser | None = None,
) -> tuple[MetricsObserver, ObservabilityServer]:
    """Create the metrics observer and start the HTTP endpoint on ``[metrics] address``;
    ``releaser`` answers ``POST /release/STREAM`` (refused off loopback unless
    ``[metrics] remote_release = true``).

    The observer stops the server in ``streamer_host_stopping``. Raises ``LoadFailed`` when the
    address cannot be bound (in use, not a local address).
    """
    from streamer.host.checks import LoadFailed
    from streamer.host.config import split_address

    address = config.metrics.address
    parsed = split_address(address) if address else None
    if parsed is None:
        raise LoadFailed([f"{config.path}: metrics.address: expected host:port, got {address!r}"])
    observer = MetricsObserver(owners, staleness=staleness)
    try:
        server = ObservabilityServer(
            observer, *parsed, releaser=releaser, remote_release=config.metrics.remote_release
        )
    except OSError as exc:
        raise LoadFailed(
            [f"{config.path}: metrics.address: cannot listen on {address}: {exc.strerror or exc}"]
        ) from exc
    server.start()
    observer.server = server
    log.info("metrics and health on http://%s (/metrics /healthz /readyz /status)", server.address)
    if releaser is not None and not server.release_allowed:
        log.info(
            "POST /release refused: the endpoint listens off loopback (set [metrics] "
            "remote_release = true to allow it)"
        )
    return observer, server


def start_observer(
    config: Config,
    owners: Mapping[str, str],
    staleness: Mapping[str, float] | None = None,
    releaser: Releaser | None = None,
) -> MetricsObserver:
    """:data:`streamer.host.host.ObservabilityStarter`: start the endpoint, return the observer."""
    observer, _ = start_observability(config, owners, staleness=staleness, releaser=releaser)
    return observer
