"""The host: config -> plugins -> client. Signals, reload and shutdown.

``Host.run()`` loads and checks everything before connecting (any problem: ``LoadFailed``, which
the CLI turns into exit status 2), then runs one supervised stream per listener until SIGTERM /
SIGINT (exit 0) or until every stream has been stopped by its own listener (exit 1). SIGHUP
re-reads the config and applies the difference without touching unchanged plugins.

Plugin code the host waits for (imports and factories at start and at reload, ``close()``,
observers' ``streamer_host_stopping``) runs on daemon worker threads under a time bound, and
anything it raises is contained; a reload runs beside the host's own loop, so SIGTERM during a
reload abandons it and exits within ``shutdown_timeout`` plus a small constant.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from streamer.base.logs import escape
from streamer.client._workers import WorkerPool
from streamer.client.client import Client
from streamer.client.guard import GuardPolicy
from streamer.client.registry import (
    GatewayRegistry,
    MagmaRegistry,
    RegistryError,
    StaticRegistry,
    TLSConfig,
)
from streamer.client.stream import contain
from streamer.host.checks import Distributions, LoadFailed, build_backoff, check
from streamer.host.config import Config, ConfigError, StreamSettings
from streamer.host.observers import (
    LoggingObserver,
    PluggyObserver,
    make_plugin_manager,
    wrapper_problems,
)
from streamer.host.plugins import (
    LISTENERS_GROUP,
    LoadedPlugin,
    LoadResult,
    check_stream_names,
    format_problems,
    load_plugins,
)

__all__ = [
    "EXIT_ALL_STOPPED",
    "EXIT_LOAD_FAILED",
    "EXIT_OK",
    "PLUGIN_TIMEOUT",
    "RESTART_SECTIONS",
    "Host",
    "LoadFailed",
]

log = logging.getLogger("streamer.host.host")

EXIT_OK = 0
EXIT_ALL_STOPPED = 1
EXIT_LOAD_FAILED = 2

PLUGIN_TIMEOUT = 60.0
"""Seconds the host waits for plugins to be imported and built, at start and at each reload."""

RESTART_SECTIONS = ("cloud", "streaming", "observers", "observer_tables", "metrics", "log")
"""Config sections a reload cannot apply: changing them needs a restart."""

T = TypeVar("T")

ObservabilityStarter = Callable[
    [Config, Mapping[str, str], Mapping[str, float], Callable[[str], dict[str, Any]]], object
]
"""Starts the endpoint ``[metrics]`` asks for and returns the observer that feeds it (and stops
it at ``host_stopping``). Called with the config, the host's stream -> plugin map, its stream ->
``max_staleness`` map and :meth:`Host.release` (what ``POST /release/STREAM`` calls). The host
does not import the observability layer (it sits above the host); whoever builds the host passes
it: ``streamer run`` passes ``streamer.observability.metrics.start_observer``."""

# -- pure building blocks (also used by `streamer check`) ---------------------------------


def build_registry(config: Config) -> GatewayRegistry:
    """The registry described by ``[cloud]``; RegistryError/ConfigError on bad settings."""
    cloud = config.require_cloud()
    common: dict[str, Any] = {
        "keepalive_time": cloud.keepalive_time_s,
        "keepalive_timeout": cloud.keepalive_timeout_s,
        "max_receive_message_length": cloud.max_receive_message_bytes,
        "max_reconnect_backoff": config.streaming.max_backoff,
    }
    if cloud.control_proxy is not None:
        return MagmaRegistry(cloud.control_proxy, override=cloud.control_proxy_override, **common)
    conn = cloud.connection()  # the connection rules, as `streamer check` applies them
    if isinstance(conn, tuple):
        raise RegistryError("; ".join(str(p) for p in conn))
    tls = TLSConfig(conn.root_ca, conn.client_cert, conn.client_key) if conn.tls else None
    return StaticRegistry(
        conn.target, tls=tls, authority=conn.authority, insecure=cloud.insecure, **common
    )


# -- the running host ---------------------------------------------------------------------


def guard_policy(settings: StreamSettings) -> GuardPolicy:
    return GuardPolicy(settings.guard_max_delete_fraction, settings.guard_confirmations)


@dataclass
class _Running:
    loaded: LoadedPlugin
    table: Mapping[str, Any]
    settings: StreamSettings
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


class Host:
    def __init__(
        self,
        config: Config,
        *,
        reload_config: Callable[[], Config] | None = None,
        distributions: Distributions = None,
        extra_observers: Sequence[object] = (),
        plugin_timeout: float = PLUGIN_TIMEOUT,
        observability: ObservabilityStarter | None = None,
    ) -> None:
        self.config = config  # what runs: after a partial reload, not what the file says
        self.plugin_timeout = plugin_timeout
        self._reload_config = reload_config
        self._distributions = distributions
        self._extra_observers = extra_observers
        self._observability = observability
        self._running: dict[str, _Running] = {}  # plugin name -> its listeners' tasks
        self._stopped: dict[str, BaseException] = {}  # stream -> the listener's chosen error
        self._owners: dict[str, str] = {}  # stream -> plugin name
        self._staleness: dict[str, float] = {}  # stream -> its max_staleness, when set
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._shutdown = False
        self._reload_requested = False
        self._reload_task: asyncio.Task[None] | None = None
        self.client: Client | None = None
        # Plugin code the host waits for runs here: daemon threads, so a call that never
        # returns is abandoned after its time bound and never keeps the process from exiting.
        self._plugin_calls = WorkerPool(idle_timeout=5.0, name="streamer-plugin")
        self.pm = make_plugin_manager()
        self._hooks = PluggyObserver(self.pm)

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> int:
        """Run until shutdown. Raises LoadFailed (nothing started) on load-time problems."""
        self._loop = asyncio.get_running_loop()
        try:
            loaded, hooks = await self._plugin_call(
                functools.partial(check, self.config, self._distributions), self.plugin_timeout
            )
        except asyncio.TimeoutError:
            raise LoadFailed(
                [
                    f"{self.config.path}: loading the enabled plugins and observers did not "
                    f"finish within {self.plugin_timeout:g} s (an import or factory that hangs?)"
                ]
            ) from None
        registry = build_registry(self.config)
        for obs in self._extra_observers:
            self.pm.register(obs)
        wrappers = wrapper_problems(self.pm)
        if wrappers:
            raise LoadFailed(wrappers)
        self.pm.register(LoggingObserver(self._owners), "streamer-log-observer")
        if self.config.metrics.address is not None:  # the observer stops it at host_stopping
            if self._observability is None:
                raise LoadFailed(
                    [
                        f"{self.config.path}: [metrics] address is set, but this host was built "
                        "without an endpoint (Host(observability=...); `streamer run` passes "
                        "streamer.observability.metrics.start_observer)"
                    ]
                )
            metrics = self._observability(self.config, self._owners, self._staleness, self.release)
            self.pm.register(metrics, "streamer-metrics-observer")
        for plugin, obs in hooks:
            self.pm.register(obs, plugin.display)
        self.client = Client(
            registry,
            streaming_interval=self.config.streaming.interval,
            backoff=build_backoff(self.config),
            observer=self._hooks,
            gateway_id=self.config.require_cloud().gateway_id,
            max_streams_per_channel=self.config.require_cloud().max_streams_per_connection,
            guard=guard_policy(self.config.stream_settings("")),
        )
        self._install_signals()
        try:
            for lp in loaded:
                name = lp.plugin.name
                self._start(lp, self.config.plugin_table(name), self.config.stream_settings(name))
            self._announce()
            return await self._supervise()
        finally:
            # Signal handlers stay installed until everything is closed: a SIGHUP during
            # shutdown must not fall back to its default action (terminate).
            self._shutdown = True
            try:
                await self._abandon_reload()
                await self._stop_all()
                await self._host_stopping()
                await self.client.close(timeout=self.config.streaming.shutdown_timeout)
            finally:
                self._remove_signals()
                self._plugin_calls.shutdown(wait=False)

    async def _plugin_call(self, fn: Callable[[], T], timeout: float) -> T:
        """``fn()`` on a daemon worker; TimeoutError after ``timeout`` s (the call is abandoned,
        its thread left to finish or not). Whatever ``fn`` raises is re-raised here as an
        ``Exception``: a ``SystemExit`` from plugin code must not end the event loop."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(self._plugin_calls.run_for_loop(loop, fn), timeout)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            raise
        except BaseException as exc:
            raise contain(exc, getattr(fn, "__qualname__", "plugin code"))  # noqa: B904 - cause set

    async def _host_stopping(self) -> None:
        """Observers' ``streamer_host_stopping``, bounded like the rest of shutdown."""
        timeout = max(self.config.streaming.shutdown_timeout, 1.0)
        try:
            await self._plugin_call(
                functools.partial(self._hooks.call, "streamer_host_stopping"), timeout
            )
        except asyncio.TimeoutError:
            log.error("observers' streamer_host_stopping did not return within %.1f s", timeout)
        except Exception:
            log.exception("observers' streamer_host_stopping failed")

    async def _abandon_reload(self) -> None:
        task, self._reload_task = self._reload_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def request_shutdown(self) -> None:
        self._shutdown = True
        self._wake.set()

    def request_reload(self) -> None:
        if self._shutdown:
            log.warning("SIGHUP ignored: shutting down")
            return
        self._reload_requested = True
        self._wake.set()

    def release(self, stream: str, timeout: float = 5.0) -> dict[str, Any]:
        """``streamer release STREAM`` (from the endpoint's thread): apply the stream's held
        snapshot now. ``{"stream", "released", "known", "detail"}``."""
        loop, client = self._loop, self.client
        if loop is None or client is None or loop.is_closed():
            return {"stream": stream, "released": False, "known": False, "detail": "starting"}
        fut: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def on_loop() -> None:
            if not fut.set_running_or_notify_cancel():  # the endpoint gave up waiting
                return
            try:
                result = client.release(stream)
            except BaseException as exc:  # never leave the endpoint's thread waiting
                fut.set_exception(exc)
                return
            if result is None:
                running = ", ".join(sorted(self.streams())) or "none"
                doc = {
                    "stream": stream,
                    "released": False,
                    "known": False,
                    "detail": f"no stream {stream!r} is running (running: {running})",
                }
            else:
                doc = {
                    "stream": stream,
                    "released": result.released,
                    "known": True,
                    "detail": result.detail,
                }
            fut.set_result(doc)

        loop.call_soon_threadsafe(on_loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            if not fut.cancel():  # it started meanwhile: its answer is the truth
                return fut.result()
            detail = f"the host's event loop did not answer within {timeout:g} s; nothing released"
            return {
                "stream": stream,
                "released": False,
                "known": False,
                "busy": True,
                "detail": detail,
            }

    def streams(self) -> dict[str, str]:
        """Running stream name -> plugin name."""
        return {s: name for name, r in self._running.items() for s in r.tasks}

    async def _supervise(self) -> int:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._shutdown:
                log.info("shutting down")
                return EXIT_OK
            reloading = self._reload_task is not None and not self._reload_task.done()
            if self._reload_requested and not reloading:
                # Beside this loop, not awaited here: SIGTERM must not wait for a reload.
                self._reload_requested = False
                self._reload_task = asyncio.create_task(self._reload_then_wake(), name="reload")
                reloading = True
            if reloading:
                continue
            if not any(r.tasks for r in self._running.values()):
                if self._stopped:
                    summary = "; ".join(
                        escape(f"{s} ({self._owners.get(s, '?')}): {type(e).__name__}: {e}")
                        for s, e in self._stopped.items()
                    )
                    log.error("every stream was stopped by its listener: %s", summary)
                    return EXIT_ALL_STOPPED
                log.error("no streams left to run")
                return EXIT_ALL_STOPPED

    def _announce(self) -> None:
        streams = sorted(self.streams())
        log.info("streaming %d stream(s): %s", len(streams), ", ".join(streams))
        self._hooks.call("streamer_host_started", streams=streams)

    # -- starting and stopping plugins ----------------------------------------------------

    def _start(
        self, lp: LoadedPlugin, table: Mapping[str, Any], settings: StreamSettings | None = None
    ) -> None:
        assert self.client is not None
        settings = settings or self.config.stream_settings(lp.plugin.name)
        running = _Running(lp, table, settings)
        self._running[lp.plugin.name] = running
        guard = guard_policy(settings)
        for listener in lp.listeners:
            self._owners[listener.name] = lp.plugin.name
            if settings.max_staleness is not None:
                self._staleness[listener.name] = settings.max_staleness
            else:
                self._staleness.pop(listener.name, None)
            self._stopped.pop(listener.name, None)
            task = asyncio.create_task(
                self.client.stream(listener, guard=guard), name=f"stream:{listener.name}"
            )
            running.tasks[listener.name] = task
            task.add_done_callback(functools.partial(self._ended, running, listener.name))
        log.info(
            "plugin %s started: %s", lp.plugin.display, ", ".join(lp.stream_names) or "no streams"
        )

    def _ended(self, running: _Running, stream: str, task: asyncio.Task[None]) -> None:
        if running.tasks.get(stream) is task:
            del running.tasks[stream]
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                self._stopped[stream] = error
                if not isinstance(error, Exception) or self._owners.get(stream) is None:
                    log.error(
                        "stream %s ended with %s",
                        escape(stream),
                        escape(f"{type(error).__name__}: {error}"),
                        exc_info=error,
                    )
        self._wake.set()

    async def _stop_plugin(self, name: str) -> None:
        running = self._running.pop(name, None)
        if running is None or self.client is None:
            return
        display = running.loaded.plugin.display
        for listener in running.loaded.listeners:
            task = running.tasks.get(listener.name)
            if not self.client.remove_listener(listener) and task is not None:
                task.cancel()  # its stream() has not begun: nothing of it runs yet
        tasks = list(running.tasks.values())
        timeout = self.config.streaming.shutdown_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        stuck: set[str] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                stream = task.get_name().removeprefix("stream:")
                stuck.add(stream)
                log.warning(
                    "plugin %s: stream %s did not stop within %.1f s (update still running?); "
                    "abandoning it without calling its close()",
                    display,
                    stream,
                    timeout,
                )
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        remaining = max(deadline - asyncio.get_running_loop().time(), 1.0)
        await self._close_listeners(running.loaded, remaining, skip=stuck)
        for listener in running.loaded.listeners:
            self._stopped.pop(listener.name, None)
            if self._owners.get(listener.name) == name:
                del self._owners[listener.name]
                self._staleness.pop(listener.name, None)
        log.info("plugin %s stopped", display)

    async def _close_listeners(
        self, lp: LoadedPlugin, timeout: float, skip: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """Call the listeners' optional close(), concurrently, all within ``timeout`` seconds,
        and never while a listener's update may still run. They run on daemon workers, not
        asyncio.to_thread: a close() that hangs must not keep the process from exiting (the
        default executor's threads are joined at exit)."""
        loop = asyncio.get_running_loop()
        jobs: dict[asyncio.Task[None], str] = {}
        for listener in lp.listeners:
            close = getattr(listener, "close", None)
            if callable(close) and listener.name not in skip:
                task = asyncio.ensure_future(self._close_one(loop, close))
                jobs[task] = listener.name
        if not jobs:
            return
        done, pending = await asyncio.wait(jobs, timeout=timeout)
        for task in pending:
            task.cancel()
            log.error(
                "plugin %s: close() of stream %s did not return within %.1f s; abandoned",
                lp.plugin.display,
                jobs[task],
                timeout,
            )
        for task in done:
            exc = task.exception()
            if exc is not None:
                log.error(
                    "plugin %s: close() of stream %s failed: %s",
                    lp.plugin.display,
                    escape(jobs[task]),
                    escape(f"{type(exc).__name__}: {exc}"),
                    exc_info=exc,
                )

    async def _close_one(self, loop: asyncio.AbstractEventLoop, close: Any) -> None:
        """One close(), sync on a daemon worker or async on the loop. What it raises comes
        back as an ``Exception`` (a ``SystemExit`` must not end the event loop)."""
        try:
            result = await self._plugin_calls.run_for_loop(loop, close)
            if asyncio.iscoroutine(result):
                await result
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise contain(exc, "close()")  # noqa: B904 - contain() sets the cause

    async def _stop_all(self) -> None:
        names = list(self._running)
        await asyncio.gather(*(self._stop_plugin(n) for n in names))

    # -- reload ---------------------------------------------------------------------------

    async def _reload_then_wake(self) -> None:
        try:
            await self._reload()
        except asyncio.CancelledError:
            log.warning("reload abandoned: shutting down")
            raise
        except Exception:
            log.exception("reload failed, keeping the running config")
        finally:
            self._wake.set()

    def _effective(self, new: Config) -> Config:
        """``new`` as far as a reload applies it: its plugins, with every section that needs a
        restart as it runs now. What ``self.config`` holds, so the host never reports settings
        it does not run, and a pending restart is warned about again at each reload."""
        return dataclasses.replace(
            new, **{section: getattr(self.config, section) for section in RESTART_SECTIONS}
        )

    async def _reload(self) -> None:
        if self._reload_config is None:
            log.warning("SIGHUP ignored: no config file to re-read")
            return
        try:
            new = await self._plugin_call(self._reload_config, self.plugin_timeout)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running config: %s", exc)
            return
        except asyncio.TimeoutError:
            log.error(
                "reload rejected: reading the config took more than %g s", self.plugin_timeout
            )
            return
        old = self.config
        for section in RESTART_SECTIONS:
            if getattr(old, section) != getattr(new, section):
                log.warning(
                    "reload: changes to %r take effect after a restart; still running the "
                    "previous %r settings",
                    section,
                    section,
                )
        keep, start = [], []
        for name in new.plugins:
            running = self._running.get(name)
            if (
                running is not None
                and dict(running.table) == new.plugin_table(name)
                and running.settings == new.stream_settings(name)
            ):
                keep.append(name)
            else:
                start.append(name)
        stop = [name for name in self._running if name not in keep]
        if not (start or stop):
            log.info("reload: no plugin changes")
            self.config = self._effective(new)
            return
        if not new.plugins:
            log.error("reload rejected, keeping the running config: %s: plugins is empty", new.path)
            return

        def load() -> LoadResult:  # imports and factories: off the event loop
            dists = list(self._distributions()) if self._distributions else None
            return load_plugins(LISTENERS_GROUP, start, new.plugin_tables, dists)

        try:
            result = await self._plugin_call(load, self.plugin_timeout)
        except asyncio.TimeoutError:
            log.error(
                "reload rejected, keeping the running config: loading %s did not finish within "
                "%g s (an import or factory that hangs?); abandoned",
                ", ".join(start),
                self.plugin_timeout,
            )
            return
        timeout = old.streaming.shutdown_timeout
        if self._shutdown:
            log.info("reload abandoned: shutting down")
            for lp in result.loaded:
                await self._close_listeners(lp, timeout)
            return
        kept = [self._running[n].loaded for n in keep]
        problems = list(result.problems) + list(check_stream_names([*kept, *result.loaded]))
        if problems:
            log.error("reload rejected, keeping the running config:\n%s", format_problems(problems))
            for lp in result.loaded:  # built but never started: release them
                await self._close_listeners(lp, timeout)
            return
        self.config = self._effective(new)
        await asyncio.gather(*(self._stop_plugin(name) for name in stop))
        for lp in result.loaded:
            name = lp.plugin.name
            self._start(lp, new.plugin_table(name), new.stream_settings(name))
        log.info(
            "reload applied: started %s; stopped %s; unchanged %s",
            ", ".join(start) or "none",
            ", ".join(stop) or "none",
            ", ".join(keep) or "none",
        )
        self._announce()

    # -- signals --------------------------------------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, self.request_shutdown)
            loop.add_signal_handler(signal.SIGINT, self.request_shutdown)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            log.debug("signal handlers not installed")

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
