"""A small kit for plugins that mirror streams into a store (files, a database, a cache).

Used by the first-party sinks (their ``[plugin.<name>]`` tables are declared as schemas, see
:mod:`streamer.host.schema`):

- :class:`MirrorListener` is the Listener face of a :class:`MirrorStore`: it opens the store
  on first use (never in the factory, which ``streamer check`` calls), serialises calls with a
  lock, sends the store's digest as ``extra_args``, applies each batch as ``{key: value}``,
  leaves reported errors to the host's log (DEBUG only here) and refuses use after
  ``close()``.

It does not import gRPC; protobuf is imported only when a digest is sent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from streamer.base.logs import escape

if TYPE_CHECKING:
    from google.protobuf.wrappers_pb2 import StringValue

    from streamer.wire.streamer_pb2 import DataUpdateBatch

__all__ = ["MirrorListener", "MirrorStore"]

_PRINTABLE_RULE = "must be a non-empty printable string"


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
