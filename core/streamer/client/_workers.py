"""An elastic pool of daemon threads for sync listener methods.

A blocking ``update`` must only slow its own stream, so a call never waits for a busy worker: a
new thread starts whenever none is idle, and idle threads retire after ``idle_timeout``. The
number of threads is therefore bounded by the number of concurrently running calls, which is at
most one per stream. Threads are daemons so a listener stuck forever cannot keep the host from
exiting after its bounded shutdown wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["WorkerPool"]

T = TypeVar("T")


class WorkerPool(Executor):
    def __init__(self, idle_timeout: float = 60.0, name: str = "streamer-worker") -> None:
        self._idle_timeout = idle_timeout
        self._name = name
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
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

        def job() -> None:
            if not fut.set_running_or_notify_cancel():
                self._became_idle()
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._became_idle()
                fut.set_exception(_settable(exc))
            else:
                self._became_idle()
                fut.set_result(result)

        self._enqueue(job)
        return fut

    def run_for_loop(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], /, *args: Any
    ) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on a worker; the result arrives as an asyncio future of ``loop``.

        The fast path for listener calls: one hand-off each way, without the
        ``concurrent.futures.Future`` that ``loop.run_in_executor`` chains through.
        """
        afut: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:
                self._became_idle()
                _post(loop, _set_exception, afut, exc)
            else:
                self._became_idle()
                _post(loop, _set_result, afut, result)

        self._enqueue(job)
        return afut

    def _enqueue(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a WorkerPool after shutdown")
            self._queue.put(job)
            if self._idle > 0:
                self._idle -= 1
            else:
                self._threads += 1
                self._counter += 1
                t = threading.Thread(
                    target=self._work, name=f"{self._name}-{self._counter}", daemon=True
                )
                t.start()

    def _became_idle(self) -> None:
        """Called by a job before it wakes its caller, so the caller's next call reuses this
        thread instead of starting another."""
        with self._lock:
            self._idle += 1

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            if job is None:
                with self._lock:
                    self._threads -= 1
                return
            job()
            del job

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Retire idle workers. Busy ones finish their call and then exit; never joined here
        when ``wait`` is False (a stuck listener must not hang the host)."""
        with self._lock:
            self._shutdown = True
            n = self._threads
        for _ in range(n):
            self._queue.put(None)


def _post(loop: asyncio.AbstractEventLoop, setter: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(setter, *args)


def _set_result(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(_settable(exc))


def _settable(exc: BaseException) -> BaseException:
    """asyncio futures refuse ``StopIteration`` (TypeError in the callback, the future never
    settles, the caller waits forever): plugin code that leaks one (``next()`` on an empty
    iterator) gets it wrapped in a RuntimeError, the original as the cause."""
    if isinstance(exc, StopIteration):
        wrapped = RuntimeError(f"raised StopIteration: {exc}")
        wrapped.__cause__ = exc
        return wrapped
    return exc
