"""Observers (pluggy): cross-cutting watchers of stream events.

One word for one thing: an *observer* is a plugin that watches stream events; the events it can
implement are declared in :class:`ObserverSpecs` (pluggy calls them hooks, hence ``hookimpl``).
0.1 called the specs ``HookSpecs`` and this module ``streamer.hooks``; both still work, with a
``DeprecationWarning``.

Observers are enabled by name (``observers = [...]`` in streamer.toml) from the
``streamer.observers`` and ``streamer.hooks`` entry-point groups (the entry point is a module or
object with ``@hookimpl`` methods, or a factory called with the observer's ``[observer.NAME]``
table). The logging and metrics observers shipped with the core use the same hooks.

Implementations are called in pluggy's order (``tryfirst`` ones, then the others from the last
registered to the first, then ``trylast`` ones), each on its own: one that raises (anything but
cancellation, ``SystemExit`` included) is logged with its name and never breaks a stream or keeps
the other observers from seeing the event. Wrappers (``wrapper=True`` / ``hookwrapper=True``)
cannot wrap calls made one by one, so they are refused when the observer is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

from streamer.base.logs import escape
from streamer.client.events import Decision, StreamState

if TYPE_CHECKING:
    from streamer.client.guard import Hold
    from streamer.wire.streamer_pb2 import DataUpdateBatch

__all__ = [
    "PROJECT",
    "ObserverSpecs",
    "PluggyObserver",
    "hookimpl",
    "hookspec",
    "make_plugin_manager",
    "wrapper_problems",
]

PROJECT = "streamer"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
log = logging.getLogger("streamer.hooks")


class ObserverSpecs:
    """The events an observer may implement (with ``@hookimpl``); an implementation may accept
    any subset of the arguments."""

    @hookspec
    def streamer_stream_started(self, stream: str) -> None:
        """A stream's supervisor started."""

    @hookspec
    def streamer_stream_stopped(self, stream: str, error: BaseException | None) -> None:
        """A stream ended: ``error`` is the listener's chosen error, None if removed."""

    @hookspec
    def streamer_state_changed(self, stream: str, state: StreamState) -> None:
        """connecting -> streaming -> waiting -> ... -> stopped."""

    @hookspec
    def streamer_batch_received(self, stream: str, batch: DataUpdateBatch) -> None:
        """A batch arrived, before ``update`` runs. Do not keep or modify it."""

    @hookspec
    def streamer_update_done(self, stream: str, duration: float, verdict: bool | None) -> None:
        """``update`` finished: seconds it took, its answer (None = it raised)."""

    @hookspec
    def streamer_error_reported(
        self, stream: str, error: BaseException, decision: Decision, event: str
    ) -> None:
        """An error went to ``report_error``; ``decision`` is continue or stop. ``event`` is
        what happened: "call failed" (GetUpdates failed or could not connect), "update raised",
        "update declined", "get_extra_args failed", or "report_error raised" (then ``error`` is
        what report_error raised and the stream stops)."""

    @hookspec
    def streamer_reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        """A new call will be opened after ``delay`` s; reason "interval" or "backoff"."""

    @hookspec
    def streamer_batch_held(self, stream: str, hold: Hold) -> None:
        """The mass-change guard held a batch: the listener did not see it. ``hold`` says what
        it would delete (``hold.describe()``), since when and how often the cloud has served
        it (``hold.seen``); called again each time it is served again."""

    @hookspec
    def streamer_hold_ended(self, stream: str, how: str) -> None:
        """A hold ended: "confirmed" (the cloud insisted; applied), "released" (by an
        operator; applied now), or "superseded" (a later batch passed the guard)."""

    @hookspec
    def streamer_in_sync(self, stream: str) -> None:
        """A call ended with nothing left to apply: the stream holds what the cloud serves."""

    @hookspec
    def streamer_host_started(self, streams: list[str]) -> None:
        """The host started these streams (also after a reload)."""

    @hookspec
    def streamer_host_stopping(self) -> None:
        """The host is shutting down; release resources."""


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(ObserverSpecs)
    return pm


