"""Plugin discovery and loading: a pipeline of small functions over immutable records.

``find_plugins`` (read entry points, import nothing) → ``select`` (check names; only enabled
names go on) → ``load`` (import, call the factory, validate each listener) →
``check_stream_names`` (one owner per stream). ``load_plugins`` runs all of it and collects every
problem instead of stopping at the first, so one ``streamer check`` shows everything to fix.

A plugin is shown to people as ``dist[name]``. A factory is called with the plugin's config table
(a fresh ``dict``; ``{}`` without one) and returns one listener or an iterable of listeners.

This module must not import grpc or protobuf.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import importlib_metadata

from streamer.base.redact import redact_text
from streamer.client.listener import listener_problems
from streamer.host.schema import ConfigProblems, schema_of, validate

__all__ = [
    "HOOKS_GROUP",
    "LISTENERS_GROUP",
    "OBSERVERS_GROUP",
    "DistributionLike",
    "LoadResult",
    "LoadedPlugin",
    "Plugin",
    "PluginRow",
    "Problem",
    "build",
    "check_stream_names",
    "find_observers",
    "find_plugins",
    "format_problems",
    "import_plugin",
    "load",
    "load_factories",
    "load_plugins",
    "normalize",
    "plugin_rows",
    "rows_to_json",
    "schema_problems",
    "select",
]

log = logging.getLogger(__name__)

LISTENERS_GROUP = "streamer.listeners"
OBSERVERS_GROUP = "streamer.observers"
HOOKS_GROUP = "streamer.hooks"
"""The observers' original entry-point group; read as well as ``streamer.observers``."""


class DistributionLike(Protocol):
    """What ``find_plugins`` reads from a distribution: ``importlib_metadata``'s and the standard
    library's ``importlib.metadata`` objects both fit."""

    @property
    def metadata(self) -> Any: ...

    @property
    def version(self) -> str: ...

    @property
    def entry_points(self) -> Any: ...


