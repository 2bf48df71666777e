"""Load-time checks shared by ``streamer check`` and ``streamer run``, without importing gRPC.

Everything is collected and reported together; nothing is started when any check fails.
"""

from __future__ import annotations

import importlib.util
import threading
import types
from collections.abc import Callable, Iterable, Sequence

import importlib_metadata

from streamer.base.errors import StreamerError
from streamer.base.redact import redact_text
from streamer.client.backoff import Backoff
from streamer.client.connection import (
    RegistryError,
    ResolvedConnection,
    load_tls_files,
    magma_settings,
)
from streamer.host.config import Config, ConfigError
from streamer.host.plugins import (
    LISTENERS_GROUP,
    DistributionLike,
    LoadedPlugin,
    Plugin,
    Problem,
    find_observers,
    import_plugin,
    load_plugins,
    schema_problems,
    select,
)

__all__ = [
    "Distributions",
    "LoadFailed",
    "build_backoff",
    "check",
    "file_problems",
    "load_hooks",
    "load_observers",
    "resolve_connection",
]

Distributions = Callable[[], Iterable[importlib_metadata.Distribution]] | None


class LoadFailed(StreamerError):
    """Load-time checks failed; nothing was started. ``str()`` is the readable report."""

    def __init__(self, problems: Sequence[Problem | str]) -> None:
        self.problems = tuple(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} found; nothing was started:"]
        lines += [f"  {i}. {p}" for i, p in enumerate(self.problems, 1)]
        super().__init__(redact_text("\n".join(lines)))


def build_backoff(config: Config) -> Backoff:
    s = config.streaming
    return Backoff(
        initial=s.backoff_initial,
        multiplier=s.backoff_multiplier,
        jitter=s.backoff_jitter,
        maximum=s.backoff_max,
    )


def file_problems(exc: ConfigError, distributions: Distributions = None) -> list[Problem]:
    """An invalid file's whole report: each of its problems, then the problems of the enabled
    listener plugins' tables that could be read (checked against their schemas; no factory is
    called), so one ``streamer check`` shows everything to fix."""
    problems = [Problem(p.key or str(exc.path), p.message) for p in exc.problems]
    if exc.plugins:
        dists = list(distributions() if distributions else importlib_metadata.distributions())
        problems += schema_problems(LISTENERS_GROUP, exc.plugins, exc.plugin_tables, dists)
    return problems


def load_observers(
    config: Config, distributions: Iterable[DistributionLike] | None = None
) -> tuple[list[tuple[Plugin, object]], list[Problem]]:
    """Import the enabled observers (entry-point groups ``streamer.observers`` and
    ``streamer.hooks``). A module is registered as it is; a class or function is called with
    the observer's ``[observer.<name>]`` table."""
    found = find_observers(distributions)
    selected, problems = select(found, config.observers)
    out: list[tuple[Plugin, object]] = []
    errors = list(problems)
    for plugin in selected:
        obj = import_plugin(plugin)
        if isinstance(obj, Problem):
            errors.append(obj)
            continue
        if callable(obj) and not isinstance(obj, types.ModuleType):
            try:
                obj = obj(config.observer_table(plugin.name))
            except BaseException as exc:  # plugin code: SystemExit and the like are its faults
                if isinstance(exc, KeyboardInterrupt) and _in_main_thread():
                    raise
                errors.append(
                    Problem(plugin.display, f"observer factory raised {exc!r}", (plugin,), exc)
                )
                continue
        problem = _hook_problem(plugin, obj)
        if problem is not None:
            errors.append(problem)
            continue
        out.append((plugin, obj))
    return out, errors


load_hooks = load_observers  # the 0.2 name


def _hook_problem(plugin: Plugin, obj: object) -> Problem | None:
    """Register ``obj`` with a scratch plugin manager, as the host will: an implementation with
    an argument the spec lacks, a ``streamer_*`` hook that does not exist (a typo would
    otherwise never be called), or a wrapper (observers are called one by one) is a load-time
    problem."""
    from streamer.host.observers import make_plugin_manager, wrapper_problems

    pm = make_plugin_manager()
    try:
        pm.register(obj, plugin.display)
        pm.check_pending()
    except Exception as exc:
        return Problem(plugin.display, f"not a valid observer: {exc}", (plugin,), exc)
    wrappers = wrapper_problems(pm)
    if wrappers:
        return Problem(plugin.display, f"not a valid observer: {'; '.join(wrappers)}", (plugin,))
    return None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def check(
    config: Config, distributions: Distributions = None
) -> tuple[tuple[LoadedPlugin, ...], list[tuple[Plugin, object]]]:
    """Everything `run` checks before connecting. Raises LoadFailed with every problem."""
    problems: list[Problem | str] = []
    try:
        config.require_cloud()
    except ConfigError as exc:
        problems.append(str(exc))
    if not config.plugins:
        problems.append(f"{config.path}: plugins: no listener plugin is enabled")
    # One scan of the installed distributions serves both entry-point groups.
    dists = list(distributions() if distributions else importlib_metadata.distributions())
    result = load_plugins(LISTENERS_GROUP, config.plugins, config.plugin_tables, dists)
    problems.extend(result.problems)
    hooks, hook_problems = load_observers(config, dists)
    problems.extend(hook_problems)
    if config.metrics.address is not None and importlib.util.find_spec("prometheus_client") is None:
        problems.append(
            f"{config.path}: metrics.address is set but prometheus-client is not installed; "
            "install it with `pip install 'streamer[metrics]'` or remove [metrics] address"
        )
    if not problems:
        try:
            _validate_connection(config)
        except (RegistryError, ConfigError, ValueError) as exc:
            problems.append(f"{config.path}: cloud: {exc}")
    if problems:
        raise LoadFailed(problems)
    return result.loaded, hooks


def resolve_connection(config: Config) -> ResolvedConnection:
    """What ``[cloud]`` will dial and how, without connecting (reads control_proxy.yml and its
    override, not the TLS files). RegistryError / ConfigError on unusable settings."""
    cloud = config.require_cloud()
    if cloud.control_proxy is not None:
        return magma_settings(
            cloud.control_proxy, override=cloud.control_proxy_override
        ).connection()
    found = cloud.connection()  # the connection rules (streamer.client.connection)
    if isinstance(found, tuple):
        raise RegistryError("; ".join(str(p) for p in found))
    return found


def _validate_connection(config: Config) -> None:
    """Check the connection settings (files readable and PEM, key matches cert, Magma's
    control_proxy.yml and its override complete) without connecting."""
    build_backoff(config)
    conn = resolve_connection(config)
    if conn.tls:
        load_tls_files(conn.root_ca, conn.client_cert, conn.client_key)
