"""An elastic pool of daemon threads for sync listener methods.

A blocking ``update`` must only slow its own stream, so a call never waits for a busy worker: a
new thread starts whenever none is idle, and idle threads retire after ``idle_timeout``. The
number of threads is therefore bounded by the number of concurrently running calls, which is at
most one per stream. Threads are daemons so a listener stuck forever cannot keep the host from
exiting after its bounded shutdown wait.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["WorkerPool"]

T = TypeVar("T")
_Item = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class WorkerPool(Executor):
    def __init__(self, idle_timeout: float = 60.0, name: str = "streamer-worker") -> None:
        self._idle_timeout = idle_timeout
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting with no job reserved for them
        self._threads = 0
        self._counter = 0
        self._shutdown = False

    @property
    def threads(self) -> int:
        return self._threads

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a WorkerPool after shutdown")
            self._queue.put((fut, fn, args, kwargs))
            if self._idle > 0:
                self._idle -= 1
            else:
                self._threads += 1
                self._counter += 1
                t = threading.Thread(
                    target=self._work, name=f"{self._name}-{self._counter}", daemon=True
                )
                t.start()
        return fut

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            if item is None:
                with self._lock:
                    self._threads -= 1
                return
            fut, fn, args, kwargs = item
            del item
            if not fut.set_running_or_notify_cancel():
                with self._lock:
                    self._idle += 1
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                # Count as idle before waking the caller, so its next call reuses this thread.
                with self._lock:
                    self._idle += 1
                fut.set_exception(exc)
            else:
                with self._lock:
                    self._idle += 1
                fut.set_result(result)
            del fut, fn, args, kwargs

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Retire idle workers. Busy ones finish their call and then exit; never joined here
        when ``wait`` is False (a stuck listener must not hang the host)."""
        with self._lock:
            self._shutdown = True
            n = self._threads
        for _ in range(n):
            self._queue.put(None)
