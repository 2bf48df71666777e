"""Observer hooks (pluggy): cross-cutting watchers of stream events.

Observers are enabled by name from the ``streamer.hooks`` entry-point group (the entry point is a
module or object with ``@hookimpl`` methods, or a factory called with the observer's config
table). The logging and metrics observers shipped with the core use the same hooks.

Every implementation is called on its own: one that raises is logged with its name and never
breaks a stream or keeps the other observers from seeing the event.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pluggy

from streamer.events import Decision, StreamState

if TYPE_CHECKING:
    from streamer.proto.streamer_pb2 import DataUpdateBatch

__all__ = [
    "PROJECT",
    "HookSpecs",
    "PluggyObserver",
    "hookimpl",
    "hookspec",
    "make_plugin_manager",
]

PROJECT = "streamer"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
log = logging.getLogger("streamer.hooks")


class HookSpecs:
    """Hook specifications. Implementations may accept any subset of the arguments."""

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
        self, stream: str, error: BaseException, decision: Decision
    ) -> None:
        """An error went to ``report_error``; ``decision`` is continue or stop."""

    @hookspec
    def streamer_reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        """A new call will be opened after ``delay`` s; reason "interval" or "backoff"."""

    @hookspec
    def streamer_host_started(self, streams: list[str]) -> None:
        """The host started these streams (also after a reload)."""

    @hookspec
    def streamer_host_stopping(self) -> None:
        """The host is shutting down; release resources."""


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    return pm


class PluggyObserver:
    """Adapts a pluggy PluginManager to the client's StreamObserver protocol."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def call(self, hook_name: str, **kwargs: Any) -> None:
        """Call each implementation of ``hook_name`` separately, isolating failures."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            try:
                impl.function(*[kwargs[name] for name in impl.argnames])
            except Exception:
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

    def error_reported(self, stream: str, error: BaseException, decision: Decision) -> None:
        self.call("streamer_error_reported", stream=stream, error=error, decision=decision)

    def reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        self.call("streamer_reconnect_scheduled", stream=stream, delay=delay, reason=reason)


class LoggingObserver:
    """The core's log lines: one per state change and error at INFO/WARNING, one per batch at
    DEBUG. Never logs keys or values above DEBUG, and never values at all."""

    def __init__(self, owners: dict[str, str] | None = None) -> None:
        self.owners = owners if owners is not None else {}  # stream -> plugin name
        self._healthy: set[str] = set()

    def _log(self, stream: str) -> logging.Logger:
        plugin = self.owners.get(stream)
        return logging.getLogger(f"streamer.plugin.{plugin}" if plugin else "streamer.stream")

    @hookimpl
    def streamer_state_changed(self, stream: str, state: StreamState) -> None:
        """INFO only when a stream becomes healthy (first data, or data after errors): a poll
        stream's normal connecting/streaming/waiting cycle is DEBUG noise."""
        if state is StreamState.STREAMING and stream not in self._healthy:
            self._healthy.add(stream)
            self._log(stream).info("stream %s: streaming", stream)
        elif state is not StreamState.STOPPED:
            self._log(stream).debug("stream %s: %s", stream, state.value)

    @hookimpl
    def streamer_batch_received(self, stream: str, batch: DataUpdateBatch) -> None:
        logger = self._log(stream)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "stream %s: batch of %d updates (resync=%s)",
                stream,
                len(batch.updates),
                batch.resync,
            )

    @hookimpl
    def streamer_error_reported(
        self, stream: str, error: BaseException, decision: Decision
    ) -> None:
        self._healthy.discard(stream)
        self._log(stream).warning(
            "stream %s: %s; listener decided to %s", stream, describe_error(error), decision.value
        )

    @hookimpl
    def streamer_reconnect_scheduled(self, stream: str, delay: float, reason: str) -> None:
        logger = self._log(stream)
        level = logging.INFO if reason == "backoff" else logging.DEBUG
        logger.log(level, "stream %s: next call in %.1f s (%s)", stream, delay, reason)

    @hookimpl
    def streamer_stream_stopped(self, stream: str, error: BaseException | None) -> None:
        self._healthy.discard(stream)
        if error is None:
            self._log(stream).info("stream %s: stopped", stream)
        else:
            self._log(stream).error(
                "stream %s: stopped by its listener: %s", stream, describe_error(error)
            )


def describe_error(error: BaseException) -> str:
    """One line for an error; for gRPC errors the status code and details."""
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if callable(code) and callable(details):
        try:
            c = code()
            text = f"RPC failed: {getattr(c, 'name', c)}: {details()}"
        except Exception:  # a non-call RpcError
            pass
        else:
            hint = getattr(error, "hint", "")  # StreamRpcError: e.g. which limit to raise
            return f"{text} ({hint})" if hint else text
    return f"{type(error).__name__}: {error}"
