"""streamer.sink.conformance against sinks written here: correct ones pass, broken ones are caught.

The crash checks load this file in a child process (``path.py:factory``), so it keeps its
imports light and its sinks at the top.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from streamer.sink import conformance as sinktest
from streamer.sink.conformance import CrashStates, make_batch
from streamer.wire.digest import EMPTY_DIGEST, snapshot_digest
from streamer.wire.streamer_pb2 import DataUpdateBatch

THIS_FILE = Path(__file__)

# --- sinks ---------------------------------------------------------------------------------


class MemorySink:
    """A correct sink in a dict. The subclasses below each break one rule."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def digest(self) -> str:
        return snapshot_digest(self.data.items())

    def get_extra_args(self) -> StringValue | None:
        return StringValue(value=self.digest())

    def update(self, batch: DataUpdateBatch) -> bool:
        if batch.resync:
            self.data = {u.key: u.value for u in batch.updates}
        else:
            for u in batch.updates:
                self.set(u.key, u.value)
        return True

    def set(self, key: str, value: bytes) -> None:
        if value:
            self.data[key] = value
        else:
            self.data.pop(key, None)

    def read(self) -> dict[str, bytes]:
        return dict(self.data)


class EmptyValuesDroppedInResync(MemorySink):
    def update(self, batch: DataUpdateBatch) -> bool:
        if batch.resync:
            self.data = {}
        for u in batch.updates:
            self.set(u.key, u.value)
        return True


class ResyncMerges(MemorySink):
    def update(self, batch: DataUpdateBatch) -> bool:
        self.data.update({u.key: u.value for u in batch.updates})
        return True


class EmptyValueIsStored(MemorySink):
    def set(self, key: str, value: bytes) -> None:
        self.data[key] = value


class FirstUpdateWins(MemorySink):
    def update(self, batch: DataUpdateBatch) -> bool:
        if batch.resync:
            return super().update(batch)
        for u in reversed(batch.updates):
            self.set(u.key, u.value)
        return True


