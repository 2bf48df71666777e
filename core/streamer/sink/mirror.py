"""A small kit for plugins that mirror streams into a store (files, a database, a cache).

Two pieces, both used by the first-party sinks:

- :class:`TableReader` validates a plugin's ``[plugin.<name>]`` table in the factory: unknown
  keys, the required ``streams`` list, typed values. Every problem raises ``ValueError``
  naming the plugin and the key, which is what the host shows for a bad config.
- :class:`MirrorListener` is the Listener face of a :class:`MirrorStore`: it opens the store
  on first use (never in the factory, which ``streamer check`` calls), serialises calls with a
  lock, sends the store's digest as ``extra_args``, applies each batch as ``{key: value}``,
  leaves reported errors to the host's log (DEBUG only here) and refuses use after
  ``close()``.

Neither imports gRPC; protobuf is imported only when a digest is sent.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from streamer.base.logs import escape
from streamer.base.redact import redact

if TYPE_CHECKING:
    from google.protobuf.wrappers_pb2 import StringValue

    from streamer.wire.streamer_pb2 import DataUpdateBatch

__all__ = ["MirrorListener", "MirrorStore", "TableReader"]

_PRINTABLE_RULE = "must be a non-empty printable string"


class TableReader:
    """Checks one plugin's config table; each getter returns a typed value or raises.

    ``plugin`` prefixes every message (``"streamer-files: config key 'dir' must be ..."``);
    ``known`` lists the accepted keys, and any other key is an error right away::

        read = TableReader("streamer-files", table, ("streams", "dir", "fsync"))
        streams = read.streams()
        root = read.path("dir", what="the root directory")
        fsync = read.boolean("fsync", True)
    """

    def __init__(self, plugin: str, table: object, known: Sequence[str]) -> None:
        self.plugin = plugin
        if not isinstance(table, Mapping):
            raise self.error(f"the config must be a table, got {redact(table)!r}")
        unknown = sorted(set(table) - set(known), key=str)
        if unknown:
            raise self.error(
                f"unknown config key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(known)}"
            )
        self.table: Mapping[str, Any] = table

    # --- building blocks ------------------------------------------------------------------

    def error(self, message: str) -> ValueError:
        """``ValueError("<plugin>: <message>")``, for checks the getters do not cover."""
        return ValueError(f"{self.plugin}: {message}")

    def invalid(self, key: str, must: str, value: object) -> ValueError:
        """``ValueError("<plugin>: config key '<key>' must be <must>, got <value!r>")``; the
        value is shown redacted (``***`` for a secret-named key or a URL's password)."""
        return self.error(f"config key {key!r} must be {must}, got {redact(value, key)!r}")

    def required(self, key: str, what: str) -> Any:
        """The raw value of ``key``; its absence is an error that says ``what`` it is."""
        if key not in self.table:
            raise self.error(f"config key {key!r} is required ({what})")
        return self.table[key]

    # --- getters --------------------------------------------------------------------------

    def streams(
        self,
        *,
        pattern: re.Pattern[str] | None = None,
        why: str = "",
        fold: Callable[[str], str] | None = None,
        clash: str = "",
    ) -> tuple[str, ...]:
        """The required ``streams`` key: a non-empty list of unique, non-empty printable names.

        ``pattern``: each name must also match it in full (``why`` says what the name becomes,
        e.g. ``"becomes a table name"``). ``fold``: names equal after it are duplicates too
        (``clash`` says why, e.g. ``"map to the same table"``).
        """
        value = self.required("streams", "a list of stream names")
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise self.invalid("streams", "a non-empty list of stream names", value)
        if pattern is None:
            rule = f"each stream name {_PRINTABLE_RULE}"
        else:
            rule = f"each stream name {why + ' and ' if why else ''}must match {pattern.pattern}"
        seen: dict[str, str] = {}
        for name in value:
            if (
                not isinstance(name, str)
                or not name
                or not name.isprintable()
                or (pattern is not None and not pattern.fullmatch(name))
            ):
                raise self.error(f"config key 'streams' holds {name!r}; {rule}")
            folded = name if fold is None else fold(name)
            first = seen.get(folded)
            if first == name:
                raise self.error(f"config key 'streams' names {name!r} twice")
            if first is not None:
                raise self.error(
                    f"config key 'streams' names {first!r} and {name!r}, which {clash or 'clash'}"
                )
            seen[folded] = name
        return tuple(value)

    def string(
        self,
        key: str,
        default: str,
        *,
        must: str = "a string",
        check: Callable[[str], bool] | None = None,
    ) -> str:
        """An optional string; ``check`` (if given) must accept it, else ``must`` says why."""
        value = self.table.get(key, default)
        if not isinstance(value, str) or (check is not None and not check(value)):
            raise self.invalid(key, must, value)
        return value

    def path(
        self,
        key: str,
        *,
        what: str,
        must: str = "a non-empty path string",
        check: Callable[[str], bool] | None = None,
    ) -> Path:
        """A required filesystem path (non-empty, no NUL), with ``~`` expanded.

        Only the string is checked: nothing on disk is touched.
        """
        value = self.required(key, what)
        if (
            not isinstance(value, str)
            or not value
            or "\0" in value
            or (check is not None and not check(value))
        ):
            raise self.invalid(key, must, value)
        return Path(value).expanduser()

    def boolean(self, key: str, default: bool) -> bool:
        """An optional ``true`` / ``false``."""
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.invalid(key, "true or false", value)
        return value

    def integer(self, key: str, default: int, *, minimum: int | None = None) -> int:
        """An optional integer (not a bool), at least ``minimum`` if given."""
        value = self.table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (minimum is not None and value < minimum)
        ):
            bound = "" if minimum is None else f" >= {minimum}"
            raise self.invalid(key, f"an integer{bound}", value)
        return value

    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = None,
        strict: bool = False,
        unit: str = "",
    ) -> float:
        """An optional int or float (not a bool) as a float, ``>= minimum`` (``>`` if
        ``strict``); ``unit`` only words the message (``"a number of seconds > 0"``)."""
        value = self.table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value != value  # NaN
            or (minimum is not None and (value <= minimum if strict else value < minimum))
        ):
            bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
            raise self.invalid(key, f"a number{f' of {unit}' if unit else ''}{bound}", value)
        return float(value)

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        """An optional string among ``choices``, compared without case; returns the entry
        of ``choices`` it matched."""
        value = self.table.get(key, default)
        if isinstance(value, str):
            for option in choices:
                if value.casefold() == option.casefold():
                    return option
        quoted = [f'"{c}"' for c in choices]
        listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise self.invalid(key, listed, value)


