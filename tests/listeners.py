"""Small listeners shared by the client and host tests."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from google.protobuf import wrappers_pb2

from streamer.wire import DataUpdateBatch


class Recorder:
    """A sync listener that records everything and answers as told.

    ``verdicts``: what update() returns, in order (then True). An exception instance in the
    list is raised instead. ``answers``: what report_error() returns, in order (then None); an
    exception *class* in the list is raised.
    """

    def __init__(
        self,
        name: str = "s1",
        *,
        verdicts: list[Any] | None = None,
        answers: list[Any] | None = None,
        extra: Any = None,
    ) -> None:
        self.name = name
        self.batches: list[DataUpdateBatch] = []
        self.errors: list[BaseException] = []
        self.extra_calls = 0
        self.verdicts = list(verdicts or [])
        self.answers = list(answers or [])
        self.extra = extra
        self.got_batch = asyncio.Event()
        self._loop = asyncio.get_event_loop()

    def get_extra_args(self) -> Any:
        self.extra_calls += 1
        if callable(self.extra):
            return self.extra(self.extra_calls)
        return self.extra

    def update(self, batch: DataUpdateBatch) -> Any:
        self.batches.append(batch)
        self._loop.call_soon_threadsafe(self.got_batch.set)
        verdict = self.verdicts.pop(0) if self.verdicts else True
        if isinstance(verdict, BaseException):
            raise verdict
        return verdict

    def report_error(self, error: BaseException) -> Any:
        self.errors.append(error)
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, type) and issubclass(answer, BaseException):
            raise answer("raised by report_error")
        return answer

    def keys(self) -> list[list[str]]:
        return [[u.key for u in b.updates] for b in self.batches]


class AsyncRecorder:
    """Same idea with ``async def`` methods."""

    def __init__(self, name: str = "a1") -> None:
        self.name = name
        self.batches: list[DataUpdateBatch] = []
        self.errors: list[BaseException] = []

    async def get_extra_args(self) -> wrappers_pb2.StringValue:
        await asyncio.sleep(0)
        return wrappers_pb2.StringValue(value=f"async-{len(self.batches)}")

    async def update(self, batch: DataUpdateBatch) -> bool:
        await asyncio.sleep(0)
        self.batches.append(batch)
        return True

    async def report_error(self, error: BaseException) -> BaseException | None:
        self.errors.append(error)
        return None


class Blocking(Recorder):
    """update() blocks its worker thread until released."""

    blocks = True  # its async twin runs update() in a worker thread (see async_twin)

    def __init__(self, name: str = "slow") -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.finished = threading.Event()

    def update(self, batch: DataUpdateBatch) -> Any:
        self.entered.set()
        self.release.wait(30)
        result = super().update(batch)
        self.finished.set()
        return result


class RecordingSleep:
    """Injectable sleep: records every delay, then yields to the loop without waiting."""

    def __init__(self, real_scale: float = 0.0) -> None:
        self.delays: list[float] = []
        self.real_scale = real_scale

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(delay * self.real_scale)


# -- both ways of running a stream -------------------------------------------------------------

L = TypeVar("L")
LISTENER_METHODS = ("get_extra_args", "update", "report_error")
_twins: dict[type[Any], type[Any]] = {}


def _async_method(fn: Callable[..., Any], blocks: bool) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def method(self: Any, *args: Any) -> Any:
        if blocks:  # a body that blocks on a threading.Event must not block the loop
            return await asyncio.to_thread(fn, self, *args)
        return fn(self, *args)

    return method


def async_twin(cls: type[L]) -> type[L]:
    """``cls`` with ``async def`` listener methods doing what its sync ones do: its stream runs
    on the event loop, where ``cls``'s own runs in a thread of its own. A class with
    ``blocks = True`` has its ``update`` run through ``asyncio.to_thread``."""
    twin = _twins.get(cls)
    if twin is None:
        blocks = bool(getattr(cls, "blocks", False))
        ns: dict[str, Any] = {"__doc__": f"{cls.__name__} with async methods."}
        for name in LISTENER_METHODS:
            fn = getattr(cls, name)
            if not inspect.iscoroutinefunction(fn):
                ns[name] = _async_method(fn, blocks and name == "update")
        twin = type(f"Async{cls.__name__}", (cls,), ns)
        _twins[cls] = twin
    return twin


PATHS = ("thread", "loop")
"""How a listener's stream runs: ``thread`` (a sync listener: its own thread, gRPC's sync API)
or ``loop`` (an async listener: the event loop, grpc.aio)."""


@pytest.fixture(params=PATHS)
def listener_path(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[type[L]], type[L]]]:
    """Run the test once per way of running a stream, so the two cannot drift.

    For ``loop``, every module-level sync listener class of the test module derived from
    :class:`Recorder` (``Recorder`` itself included) is replaced by its :func:`async_twin`
    for the test. Yields a function that does the same for a class the test defines itself.
    """
    if request.param == "thread":
        yield lambda cls: cls
        return
    module = request.module
    for name, obj in list(vars(module).items()):
        if isinstance(obj, type) and issubclass(obj, Recorder) and obj not in _twins.values():
            monkeypatch.setattr(module, name, async_twin(obj))
    yield async_twin