def wrapper_problems(pm: pluggy.PluginManager, plugin: object | None = None) -> list[str]:
    """One line per wrapper implementation registered in ``pm`` (of ``plugin`` only, if given).

    Observers are called one by one so that a failing one cannot hurt the others; a wrapper,
    which pluggy runs around the other implementations, has nothing to wrap, so it is refused
    rather than accepted and never called."""
    out = []
    callers = (pm.get_hookcallers(plugin) or []) if plugin is not None else _callers(pm)
    for caller in callers:
        for impl in caller.get_hookimpls():
            if plugin is not None and impl.plugin is not plugin:
                continue
            if impl.hookwrapper or getattr(impl, "wrapper", False):
                kind = "hookwrapper=True" if impl.hookwrapper else "wrapper=True"
                out.append(
                    f"observer {impl.plugin_name!r}: {caller.name} is a {kind} implementation; "
                    "streamer calls each observer on its own, so wrappers are not supported "
                    "(drop the wrapper option and observe the event directly)"
                )
    return out


def _callers(pm: pluggy.PluginManager) -> list[Any]:
    return [getattr(pm.hook, name) for name in dir(pm.hook) if name.startswith("streamer_")]


class PluggyObserver:
    """Adapts a pluggy PluginManager to the client's StreamObserver protocol."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def call(self, hook_name: str, **kwargs: Any) -> None:
        """Call each implementation of ``hook_name`` separately, in pluggy's order, isolating
        failures. Wrappers are refused at load time (:func:`wrapper_problems`); should one be
        registered anyway, it is not called and an error says so."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # pluggy calls the list from its end
            if impl.hookwrapper or getattr(impl, "wrapper", False):
                log.error("observer %r: %s is a wrapper; not called", impl.plugin_name, hook_name)
                continue
            try:
                impl.function(*[kwargs[name] for name in impl.argnames])
            except asyncio.CancelledError:
                raise
            except BaseException:
                log.exception(
                    "observer %r failed in %s (stream %r); ignored",
                    impl.plugin_name,
                    hook_name,
                    kwargs.get("stream"),
                )

    def stream_started(self, stream: str) -> None:
        self.call("streamer_stream_started", stream=stream)

    def stream_stopped(self, stream: str, error: BaseException | None) -> None:
        self.call("streamer_stream_stopped", stream=stream, error=error)

    def state_changed(self, stream: str, state: StreamState) -> None:
        self.call("streamer_state_changed", stream=stream, state=state)

    def batch_received(self, stream: str, batch: DataUpdateBatch) -> None:
        self.call("streamer_batch_received", stream=stream, batch=batch)

    def update_done(self, stream: str, duration: float, verdict: bool | None) -> None:
        self.call("streamer_update_done", stream=stream, duration=duration, verdict=verdict)

    def error_reported(
        self, stream: str, error: BaseException, decision: Decision, event: str
    ) -> None:
        self.call(
            "streamer_error_reported", stream=stream, error=error, decision=decision, event=event
        )

    def reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        self.call("streamer_reconnect_scheduled", stream=stream, delay=delay, reason=reason)

    def batch_held(self, stream: str, hold: Hold) -> None:
        self.call("streamer_batch_held", stream=stream, hold=hold)

    def hold_ended(self, stream: str, how: str) -> None:
        self.call("streamer_hold_ended", stream=stream, how=how)

    def in_sync(self, stream: str) -> None:
        self.call("streamer_in_sync", stream=stream)


CALL_FAILED = "call failed"
REPORT_ERROR_RAISED = "report_error raised"
REPEAT_WINDOW = 60.0
"""Seconds during which the same listener error on a stream is counted, not logged again."""