class MirrorStore(Protocol):
    """What :class:`MirrorListener` needs from a store. Need not be thread-safe."""

    def digest(self) -> str:
        """:func:`streamer.wire.digest.snapshot_digest` of what the store holds."""
        ...

    def apply(self, resync: bool, changes: dict[str, bytes]) -> object:
        """Apply one batch atomically. ``resync``: ``changes`` is the whole new content;
        otherwise each item sets a key and an empty value deletes it. The result is passed
        to :meth:`MirrorListener.applied`."""
        ...

    def close(self) -> None:
        """Release the store; called at most once."""
        ...

    # Optional: ``key_count() -> int``, how many keys the store holds. The listener's
    # ``held_keys()`` returns it, so the core's mass-change guard also judges the first
    # snapshot after a restart (docs/reliability.md).


S = TypeVar("S", bound=MirrorStore)


class MirrorListener(Generic[S]):
    """A sync listener that mirrors the stream ``stream`` into the store ``open_store()`` gives.

    The store is opened on first use, in the host's worker thread: the factory only builds
    listeners, so ``streamer check`` creates nothing. An open that fails raises from that call
    and the supervisor retries it. Calls are serialised with a lock; after :meth:`close` every
    call raises ``RuntimeError``. Warnings go to the logger ``streamer.plugin.<plugin>``.

    Subclass to keep plugin-specific attributes, or to override :meth:`applied` (called after
    each batch with the store's result) or :meth:`get_extra_args` (e.g. return None when the
    digest cannot be read). ``reopen_on`` lists exception types after which the store is not
    trusted: it is closed and a fresh one is opened on the next call (e.g. a dropped table).
    """

    reopen_on: tuple[type[BaseException], ...] = ()

    def __init__(self, stream: str, *, plugin: str, open_store: Callable[[], S]) -> None:
        self.name = stream
        self.plugin = plugin
        self.log = logging.getLogger(f"streamer.plugin.{plugin}")
        self._open_store = open_store
        self._store: S | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def store(self) -> S:
        """The open store (opened now if needed)."""
        store = self._store
        if store is None:
            if self._closed:
                raise RuntimeError(f"the {self.plugin} listener of stream {self.name!r} is closed")
            store = self._store = self._open_store()
        return store

    def get_extra_args(self) -> StringValue | None:
        """The store's digest, so a server that has the same snapshot skips sending it."""
        from google.protobuf.wrappers_pb2 import StringValue

        with self._lock, self._reopening():
            return StringValue(value=self.store.digest())

    def update(self, batch: DataUpdateBatch) -> bool:
        """Apply ``batch`` to the store in one ``apply`` call; raises on a sink failure."""
        changes = {u.key: u.value for u in batch.updates}
        with self._lock, self._reopening():
            result = self.store.apply(batch.resync, changes)
        self.applied(batch.resync, changes, result)
        return True

    def held_keys(self) -> int | None:
        """How many keys the store holds, if it can count them (``key_count()``): the core's
        mass-change guard judges the first snapshot after a restart against it. None: the
        guard judges from the first applied batch on."""
        with self._lock, self._reopening():
            count = getattr(self.store, "key_count", None)
            return int(count()) if callable(count) else None

    @contextlib.contextmanager
    def _reopening(self) -> Iterator[None]:
        """Drop the store when a ``reopen_on`` error escapes (the caller holds the lock)."""
        try:
            yield
        except self.reopen_on:
            store, self._store = self._store, None
            if store is not None:
                try:
                    store.close()
                except Exception as exc:  # it already failed once; keep the first error
                    self.log.debug("stream=%s closing the failed store: %r", self.name, exc)
            raise

    def applied(self, resync: bool, changes: dict[str, bytes], result: object) -> None:
        """Called after each applied batch with what ``store.apply`` returned. Does nothing."""

    def report_error(self, error: BaseException) -> BaseException | None:
        """Keep streaming (the supervisor backs off and retries).

        The host already logs every reported error once, a listener's own exception with its
        traceback, so this notes it only at DEBUG, on one escaped line: logging it again at
        WARNING (let alone as a multi-line gRPC ``repr``) would double every failure line."""
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "stream=%s error reported: %s",
                escape(self.name),
                escape(f"{type(error).__name__}: {error}"),
            )
        return None

    def close(self) -> None:
        """Close the store if it was opened; later calls raise ``RuntimeError``."""
        with self._lock:
            self._closed = True
            store, self._store = self._store, None
            if store is not None:
                store.close()
