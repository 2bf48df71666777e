"""streamer.sink.mirror: the table reader and the mirror listener shell plugin authors build on."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from streamer.client.listener import listener_problems
from streamer.sink.mirror import MirrorListener
from streamer.wire import DataUpdate, DataUpdateBatch
from streamer.wire.digest import snapshot_digest


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.closed = False

    def digest(self) -> str:
        return snapshot_digest(self.data.items())

    def apply(self, resync: bool, changes: dict[str, bytes]) -> int:
        if resync:
            self.data = dict(changes)
        else:
            for key, value in changes.items():
                if value:
                    self.data[key] = value
                else:
                    self.data.pop(key, None)
        return len(changes)

    def close(self) -> None:
        self.closed = True


def batch(resync: bool, **kv: bytes) -> DataUpdateBatch:
    return DataUpdateBatch(
        updates=[DataUpdate(key=k, value=v) for k, v in kv.items()], resync=resync
    )


def test_mirror_listener_opens_lazily_applies_and_sends_digest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stores: list[DictStore] = []

    def open_store() -> DictStore:
        stores.append(DictStore())
        return stores[-1]

    listener = MirrorListener("subs", plugin="kv", open_store=open_store)
    assert listener_problems(listener) == []
    assert stores == []  # building a listener touches nothing (streamer check calls factories)
    extra = listener.get_extra_args()
    assert isinstance(extra, StringValue) and extra.value == snapshot_digest(())
    assert listener.update(batch(True, a=b"1", b=b"2")) is True
    assert listener.update(batch(False, b=b"", c=b"3")) is True
    assert stores[0].data == {"a": b"1", "c": b"3"}
    extra = listener.get_extra_args()
    assert extra is not None and extra.value == snapshot_digest({"a": b"1", "c": b"3"}.items())
    assert len(stores) == 1
    with caplog.at_level(logging.DEBUG, "streamer.plugin.kv"):
        assert listener.report_error(ConnectionError("down\nforged")) is None
    # The host logs every reported error once; the kit only notes it at DEBUG, on one line.
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "stream=subs" in caplog.text and "ConnectionError: down\\nforged" in caplog.text
    listener.close()
    assert stores[0].closed
    with pytest.raises(RuntimeError, match="kv listener of stream 'subs' is closed"):
        listener.update(batch(False, d=b"4"))


def test_failed_open_raises_from_the_call_and_is_retried() -> None:
    attempts = []

    def flaky() -> DictStore:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk not mounted yet")
        return DictStore()

    listener = MirrorListener("s", plugin="kv", open_store=flaky)
    with pytest.raises(OSError, match="not mounted"):
        listener.update(batch(True, a=b"1"))
    assert listener.update(batch(True, a=b"1")) is True  # the supervisor's retry succeeds
    assert len(attempts) == 2


def test_sinks_module_imports_neither_grpc_nor_protobuf() -> None:
    code = (
        "import sys, streamer.sink.mirror; "
        "bad = [m for m in sys.modules if m.startswith(('grpc', 'google.protobuf'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reopen_on_drops_a_failed_store_and_opens_a_fresh_one() -> None:
    class Broken(DictStore):
        fail = True

        def apply(self, resync: bool, changes: dict[str, bytes]) -> int:
            if Broken.fail:
                Broken.fail = False
                raise ConnectionResetError("store connection died")
            return super().apply(resync, changes)

    opened: list[Broken] = []

    class Reopening(MirrorListener[Broken]):
        reopen_on = (ConnectionResetError,)

    listener = Reopening("s", plugin="kv", open_store=lambda: opened.append(Broken()) or opened[-1])
    with pytest.raises(ConnectionResetError):
        listener.update(batch(True, a=b"1"))
    assert opened[0].closed  # the failed store was closed...
    assert listener.update(batch(True, a=b"1")) is True
    assert len(opened) == 2  # ...and a fresh one served the retry
    assert opened[1].data == {"a": b"1"}