@dataclass(slots=True)
class _Repeats:
    signature: tuple[str, ...]
    logged_at: float
    count: int = 0  # occurrences since the last line


def _signature(event: str, error: BaseException) -> tuple[str, ...]:
    """What makes two listener errors "the same": the event, the type and where it was raised
    (the innermost frame), so a message holding a counter still counts as a repeat."""
    tb = error.__traceback__
    cause = error.__cause__
    if tb is None and cause is not None:  # a ListenerFault: where its cause was raised
        tb = cause.__traceback__
    where = ""
    if tb is not None:
        last = traceback.extract_tb(tb)[-1]
        where = f"{last.filename}:{last.lineno}"
    else:
        where = str(error)
    return (event, type(error).__qualname__, where)


class LoggingObserver:
    """The core's log lines: one per state change and error at INFO/WARNING, one per batch at
    DEBUG. Never logs keys or values above DEBUG, and never values at all.

    A failed call is logged once per attempt (WARNING). A listener error (update raised or
    declined, get_extra_args failed) is logged at WARNING with its traceback; the same error
    again on the same stream within ``repeat_window`` seconds is counted, and the next line
    about it (or the stream's recovery, or its end) says "repeated N times". Text that comes
    from outside (gRPC details, exception messages, stream names) is escaped
    (:func:`streamer.base.logs.escape`).
    """

    def __init__(
        self,
        owners: dict[str, str] | None = None,
        *,
        repeat_window: float = REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owners = owners if owners is not None else {}  # stream -> plugin name
        self._healthy: set[str] = set()
        self._repeats: dict[str, _Repeats] = {}
        self._holding: dict[str, str] = {}  # stream -> digest of what it holds ("" incremental)
        self._window = repeat_window
        self._clock = clock

    def _log(self, stream: str) -> logging.Logger:
        plugin = self.owners.get(stream)
        return logging.getLogger(
            f"streamer.plugin.{plugin}" if plugin else "streamer.client.stream"
        )

    def _flush(self, stream: str, why: str) -> None:
        pending = self._repeats.pop(stream, None)
        if pending is not None and pending.count:
            self._log(stream).warning(
                "stream %s: the last error (%s) repeated %d more time(s) before %s",
                escape(stream),
                pending.signature[0],
                pending.count,
                why,
            )

    @hookimpl
    def streamer_state_changed(self, stream: str, state: StreamState) -> None:
        """INFO only when a stream becomes healthy (first data, or data after errors): a poll
        stream's normal connecting/streaming/waiting cycle is DEBUG noise."""
        if state is StreamState.STREAMING and stream not in self._healthy:
            self._healthy.add(stream)
            self._log(stream).info("stream %s: streaming", escape(stream))
        elif state is not StreamState.STOPPED:
            self._log(stream).debug("stream %s: %s", escape(stream), state.value)

    @hookimpl
    def streamer_batch_received(self, stream: str, batch: DataUpdateBatch) -> None:
        logger = self._log(stream)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "stream %s: batch of %d updates (resync=%s)",
                escape(stream),
                len(batch.updates),
                batch.resync,
            )

    @hookimpl
    def streamer_update_done(self, stream: str, verdict: bool | None) -> None:
        if verdict is True and stream in self._repeats:
            self._flush(stream, "the listener accepted a batch")

    @hookimpl
    def streamer_error_reported(
        self, stream: str, error: BaseException, decision: Decision, event: str
    ) -> None:
        self._healthy.discard(stream)
        logger = self._log(stream)
        name = escape(stream)
        if event == REPORT_ERROR_RAISED:  # the stream runner logged it, with its traceback
            return
        if event == CALL_FAILED:
            logger.warning(
                "stream %s: %s; listener decided to %s",
                name,
                escape(describe_error(error)),
                decision.value,
            )
            return
        now = self._clock()
        signature = _signature(event, error)
        pending = self._repeats.get(stream)
        if (
            pending is not None
            and pending.signature == signature
            and now - pending.logged_at < self._window
        ):
            pending.count += 1
            return
        if pending is not None and pending.signature != signature:
            self._flush(stream, "a different error")
            pending = None
        repeated = ""
        if pending is not None and pending.count:
            repeated = (
                f" (repeated {pending.count} time(s) in the last {now - pending.logged_at:.0f} s)"
            )
        self._repeats[stream] = _Repeats(signature, now)
        logger.warning(
            "stream %s: %s: %s%s; listener decided to %s",
            name,
            event,
            escape(f"{type(error).__name__}: {error}"),
            repeated,
            decision.value,
            exc_info=(type(error), error, error.__traceback__)
            if event != "update declined"  # a declined update has no traceback to show
            else None,
        )

    @hookimpl
    def streamer_reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        logger = self._log(stream)
        level = logging.INFO if reason == "backoff" else logging.DEBUG
        logger.log(level, "stream %s: next call in %.1f s (%s)", escape(stream), delay, reason)

    @hookimpl
    def streamer_batch_held(self, stream: str, hold: Hold) -> None:
        """One WARNING per hold (the stream going from applying to holding); a different
        snapshot replacing the held one is INFO, the same one served again DEBUG."""
        logger = self._log(stream)
        before = self._holding.get(stream)
        self._holding[stream] = hold.digest
        if before is None:
            until = (
                f"the cloud serves the same snapshot {hold.remaining} more time(s)"
                if hold.resync
                else "a snapshot passes the guard"
            )
            logger.warning(
                "stream %s: %s; the listener keeps its data until %s or an operator runs "
                "`streamer release %s`",
                escape(stream),
                hold.describe(),
                until,
                escape(stream),
            )
        elif before != hold.digest or hold.seen == 1:
            logger.info("stream %s: now %s", escape(stream), hold.describe())
        else:
            logger.debug("stream %s: held snapshot served again (%d)", escape(stream), hold.seen)

    @hookimpl
    def streamer_hold_ended(self, stream: str, how: str) -> None:
        if self._holding.pop(stream, None) is None:
            return
        text = {
            "confirmed": "the cloud served the held snapshot again: applied",
            "released": "held batch released by an operator",
            "superseded": "a later batch passed the guard; the held one is dropped",
        }.get(how, how)
        self._log(stream).info("stream %s: %s", escape(stream), text)

    @hookimpl
    def streamer_stream_stopped(self, stream: str, error: BaseException | None) -> None:
        self._holding.pop(stream, None)
        self._healthy.discard(stream)
        self._flush(stream, "the stream stopped")
        if error is None:
            self._log(stream).info("stream %s: stopped", escape(stream))
        else:
            self._log(stream).error(
                "stream %s: stopped by its listener: %s",
                escape(stream),
                escape(describe_error(error)),
            )


def describe_error(error: BaseException) -> str:
    """One line for an error; for gRPC errors the status code and details."""
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if callable(code) and callable(details):
        try:
            c = code()
            # StreamRpcError: a connection failure explained in this project's words
            diagnosis = getattr(error, "diagnosis", None)
            shown = diagnosis if diagnosis is not None else details()
            text = f"RPC failed: {getattr(c, 'name', c)}: {shown}"
        except Exception:  # a non-call RpcError
            pass
        else:
            if diagnosis is not None:
                return text
            hint = getattr(error, "hint", "")  # StreamRpcError: e.g. which limit to raise
            return f"{text} ({hint})" if hint else text
    return f"{type(error).__name__}: {error}"


def __getattr__(name: str) -> Any:
    if name == "HookSpecs":  # the 0.1 name
        import warnings

        warnings.warn(
            "streamer HookSpecs is now ObserverSpecs (the old name goes in 0.4)",
            DeprecationWarning,
            stacklevel=2,
        )
        return ObserverSpecs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
