from __future__ import annotations

import threading
import time

from streamer.client._workers import WorkerPool


def test_blocked_call_does_not_delay_another() -> None:
    pool = WorkerPool()
    release = threading.Event()
    blocked = pool.submit(release.wait, 10)
    quick = pool.submit(lambda: 42)
    assert quick.result(timeout=2) == 42
    assert not blocked.done()
    release.set()
    assert blocked.result(timeout=2) is True
    pool.shutdown(wait=False)


def test_idle_worker_is_reused_and_retires() -> None:
    pool = WorkerPool(idle_timeout=0.2)
    assert pool.submit(lambda: 1).result(timeout=2) == 1
    deadline = time.monotonic() + 2
    # Wait for the worker to go idle, then reuse it.
    while time.monotonic() < deadline:
        assert pool.submit(lambda: 2).result(timeout=2) == 2
        if pool.threads == 1:
            break
    assert pool.threads == 1
    while pool.threads and time.monotonic() < deadline + 2:
        time.sleep(0.05)
    assert pool.threads == 0
    assert pool.submit(lambda: 3).result(timeout=2) == 3  # a new worker starts after retirement
    pool.shutdown(wait=False)


def test_exceptions_reach_the_future() -> None:
    pool = WorkerPool()

    def boom() -> None:
        raise ValueError("x")

    fut = pool.submit(boom)
    assert isinstance(fut.exception(timeout=2), ValueError)
    pool.shutdown(wait=False)


async def test_run_for_loop_delivers_results_and_errors_to_the_loop() -> None:
    import asyncio

    pool = WorkerPool()
    loop = asyncio.get_running_loop()
    caller = threading.get_ident()
    where: list[int] = []

    def work(x: int) -> int:
        where.append(threading.get_ident())
        return x * 2

    assert await pool.run_for_loop(loop, work, 21) == 42
    assert where and where[0] != caller  # ran off the event loop's thread

    def boom() -> None:
        raise KeyError("k")

    try:
        await pool.run_for_loop(loop, boom)
    except KeyError as exc:
        assert exc.args == ("k",)
    else:
        raise AssertionError("the worker's exception was not delivered")
    assert pool.threads == 1  # the same worker served both calls
    pool.shutdown(wait=False)
