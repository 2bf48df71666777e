"""Checks for sink-plugin authors: conformance of a listener, and crash consistency.

A *sink* is a listener that mirrors a stream into storage (a directory, a database, Redis...).
This module holds the checks every sink should pass, as plain functions that raise
``AssertionError`` (use them from pytest or anything else). Importing it imports neither gRPC
nor protobuf; the checks import protobuf when they build batches.

Conformance (each needs a fresh, empty sink; ``read_state()`` reads what the sink holds through
an independent path, e.g. another connection, and returns ``{key: value}``):

- :func:`check_resync_replaces`: a resync batch replaces the whole content.
- :func:`check_resync_keeps_empty_values`: in a resync, an empty value is a value.
- :func:`check_incremental`: a non-resync batch sets keys; an empty value deletes; the last
  update of a key wins; deleting a missing key is a no-op.
- :func:`check_digest`: ``get_extra_args().value`` is always
  :func:`streamer.wire.digest.snapshot_digest` of what the sink holds, also after reopening.

Each takes ``extra_check(expected)``, called after every applied batch with the content the
sink must now hold, for plugin-specific assertions (e.g. "no scratch key is left behind").

Crash consistency: :func:`check_crash_consistency` starts a child process that flips one stream
between two large states A and B (``python -m streamer.sink.conformance crash-child``, which calls
:func:`run_crash_child`), kills it with SIGKILL at random moments, and asserts the sink then
holds exactly A or B, that a reopened listener reports the matching digest, and that reopening
changed nothing. The child builds its listener with the plugin's own factory::

    from streamer.sink.conformance import CrashStates, check_crash_consistency

    def test_crash(tmp_path):
        check_crash_consistency(
            "streamer_kv:create_listeners",  # called as factory(config), like the host does
            {"streams": ["crash"], "path": str(tmp_path / "kv.db")},
            read_state=lambda: read_table(tmp_path / "kv.db", "crash"),
            states=CrashStates(n=5000),
        )

The factory is ``"module:function"`` or ``"/path/to/file.py:function"``; it returns one
listener or a list holding exactly one.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from streamer.wire.digest import DIGEST_PREFIX, EMPTY_DIGEST, snapshot_digest

if TYPE_CHECKING:
    from streamer.wire.streamer_pb2 import DataUpdateBatch

__all__ = [
    "CrashReport",
    "CrashStates",
    "ExtraCheck",
    "ReadState",
    "SinkListener",
    "check_crash_consistency",
    "check_digest",
    "check_incremental",
    "check_resync_keeps_empty_values",
    "check_resync_replaces",
    "crash_child_command",
    "listener_digest",
    "load_factory",
    "main",
    "make_batch",
    "run_crash_child",
]

State = dict[str, bytes]
ReadState = Callable[[], Mapping[str, bytes]]
"""Reads what the sink holds, as ``{key: value}``, without going through the listener."""
ExtraCheck = Callable[[State], object]
"""Plugin-specific assertions, called with the content the sink must hold at that point."""


class SinkListener(Protocol):
    """The part of the :class:`streamer.client.listener.Listener` contract the checks use.

    ``get_extra_args()`` returns a message whose ``value`` is the digest (a ``StringValue``,
    as :class:`streamer.sink.mirror.MirrorListener` sends); ``close()`` is optional.
    """

    def get_extra_args(self) -> Any: ...

    def update(self, batch: DataUpdateBatch) -> bool: ...


def _fail(message: str) -> AssertionError:
    return AssertionError(message)


def _expect(condition: bool, message: str) -> None:
    # Not `assert`: the checks must keep working under `python -O`.
    if not condition:
        raise _fail(message)


def make_batch(
    items: Mapping[str, bytes] | Iterable[tuple[str, bytes]], *, resync: bool = False
) -> DataUpdateBatch:
    """A ``DataUpdateBatch`` of ``items`` in order (pairs may repeat a key; the last one wins)."""
    from streamer.wire.streamer_pb2 import DataUpdate, DataUpdateBatch

    pairs = items.items() if isinstance(items, Mapping) else items
    return DataUpdateBatch(updates=[DataUpdate(key=k, value=v) for k, v in pairs], resync=resync)


def listener_digest(listener: SinkListener) -> str:
    """The digest ``listener`` sends as ``extra_args``; fails if it sends none."""
    args = listener.get_extra_args()
    _expect(args is not None, f"{listener!r}: get_extra_args() returned None, no digest")
    value = getattr(args, "value", None)
    _expect(
        isinstance(value, str) and value.startswith(DIGEST_PREFIX),
        f"{listener!r}: get_extra_args() is {args!r}, not a StringValue holding a digest",
    )
    assert isinstance(value, str)  # for the type checker
    return value


def _close(listener: object) -> None:
    close = getattr(listener, "close", None)
    if callable(close):
        close()


class _Stepper:
    """Applies batches to one listener and checks content and digest after each."""

    def __init__(
        self, check: str, listener: SinkListener, read: ReadState, extra: ExtraCheck | None
    ) -> None:
        self.check = check
        self.listener = listener
        self.read = read
        self.extra = extra
        self.seen: set[str] = set()

    def expect_empty(self) -> None:
        self.expect_digest({}, "at the start")  # first: this opens (creates) the storage
        held = dict(self.read())
        _expect(held == {}, f"{self.check}: needs an empty sink, it holds {held!r}")

    def expect_digest(self, expected: State, when: str) -> str:
        digest = listener_digest(self.listener)
        _expect(
            digest == snapshot_digest(expected.items()),
            f"{self.check}: {when}, the digest {digest} is not snapshot_digest of {expected!r}",
        )
        return digest

    def apply(self, batch: DataUpdateBatch, expected: State, step: str) -> None:
        what = "resync" if batch.resync else "incremental batch"
        when = f"after the {what} {step}"
        result = self.listener.update(batch)
        _expect(result is True, f"{self.check}: update() returned {result!r} {when}")
        held = dict(self.read())
        _expect(held == expected, f"{self.check}: {when} the sink holds {held!r}, not {expected!r}")
        digest = self.expect_digest(expected, when)
        _expect(digest not in self.seen, f"{self.check}: {when} the digest did not change")
        self.seen.add(digest)
        if self.extra is not None:
            self.extra(expected)


def check_resync_replaces(
    listener: SinkListener, read_state: ReadState, *, extra_check: ExtraCheck | None = None
) -> None:
    """Resync batches replace the content: keys missing from the snapshot go, an empty
    snapshot empties the sink; the digest follows. ``listener`` must start empty."""
    s = _Stepper("check_resync_replaces", listener, read_state, extra_check)
    s.expect_empty()
    s.seen.add(EMPTY_DIGEST)
    s.apply(make_batch({"a": b"1", "b": b"2"}, resync=True), {"a": b"1", "b": b"2"}, "a, b")
    s.apply(make_batch({"b": b"3", "c": b"4"}, resync=True), {"b": b"3", "c": b"4"}, "b, c")
    s.seen.discard(EMPTY_DIGEST)
    s.apply(make_batch({}, resync=True), {}, "of nothing")


def check_resync_keeps_empty_values(
    listener: SinkListener, read_state: ReadState, *, extra_check: ExtraCheck | None = None
) -> None:
    """In a resync an empty value is stored (only incremental batches delete with it)."""
    s = _Stepper("check_resync_keeps_empty_values", listener, read_state, extra_check)
    s.expect_empty()
    s.apply(make_batch({"a": b"", "b": b"x"}, resync=True), {"a": b"", "b": b"x"}, "a='', b")


def check_incremental(
    listener: SinkListener, read_state: ReadState, *, extra_check: ExtraCheck | None = None
) -> None:
    """An incremental batch sets keys and deletes those with an empty value; the last update of
    a key in a batch wins; deleting a missing key is a no-op. ``listener`` must start empty."""
    s = _Stepper("check_incremental", listener, read_state, extra_check)
    s.expect_empty()
    start = {"a": b"1", "b": b"2", "c": b"3"}
    s.apply(make_batch(start, resync=True), start, "a, b, c")
    changes = [
        ("a", b""),  # delete
        ("b", b"22"),  # change
        ("d", b"4"),  # add...
        ("d", b""),  # ... and delete again: the last one wins
        ("e", b"5"),
        ("zz", b""),  # deleting a missing key is a no-op
    ]
    s.apply(make_batch(changes), {"b": b"22", "c": b"3", "e": b"5"}, "a-, b=22, d+-, e+, zz-")


def check_digest(
    listener: SinkListener,
    read_state: ReadState,
    *,
    reopen: Callable[[], SinkListener] | None = None,
    extra_check: ExtraCheck | None = None,
) -> None:
    """The digest is ``snapshot_digest`` of the content after every batch (and differs from
    every earlier one here), including long keys. With ``reopen`` (returns a new listener on
    the same storage; close ``listener`` there if the sink allows one writer), the reopened
    listener reports the same digest and keeps it right through one more batch; it is closed
    at the end. ``listener`` must start empty."""
    s = _Stepper("check_digest", listener, read_state, extra_check)
    s.expect_empty()
    s.seen.add(EMPTY_DIGEST)
    held = {"a": b"1", "b": b"2"}
    s.apply(make_batch(held, resync=True), dict(held), "a, b")
    held = {"b": b"2", "c": b"3"}
    s.apply(make_batch({"a": b"", "c": b"3"}), dict(held), "a-, c+")
    long_key = "long" * 100
    held = {"b": b"2", "c": b"33", long_key: b"L"}
    s.apply(make_batch({"c": b"33", long_key: b"L"}), dict(held), "c=33, long key+")
    if reopen is None:
        return
    s.listener = reopen()
    try:
        s.check = "check_digest (reopened)"
        s.expect_digest(held, "right after reopening")
        s.apply(make_batch({"b": b"changed"}), {**held, "b": b"changed"}, "b=changed")
    finally:
        _close(s.listener)


# --- crash consistency ---------------------------------------------------------------------


@dataclass(frozen=True)
class CrashStates:
    """The two states the crash child flips a stream between, built the same way in the child
    and the parent. B is A with every third key deleted, half of the rest changed, and ``n/3``
    keys added. Keys follow ``key_format`` (formatted with ``i=``); with ``long_every=k``,
    every k-th key is 300+ characters long instead (for sinks that hash or escape names).
    Values are ``value_repeat`` copies of a short text. Batches are ``n`` keys large: make
    them large enough that applying one takes a while, so kills land mid-batch."""

    n: int = 5000
    key_format: str = "IMSI{i:015d}"
    long_every: int = 0
    value_repeat: int = 20

    def key(self, i: int) -> str:
        if self.long_every and i % self.long_every == 0:
            return f"long-{i:06d}-" + "x" * 300
        return self.key_format.format(i=i)

    def build(self) -> tuple[State, State]:
        """``(A, B)``."""
        a = {self.key(i): f"A {i} ".encode() * self.value_repeat for i in range(self.n)}
        b = {k: v for i, (k, v) in enumerate(a.items()) if i % 3 != 0}
        for i, k in enumerate(list(b)):
            if i % 2:
                b[k] = f"B {k[:30]} ".encode() * self.value_repeat
        b.update({f"new-{i}": b"B new" for i in range(self.n // 3)})
        return a, b

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CrashStates:
        return cls(**json.loads(text))


@dataclass
class CrashReport:
    """What :func:`check_crash_consistency` saw: rounds run, and how often each state was
    found after the kill (``{"A": 3, "B": 2}``)."""

    rounds: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


_loaded: dict[str, Callable[..., Any]] = {}


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``"module:function"`` or ``"/path/to/file.py:function"``."""
    if spec in _loaded:
        return _loaded[spec]
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"factory {spec!r}: expected 'module:function' or 'file.py:function'")
    if where.endswith(".py"):
        path = Path(where).resolve()
        module_name = f"_streamer_sinktest_{abs(hash(str(path))):x}_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"factory {spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up here
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    factory = getattr(module, name)
    if not callable(factory):
        raise ValueError(f"factory {spec!r} is not callable")
    _loaded[spec] = factory
    return factory  # type: ignore[no-any-return]


def _one_listener(factory: str, config: Mapping[str, Any]) -> SinkListener:
    made = load_factory(factory)(dict(config))
    if isinstance(made, (list, tuple)):
        if len(made) != 1:
            raise ValueError(f"{factory} returned {len(made)} listeners; configure one stream")
        made = made[0]
    return made  # type: ignore[no-any-return]


def run_crash_child(
    listener: SinkListener, states: CrashStates = CrashStates(), out: IO[str] | None = None
) -> None:
    """Flip ``listener`` between the states A and B forever, writing ``A`` or ``B`` (one line,
    flushed) after each applied batch: a resync to A, then an incremental batch to B."""
    out = sys.stdout if out is None else out
    a, b = states.build()
    to_a = make_batch(a, resync=True)
    changes = {k: b.get(k, b"") for k in (*a, *b) if a.get(k) != b.get(k)}
    a_to_b = make_batch(changes)
    while True:
        listener.update(to_a)
        print("A", file=out, flush=True)
        listener.update(a_to_b)
        print("B", file=out, flush=True)


def crash_child_command(
    factory: str, config: Mapping[str, Any], states: CrashStates = CrashStates()
) -> list[str]:
    """The command line of the crash child for ``factory(config)``."""
    return [
        sys.executable,
        "-m",
        "streamer.sink.conformance",
        "crash-child",
        "--factory",
        factory,
        "--config",
        json.dumps(dict(config)),
        "--states",
        states.to_json(),
    ]


def _describe(held: State, a: State, b: State) -> str:
    def off(target: State) -> int:
        return sum(1 for k in held.keys() | target.keys() if held.get(k) != target.get(k))

    return (
        f"the sink holds {len(held)} keys; {off(a)} keys differ from state A ({len(a)} keys), "
        f"{off(b)} from state B ({len(b)} keys)"
    )


def _first_line(child: subprocess.Popen[bytes], timeout: float) -> str:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    return child.stdout.readline().decode().strip() if ready else ""


def check_crash_consistency(
    factory: str,
    config: Mapping[str, Any],
    read_state: ReadState,
    *,
    states: CrashStates = CrashStates(),
    check_found: ExtraCheck | None = None,
    check_reopened: ExtraCheck | None = None,
    min_rounds: int = 3,
    max_rounds: int = 12,
    seconds: float = 10.0,
    max_delay: float = 0.3,
    seed: int = 0,
    start_timeout: float = 60.0,
) -> CrashReport:
    """SIGKILL a writer at random moments; after each kill the sink must hold exactly A or B.

    Each round starts :func:`crash_child_command` (``factory(config)`` must give one listener
    on the same storage every time), waits for its first applied batch, sleeps a random
    ``0..max_delay`` s (``seed`` makes the sequence repeatable), and kills it. Then:
    ``read_state()`` must be A or B, ``check_found(held)`` runs (before anything reopens the
    sink), a listener from ``factory(config)`` in this process must report
    ``snapshot_digest(held)``, ``read_state()`` must still be ``held`` (recovery changed
    nothing visible), ``check_reopened(held)`` runs, and that listener is closed.

    Runs at least ``min_rounds``, then more while under ``seconds``, up to ``max_rounds``.
    Raises ``AssertionError`` at the first inconsistency.
    """
    a, b = states.build()
    rng = random.Random(seed)
    report = CrashReport()
    deadline = time.monotonic() + seconds
    command = crash_child_command(factory, config, states)
    while report.rounds < min_rounds or (
        report.rounds < max_rounds and time.monotonic() < deadline
    ):
        report.rounds += 1
        where = f"round {report.rounds}"
        with tempfile.TemporaryFile() as errors:
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
            try:
                first = _first_line(child, start_timeout)
                if first in ("A", "B"):
                    time.sleep(rng.uniform(0, max_delay))
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait()
                assert child.stdout is not None
                child.stdout.close()
            if first not in ("A", "B"):
                errors.seek(0)
                stderr = errors.read().decode(errors="replace")[-4000:]
                raise _fail(f"{where}: the crash child applied nothing ({first!r}):\n{stderr}")

        held = dict(read_state())
        _expect(
            held in (a, b),
            f"{where}: a batch was half-applied after SIGKILL: {_describe(held, a, b)}",
        )
        outcome = "A" if held == a else "B"
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
        if check_found is not None:
            check_found(held)
        reopened = _one_listener(factory, config)
        try:
            _expect(
                listener_digest(reopened) == snapshot_digest(held.items()),
                f"{where}: the reopened sink holds state {outcome} but reports another digest",
            )
            _expect(
                dict(read_state()) == held,
                f"{where}: reopening the sink changed what it holds (state {outcome} before)",
            )
            if check_reopened is not None:
                check_reopened(held)
        finally:
            _close(reopened)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamer.sink.conformance crash-child --factory F --config JSON
    [--states JSON]``."""
    parser = argparse.ArgumentParser(prog="python -m streamer.sink.conformance")
    commands = parser.add_subparsers(dest="command", required=True)
    child = commands.add_parser(
        "crash-child", help="flip one sink between two states until killed (see run_crash_child)"
    )
    child.add_argument("--factory", required=True, help="module:function or file.py:function")
    child.add_argument("--config", required=True, help="the factory's table, as JSON")
    child.add_argument("--states", default="{}", help="CrashStates fields, as JSON")
    args = parser.parse_args(argv)
    listener = _one_listener(args.factory, json.loads(args.config))
    run_crash_child(listener, CrashStates.from_json(args.states))
    return 0  # pragma: no cover - run_crash_child runs until killed


if __name__ == "__main__":
    # Run the module's canonical copy, not this __main__ duplicate, so factories that import
    # streamer.sink.conformance share its classes.
    from streamer.sink.conformance import main as _main

    sys.exit(_main())
