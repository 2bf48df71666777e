"""Small listeners shared by the client and host tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

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