class Plugin(NamedTuple):
    """One entry point, found but not imported."""

    name: str  # the entry-point name: what the config file enables
    dist: str  # distribution name as its metadata spells it
    version: str
    value: str  # "module:attr"
    group: str

    @property
    def display(self) -> str:
        return f"{self.dist}[{self.name}]"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that keeps a plugin from running.

    ``subject`` is what a person looks for (``dist[name]``, an unknown name, or a stream);
    ``plugins`` the plugins involved; ``exception`` the original error, if any.
    """

    subject: str
    message: str
    plugins: tuple[Plugin, ...] = ()
    exception: BaseException | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return redact_text(f"{self.subject}: {self.message}")


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    plugin: Plugin
    listeners: tuple[Any, ...]  # each passed listener_problems()

    @property
    def stream_names(self) -> tuple[str, ...]:
        return tuple(listener.name for listener in self.listeners)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What ``load_plugins`` produced. Start nothing unless ``ok``."""

    found: tuple[Plugin, ...]
    loaded: tuple[LoadedPlugin, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def listeners(self) -> tuple[tuple[Plugin, Any], ...]:
        """Every listener with the plugin that made it, in load order."""
        return tuple((lp.plugin, listener) for lp in self.loaded for listener in lp.listeners)


# --- find ----------------------------------------------------------------------------------


def normalize(name: str) -> str:
    """PEP 503 name normalization (``My_Dist`` and ``my-dist`` are one distribution)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def find_plugins(
    group: str, distributions: Iterable[DistributionLike] | None = None
) -> tuple[Plugin, ...]:
    """Every entry point in ``group``, without importing anything.

    The same distribution found twice on ``sys.path`` counts once; the result is sorted by name,
    then distribution, so output and conflict messages do not depend on ``sys.path`` order.
    """
    dists: Iterable[DistributionLike] = (
        importlib_metadata.distributions() if distributions is None else distributions
    )
    seen: dict[tuple[str, str, str], Plugin] = {}
    for dist in dists:
        read = _read_dist(dist, group)
        if read is None:
            continue
        dist_name, version, eps = read
        for ep_name, value in eps:
            key = (normalize(dist_name), version, ep_name)
            seen.setdefault(key, Plugin(ep_name, dist_name, version, value, group))
    return tuple(sorted(seen.values(), key=lambda p: (p.name, normalize(p.dist), p.version)))


def find_observers(distributions: Iterable[DistributionLike] | None = None) -> tuple[Plugin, ...]:
    """Observers from both entry-point groups, ``streamer.observers`` and ``streamer.hooks``.
    A distribution that declares one name in both (to support old and new hosts) gives one
    plugin, the ``streamer.observers`` one."""
    dists = list(importlib_metadata.distributions() if distributions is None else distributions)
    seen: dict[tuple[str, str, str], Plugin] = {}
    for group in (OBSERVERS_GROUP, HOOKS_GROUP):
        for plugin in find_plugins(group, dists):
            seen.setdefault((normalize(plugin.dist), plugin.version, plugin.name), plugin)
    return tuple(sorted(seen.values(), key=lambda p: (p.name, normalize(p.dist), p.version)))


def _read_dist(dist: DistributionLike, group: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    """Name, version and ``group``'s entry points; None when the distribution has none, or for a
    broken .dist-info (missing or unreadable metadata), which must not stop discovery of
    everything else on sys.path. Entry points are read first: most installed distributions
    have none, and their METADATA is then never parsed."""
    try:
        eps = [(ep.name, ep.value) for ep in dist.entry_points.select(group=group)]
        if not eps:
            return None
        meta = dist.metadata
        # .get: a missing Name is None on every importlib-metadata (indexing it warns on 7.x)
        name = meta.get("Name") if meta is not None else None
    except Exception as exc:
        log.debug("skipping unreadable distribution %r: %s", dist, exc)
        return None
    if not name:
        return None
    version = meta.get("Version") or ""
    return str(name), str(version), eps


# --- select --------------------------------------------------------------------------------


def select(
    plugins: Sequence[Plugin], enabled: Sequence[str]
) -> tuple[tuple[Plugin, ...], tuple[Problem, ...]]:
    """The plugins named in ``enabled`` (in that order), and a problem for each name that is not
    installed or is claimed by more than one distribution. Nothing is imported."""
    by_name: dict[str, list[Plugin]] = {}
    for plugin in plugins:
        by_name.setdefault(plugin.name, []).append(plugin)
    installed = sorted(by_name)
    selected: list[Plugin] = []
    problems: list[Problem] = []
    for name in dict.fromkeys(enabled):
        claimants = by_name.get(name, [])
        if not claimants:
            problems.append(_not_installed(name, installed, plugins))
        elif len(claimants) > 1:
            problems.append(_conflict(name, claimants))
        else:
            selected.append(claimants[0])
    return tuple(selected), tuple(problems)


def _not_installed(name: str, installed: list[str], plugins: Sequence[Plugin]) -> Problem:
    group = plugins[0].group if plugins else None
    where = f" in entry-point group {group!r}" if group else ""
    have = ", ".join(installed) if installed else "none"
    close = difflib.get_close_matches(name, installed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return Problem(name, f"enabled but not installed{where} (installed: {have}){hint}")


def _conflict(name: str, claimants: list[Plugin]) -> Problem:
    if len({normalize(p.dist) for p in claimants}) == 1:
        shown = " and ".join(f"{p.dist} {p.version}[{p.name}]" for p in claimants)
        msg = f"two versions of one distribution are installed: {shown}; uninstall all but one"
    else:
        shown = " and ".join(p.display for p in claimants)
        msg = f"claimed by {shown}; uninstall all but one"
    return Problem(name, msg, tuple(claimants))


# --- load ----------------------------------------------------------------------------------


def import_plugin(plugin: Plugin) -> object | Problem:
    """Import the entry point's object (the factory), or a Problem keeping the exception."""
    ep = importlib_metadata.EntryPoint(plugin.name, plugin.value, plugin.group)
    try:
        obj: object = ep.load()
    except BaseException as exc:
        _reraise_interrupt(exc)
        return Problem(
            plugin.display, f"cannot import {plugin.value}: {_describe(exc)}", (plugin,), exc
        )
    return obj


def _reraise_interrupt(exc: BaseException) -> None:
    """Plugin code's one boundary at load time: anything it raises is a problem of that plugin
    (``SystemExit``, a custom ``BaseException``...), except a real Ctrl-C of the person running
    ``streamer check`` in the main thread. The host loads plugins in a worker thread, where no
    signal can land, so there a ``KeyboardInterrupt`` is plugin code's too."""
    if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
        raise exc


def load(plugin: Plugin, table: Mapping[str, Any] | None = None) -> LoadedPlugin | Problem:
    """Import ``plugin``, call its factory with ``table`` and validate what it returns."""
    factory = import_plugin(plugin)
    if isinstance(factory, Problem):
        return factory
    return build(plugin, factory, table)


def build(
    plugin: Plugin, factory: object, table: Mapping[str, Any] | None
) -> LoadedPlugin | Problem:
    """Call ``factory`` with a fresh copy of ``table`` and validate the listener(s)."""
    if not callable(factory):
        return Problem(
            plugin.display,
            f"{plugin.value} is {type(factory).__name__}, expected a callable factory",
            (plugin,),
        )
    config: Any = copy.deepcopy(dict(table or {}))
    schema = schema_of(factory)
    if schema is not None:
        # Every problem of the table at once, before any plugin code runs.
        try:
            config = validate(schema, config, where=f"plugin.{plugin.name}")
        except ConfigProblems as exc:
            return Problem(plugin.display, str(exc), (plugin,), exc)
    try:
        made = factory(config)
        if hasattr(made, "__await__"):
            close = getattr(made, "close", None)
            if callable(close):
                close()  # no "coroutine was never awaited" warning
            return Problem(
                plugin.display,
                "factory returned an awaitable; factories must be synchronous",
                (plugin,),
            )
        listeners = _as_listeners(made)
    except BaseException as exc:
        _reraise_interrupt(exc)
        return Problem(plugin.display, f"factory raised {_describe(exc)}", (plugin,), exc)
    if listeners is None:
        details = "; ".join(_problems_of(made))
        return Problem(
            plugin.display,
            f"factory returned {type(made).__name__}, expected a listener or an iterable of "
            f"listeners ({details})",
            (plugin,),
        )
    if not listeners:
        return Problem(plugin.display, "factory returned no listeners", (plugin,))
    invalid = []
    for index, listener in enumerate(listeners):
        found = _problems_of(listener)
        if found:
            label = f"listener #{index + 1} ({type(listener).__name__})"
            invalid.append(f"{label}: " + "; ".join(found))
    if invalid:
        return Problem(plugin.display, "not a valid listener: " + " | ".join(invalid), (plugin,))
    return LoadedPlugin(plugin, listeners)


def _problems_of(obj: object) -> list[str]:
    """``listener_problems`` that survives an object whose attribute access raises."""
    try:
        return listener_problems(obj)
    except Exception as exc:
        return [f"cannot be inspected: {type(exc).__name__}: {exc}"]


def _as_listeners(made: object) -> tuple[Any, ...] | None:
    """One listener → (it,); an iterable → its items; anything else → None."""
    if not _problems_of(made):
        return (made,)
    if isinstance(made, (str, bytes, Mapping)) or not isinstance(made, Iterable):
        return None
    return tuple(made)


def check_stream_names(loaded: Sequence[LoadedPlugin]) -> tuple[Problem, ...]:
    """A problem for every stream name claimed more than once (across or within plugins)."""
    owners: dict[str, list[Plugin]] = {}
    for lp in loaded:
        for name in lp.stream_names:
            owners.setdefault(name, []).append(lp.plugin)
    problems = []
    for stream, claimants in owners.items():
        if len(claimants) > 1:
            shown = " and ".join(p.display for p in claimants)
            problems.append(
                Problem(
                    f"stream {stream!r}",
                    f"claimed by {shown}; each stream name must have one listener",
                    tuple(dict.fromkeys(claimants)),
                )
            )
    return tuple(problems)


def load_plugins(
    group: str,
    enabled: Sequence[str],
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    distributions: Iterable[DistributionLike] | None = None,
) -> LoadResult:
    """The whole pipeline: find → select → load → check stream names; every problem kept."""
    found = find_plugins(group, distributions)
    selected, problems = select(found, enabled)
    results = [load(p, (tables or {}).get(p.name)) for p in selected]
    return _finish(found, results, problems)


def schema_problems(
    group: str,
    enabled: Sequence[str],
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    distributions: Iterable[DistributionLike] | None = None,
) -> tuple[Problem, ...]:
    """Every enabled plugin's table checked against its declared schema, without calling any
    factory: what ``streamer check`` and ``streamer run`` still report when the rest of the
    file is invalid, so that one report lists the whole file's problems."""
    found = find_plugins(group, distributions)
    selected, problems = select(found, enabled)
    out = list(problems)
    for plugin in selected:
        factory = import_plugin(plugin)
        if isinstance(factory, Problem):
            out.append(factory)
            continue
        schema = schema_of(factory)
        if schema is None:
            continue
        table = copy.deepcopy(dict((tables or {}).get(plugin.name) or {}))
        try:
            validate(schema, table, where=f"plugin.{plugin.name}")
        except ConfigProblems as exc:
            out.extend(_one_per_key(Problem(plugin.display, str(exc), (plugin,), exc)))
    return tuple(out)


def load_factories(
    factories: Mapping[str, Callable[[dict[str, Any]], object]],
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    dist: str = "in-memory",
    group: str = LISTENERS_GROUP,
) -> LoadResult:
    """Run the same build and checks over in-memory factories (no entry points): for tests of
    hosts and plugins, like stevedore's ``make_test_instance``."""
    found = tuple(
        Plugin(name, dist, "0", f"{getattr(f, '__module__', '?')}:{_qualname(f)}", group)
        for name, f in factories.items()
    )
    results = [build(p, factories[p.name], (tables or {}).get(p.name)) for p in found]
    return _finish(found, results, ())


def _finish(
    found: tuple[Plugin, ...],
    results: Sequence[LoadedPlugin | Problem],
    problems: tuple[Problem, ...],
) -> LoadResult:
    loaded = tuple(r for r in results if isinstance(r, LoadedPlugin))
    failed = tuple(one for r in results if isinstance(r, Problem) for one in _one_per_key(r))
    return LoadResult(found, loaded, problems + failed + check_stream_names(loaded))


def _one_per_key(problem: Problem) -> tuple[Problem, ...]:
    """A schema's problems are listed one per key, like the rest of the report."""
    exc = problem.exception
    if not isinstance(exc, ConfigProblems):
        return (problem,)
    return tuple(Problem(problem.subject, str(p), problem.plugins, exc) for p in exc.problems)


def _qualname(obj: object) -> str:
    return str(getattr(obj, "__qualname__", type(obj).__qualname__))


def _describe(exc: BaseException) -> str:
    """``ModuleNotFoundError: No module named 'x' (at plug.py:3)``."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno})"
    return text


def format_problems(problems: Sequence[Problem]) -> str:
    """A readable report: one numbered line per problem."""
    if not problems:
        return "no plugin problems"
    count = len(problems)
    lines = [f"{count} plugin problem{'s' if count != 1 else ''}:"]
    lines += [f"  {i}. {p}" for i, p in enumerate(problems, 1)]
    return "\n".join(lines)


# --- listing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PluginRow:
    """One line of ``streamer list``. ``status``: "ok", "error", "not loaded" (enabled, no
    load attempted), "disabled", or "missing" (enabled, not installed)."""

    name: str
    dist: str
    version: str
    enabled: bool
    status: str
    streams: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def plugin_rows(
    plugins: Sequence[Plugin], enabled: Sequence[str], result: LoadResult | None = None
) -> tuple[PluginRow, ...]:
    """Rows for every installed plugin plus enabled names that are not installed."""
    on = set(enabled)
    streams: dict[Plugin, tuple[str, ...]] = {}
    if result is not None:
        streams = {lp.plugin: lp.stream_names for lp in result.loaded}
    rows = []
    for plugin in plugins:
        mine = () if result is None else _problems_for(plugin, result.problems)
        if plugin.name not in on:
            status = "disabled"
        elif result is None:
            status = "not loaded"
        elif mine or plugin not in streams:
            status = "error"
        else:
            status = "ok"
        rows.append(
            PluginRow(
                plugin.name,
                plugin.dist,
                plugin.version,
                plugin.name in on,
                status,
                streams.get(plugin, ()),
                tuple(str(p) for p in mine),
            )
        )
    installed = {p.name for p in plugins}
    for name in dict.fromkeys(enabled):
        if name not in installed:
            missing = (
                ()
                if result is None
                else tuple(str(p) for p in result.problems if p.subject == name)
            )
            rows.append(PluginRow(name, "", "", True, "missing", (), missing))
    return tuple(rows)


def _problems_for(plugin: Plugin, problems: Sequence[Problem]) -> tuple[Problem, ...]:
    return tuple(p for p in problems if plugin in p.plugins)


def rows_to_json(rows: Sequence[PluginRow]) -> str:
    """``streamer list --json``: a JSON array of objects, one per row."""
    return json.dumps(
        [
            {
                "name": r.name,
                "dist": r.dist or None,
                "version": r.version or None,
                "enabled": r.enabled,
                "status": r.status,
                "streams": list(r.streams),
                "problems": list(r.problems),
            }
            for r in rows
        ],
        indent=2,
    )
