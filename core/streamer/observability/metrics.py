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
    from streamer.host.config import Config
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


class MetricsObserver:
    """Hook implementation that keeps Prometheus metrics and the ``/status`` document.

    ``owners`` maps stream -> plugin name (the host's own dict; read when a stream starts).
    ``clock`` is monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        owners: Mapping[str, str] | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owners: Mapping[str, str] = owners if owners is not None else {}
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

    @hookimpl
    def streamer_state_changed(self, stream: str, state: StreamState) -> None:
        with self._lock:
            s = self._get(stream)
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
        stream is therefore never ready, whatever its server does."""
        with self._lock:
            if self._stopping:
                return ["(host is stopping)"]
            if self._announced is not None:
                expected: Iterable[str] = self._announced
            else:
                expected = [n for n, s in self._streams.items() if not s.removed]
            out = []
            for name in expected:
                s = self._streams.get(name)
                if s is None or not s.synced or s.ended or s.failing is not None:
                    out.append(name)
            if not out and not expected:
                out.append("(no streams running)")
            return sorted(out)

    def status(self) -> dict[str, Any]:
        streams = []
        for name, s, now in self.rows():
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
                }
            )
        not_ready = self.not_ready()
        return {"ready": not not_ready, "not_ready": not_ready, "streams": streams}


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
        ready.add_metric((), 0.0 if self._observer.not_ready() else 1.0)
        yield from (state, age, backoff, ready)


def start_observability(
    config: Config, owners: Mapping[str, str]
) -> tuple[MetricsObserver, ObservabilityServer]:
    """Create the metrics observer and start the HTTP endpoint on ``[metrics] address``.

    The observer stops the server in ``streamer_host_stopping``. Raises ``LoadFailed`` when the
    address cannot be bound (in use, not a local address).
    """
    from streamer.host.checks import LoadFailed
    from streamer.host.config import split_address

    address = config.metrics.address
    parsed = split_address(address) if address else None
    if parsed is None:
        raise LoadFailed([f"{config.path}: metrics.address: expected host:port, got {address!r}"])
    observer = MetricsObserver(owners)
    try:
        server = ObservabilityServer(observer, *parsed)
    except OSError as exc:
        raise LoadFailed(
            [f"{config.path}: metrics.address: cannot listen on {address}: {exc.strerror or exc}"]
        ) from exc
    server.start()
    observer.server = server
    log.info("metrics and health on http://%s (/metrics /healthz /readyz /status)", server.address)
    return observer, server


def start_observer(config: Config, owners: Mapping[str, str]) -> MetricsObserver:
    """:data:`streamer.host.host.ObservabilityStarter`: start the endpoint, return the observer."""
    observer, _ = start_observability(config, owners)
    return observer