class StaleDigest(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.cached: str | None = None

    def digest(self) -> str:
        if self.cached is None:
            self.cached = super().digest()
        return self.cached


class LongKeysLeftOutOfTheDigest(MemorySink):
    def digest(self) -> str:
        return snapshot_digest((k, v) for k, v in self.data.items() if len(k) < 100)


class UpdateReturnsFalse(MemorySink):
    def update(self, batch: DataUpdateBatch) -> bool:
        super().update(batch)
        return False


class NoDigest(MemorySink):
    def get_extra_args(self) -> StringValue | None:
        return None


def _name(key: str) -> str:
    return key.encode("utf-8", "surrogatepass").hex() or "empty"


class DirSink:
    """A sink in a directory, built by ``dir_sink(config)`` here and in the crash child.

    ``layout``: ``"atomic"`` keeps the whole content in one JSON file replaced by a rename
    (correct); ``"torn"`` writes one file per key in place, sleeping ``delay`` s after each
    (a kill leaves half a batch); ``"digest-lags"`` is atomic but keeps the digest in a second
    file written ``delay`` s after the content (a kill leaves a digest of the old state).
    """

    def __init__(self, root: Path, layout: str = "atomic", delay: float = 0.0) -> None:
        self.root = root
        self.layout = layout
        self.delay = delay
        root.mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[str, bytes]:
        if self.layout == "torn":
            return {
                bytes.fromhex(n if n != "empty" else "").decode(): (self.root / n).read_bytes()
                for n in os.listdir(self.root)
                if not n.endswith(".tmp")
            }
        try:
            text = (self.root / "state.json").read_text()
        except FileNotFoundError:
            return {}
        return {k: bytes.fromhex(v) for k, v in json.loads(text).items()}

    def get_extra_args(self) -> StringValue:
        if self.layout == "digest-lags":
            path = self.root / "digest"
            return StringValue(value=path.read_text() if path.exists() else EMPTY_DIGEST)
        return StringValue(value=snapshot_digest(self.read().items()))

    def _replace(self, name: str, text: str) -> None:
        tmp = self.root / f"{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.root / name)

    def update(self, batch: DataUpdateBatch) -> bool:
        old = self.read()
        new = {} if batch.resync else dict(old)
        for u in batch.updates:
            if u.value or batch.resync:
                new[u.key] = u.value
            else:
                new.pop(u.key, None)
        if self.layout == "torn":
            for key, value in new.items():
                (self.root / _name(key)).write_bytes(value)
                time.sleep(self.delay)
            for key in old.keys() - new.keys():
                (self.root / _name(key)).unlink()
                time.sleep(self.delay)
            return True
        self._replace("state.json", json.dumps({k: v.hex() for k, v in new.items()}))
        if self.layout == "digest-lags":
            time.sleep(self.delay)
            self._replace("digest", snapshot_digest(new.items()))
        return True

    def close(self) -> None:
        pass


def dir_sink(config: Mapping[str, Any]) -> list[DirSink]:
    """The factory: ``{"dir": ..., "layout": ..., "delay": ...}``, one listener."""
    return [DirSink(Path(config["dir"]), config.get("layout", "atomic"), config.get("delay", 0))]


# --- conformance checks ---------------------------------------------------------------------

CHECKS: list[Callable[[Any, sinktest.ReadState], None]] = [
    sinktest.check_resync_replaces,
    sinktest.check_resync_keeps_empty_values,
    sinktest.check_incremental,
    sinktest.check_digest,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_a_correct_memory_sink_passes_every_check(check: Any) -> None:
    sink = MemorySink()
    calls: list[dict[str, bytes]] = []
    check(sink, sink.read, extra_check=calls.append)
    assert calls and calls[-1] == sink.read()  # called after each batch with the content


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_a_correct_dir_sink_passes_every_check(check: Any, tmp_path: Path) -> None:
    sink = DirSink(tmp_path)
    check(sink, sink.read)


def test_check_digest_reopens_and_closes_the_reopened_listener(tmp_path: Path) -> None:
    sink = DirSink(tmp_path)
    reopened: list[DirSink] = []

    class Closing(DirSink):
        closed = False

        def close(self) -> None:
            self.closed = True

    def reopen() -> DirSink:
        reopened.append(Closing(tmp_path))
        return reopened[-1]

    sinktest.check_digest(sink, sink.read, reopen=reopen)
    assert len(reopened) == 1 and reopened[0].closed
    assert sink.read() == {"b": b"changed", "c": b"33", "long" * 100: b"L"}


def test_make_batch_keeps_order_and_repeats() -> None:
    batch = make_batch([("a", b"1"), ("a", b"")], resync=False)
    assert [(u.key, u.value) for u in batch.updates] == [("a", b"1"), ("a", b"")]
    assert make_batch({"x": b"y"}, resync=True).resync


BROKEN: list[tuple[Callable[..., None], type[MemorySink], str]] = [
    (sinktest.check_resync_replaces, ResyncMerges, "check_resync_replaces: after the resync"),
    (sinktest.check_resync_keeps_empty_values, EmptyValuesDroppedInResync, "holds {'b': b'x'}"),
    (sinktest.check_incremental, EmptyValueIsStored, "check_incremental: after the incr"),
    (sinktest.check_incremental, FirstUpdateWins, "'d': b'4'"),
    (sinktest.check_digest, StaleDigest, "the digest .* is not snapshot_digest"),
    (sinktest.check_digest, LongKeysLeftOutOfTheDigest, "long key"),
    (sinktest.check_resync_replaces, UpdateReturnsFalse, r"update\(\) returned False"),
    (sinktest.check_incremental, NoDigest, r"get_extra_args\(\) returned None"),
]


@pytest.mark.parametrize(
    ("check", "sink", "message"), BROKEN, ids=[s.__name__ for _, s, _ in BROKEN]
)
def test_a_broken_sink_fails_the_check(check: Any, sink: type[MemorySink], message: str) -> None:
    listener = sink()
    with pytest.raises(AssertionError, match=message):
        check(listener, listener.read)


def test_checks_need_an_empty_sink() -> None:
    sink = MemorySink()
    sink.data = {"left": b"over"}
    with pytest.raises(AssertionError, match="at the start"):
        sinktest.check_incremental(sink, sink.read)


def test_a_failing_extra_check_propagates() -> None:
    def never(expected: dict[str, bytes]) -> None:
        raise AssertionError("plugin-specific")

    sink = MemorySink()
    with pytest.raises(AssertionError, match="plugin-specific"):
        sinktest.check_resync_replaces(sink, sink.read, extra_check=never)


# --- crash consistency ----------------------------------------------------------------------

FACTORY = f"{THIS_FILE}:dir_sink"


def _crash(root: Path, layout: str, delay: float, **kwargs: Any) -> sinktest.CrashReport:
    return sinktest.check_crash_consistency(
        FACTORY,
        {"dir": str(root), "layout": layout, "delay": delay},
        DirSink(root, layout).read,
        states=CrashStates(n=100),
        min_rounds=3,
        max_rounds=3,
        max_delay=0.2,
        seed=7,
        **kwargs,
    )


def test_crash_states_are_distinct_and_round_trip_as_json() -> None:
    states = CrashStates(n=30, key_format="K/{i:02d}", long_every=7, value_repeat=2)
    a, b = states.build()
    assert len(a) == 30 and a != b and a.keys() & b.keys() and a.keys() - b.keys()
    assert any(len(k) > 300 for k in a) and any(a[k] != b[k] for k in a.keys() & b.keys())
    assert CrashStates.from_json(states.to_json()) == states
    assert states.build() == (a, b)


def test_run_crash_child_flips_between_the_states_and_reports_each_batch() -> None:
    class Stop(Exception):
        pass

    sink = MemorySink()
    states = CrashStates(n=10)
    a, b = states.build()
    seen: list[dict[str, bytes]] = []

    def update(batch: DataUpdateBatch) -> bool:
        MemorySink.update(sink, batch)
        seen.append(sink.read())
        if len(seen) == 3:
            raise Stop
        return True

    sink.update = update  # type: ignore[method-assign]
    out = io.StringIO()
    with pytest.raises(Stop):
        sinktest.run_crash_child(sink, states, out)
    assert out.getvalue() == "A\nB\n"
    assert seen == [a, b, a]


def test_an_atomic_sink_survives_sigkill(tmp_path: Path) -> None:
    found: list[dict[str, bytes]] = []
    report = _crash(
        tmp_path / "root", "atomic", 0.0, check_found=found.append, check_reopened=found.append
    )
    assert report.rounds == 3 and sum(report.outcomes.values()) == 3
    assert len(found) == 6 and found[0] in CrashStates(n=100).build()


def test_a_sink_that_writes_key_by_key_is_caught_half_applied(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"round \d: a batch was half-applied after SIGKILL"):
        _crash(tmp_path / "root", "torn", 0.003)


def test_a_digest_written_after_the_content_is_caught(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="reports another digest"):
        _crash(tmp_path / "root", "digest-lags", 0.3)


def test_a_child_that_cannot_build_its_listener_is_reported(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"(?s)applied nothing.*AttributeError"):
        sinktest.check_crash_consistency(f"{THIS_FILE}:no_such_factory", {}, dict, min_rounds=1)


@pytest.mark.parametrize("spec", ["nocolon", ":f", "m:", f"{THIS_FILE}:HERE"])
def test_bad_factory_specs(spec: str) -> None:
    with pytest.raises((ValueError, AttributeError)):
        sinktest.load_factory(spec)


def test_the_kit_imports_neither_grpc_nor_protobuf() -> None:
    code = (
        "import sys, streamer.sink.conformance; "
        "print([m for m in sys.modules if m.startswith(('grpc', 'google'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
