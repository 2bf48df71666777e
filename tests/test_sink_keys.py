"""Every key the protocol allows round-trips through every first-party sink, across a restart.

Issue 11: a key is any protobuf ``string`` (any Unicode without lone surrogates, NUL included,
any length). Each sink stores a snapshot of such keys, hands them back through an independent
read path (the files reader, a second SQLite connection, a second Redis client), reports the
matching digest after a restart, and deletes them all again after the restart. The log plugin
stores nothing; it only has to take every key.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamer.sink.conformance import listener_digest, make_batch
from streamer.wire.digest import snapshot_digest

_NFC = "\u00fc"
_NFD = unicodedata.normalize("NFD", _NFC)

# Any protobuf string: every code point but lone surrogates, NUL and controls included.
_CHARS = st.characters(exclude_categories=["Cs"])
KEYS = st.one_of(
    st.text(_CHARS, max_size=40),
    st.text(st.sampled_from("./.aA\x00%~\u00e9"), max_size=12),
    # Around the files sink's 200-byte name limit, with leading dots (each escapes to 3 bytes).
    st.builds(
        lambda dots, n, c: "." * dots + c * n,
        st.integers(1, 3),
        st.integers(185, 205),
        st.sampled_from("a.%\u00e9"),
    ),
    st.text(_CHARS, min_size=250, max_size=2000),
)
SNAPSHOTS = st.lists(KEYS, unique=True, max_size=6)

EDGE_KEYS = [
    "",
    ".",
    "..",
    "...",
    ".hidden",
    "." + "a" * 198,
    "." + "a" * 199,
    ".." + "a" * 197,
    "a\x00b",
    "\x00",
    "Key",
    "key",
    "KEY",
    _NFC,
    _NFD,
    "../../etc/passwd",
    "/abs",
    "k" * 5000,
    "\u00e9" * 300,
    "line\nbreak",
    "%2e",
    "~tilde",
]

Open = Callable[[], Any]  # a listener on the same storage
Read = Callable[[], dict[str, bytes]]


@contextmanager
def _files() -> Iterator[tuple[Open, Read]]:
    from streamer_files import create_listeners, read_stream

    with tempfile.TemporaryDirectory() as tmp:
        config = {"streams": ["s"], "dir": tmp, "fsync": False}
        yield (lambda: create_listeners(config)[0]), (lambda: read_stream(tmp, "s"))


@contextmanager
def _sqlite() -> Iterator[tuple[Open, Read]]:
    from streamer_sqlite import create_listeners, table_name

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "mirror.db"
        config = {"streams": ["s"], "path": str(db)}

        def read() -> dict[str, bytes]:
            with sqlite3.connect(db) as conn:
                rows = conn.execute(f'SELECT key, value FROM "{table_name("s")}"').fetchall()
            conn.close()
            return {k: bytes(v) for k, v in rows}

        yield (lambda: create_listeners(config)[0]), read


_redis_streams = itertools.count()


def _redis(url: str) -> AbstractContextManager[tuple[Open, Read]]:
    @contextmanager
    def sink() -> Iterator[tuple[Open, Read]]:
        import redis
        from streamer_redis import create_listeners

        stream = f"keys-{next(_redis_streams)}"
        config = {"streams": [stream], "url": url}
        client = redis.Redis.from_url(url)

        def read() -> dict[str, bytes]:
            raw: dict[bytes, bytes] = client.hgetall(f"streamer:{stream}")  # type: ignore[assignment]
            return {k.decode("utf-8"): v for k, v in raw.items()}

        try:
            yield (lambda: create_listeners(config)[0]), read
        finally:
            client.delete(f"streamer:{stream}", f"streamer:{stream}:digest")
            client.close()

    return sink()


def _round_trip(sink: AbstractContextManager[tuple[Open, Read]], keys: list[str]) -> None:
    expected = {key: b"value %d" % i for i, key in enumerate(keys)}
    with sink as (open_listener, read):
        first = open_listener()
        try:
            assert first.update(make_batch(expected, resync=True)) is True
            assert read() == expected
            assert listener_digest(first) == snapshot_digest(expected.items())
        finally:
            first.close()
        again = open_listener()  # a restart
        try:
            assert listener_digest(again) == snapshot_digest(expected.items())
            assert read() == expected
            assert again.update(make_batch(dict.fromkeys(expected, b""))) is True
            assert read() == {}
            assert listener_digest(again) == snapshot_digest(())
        finally:
            again.close()
        final = open_listener()  # the deletions survive a restart too
        try:
            assert listener_digest(final) == snapshot_digest(())
        finally:
            final.close()


_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _edge_examples(test: Callable[..., None]) -> Callable[..., None]:
    test = example(keys=EDGE_KEYS)(test)
    for key in EDGE_KEYS:
        test = example(keys=[key])(test)
    return test


@_SETTINGS
@given(keys=SNAPSHOTS)
@_edge_examples
def test_every_key_round_trips_through_the_files_sink(keys: list[str]) -> None:
    _round_trip(_files(), keys)


@_SETTINGS
@given(keys=SNAPSHOTS)
@_edge_examples
def test_every_key_round_trips_through_the_sqlite_sink(keys: list[str]) -> None:
    _round_trip(_sqlite(), keys)


@pytest.mark.redis
@_SETTINGS
@given(keys=SNAPSHOTS)
@_edge_examples
def test_every_key_round_trips_through_the_redis_sink(redis_server: str, keys: list[str]) -> None:
    _round_trip(_redis(redis_server), keys)


@given(keys=SNAPSHOTS)
@_edge_examples
def test_the_log_sink_stores_nothing_and_takes_every_key(keys: list[str]) -> None:
    from streamer_log import create_listeners

    factory: Any = create_listeners  # called with the raw table, as the host does
    (listener,) = factory({"streams": ["s"]})
    logging.getLogger("streamer.plugin.log").disabled = True
    try:
        assert listener.update(make_batch({k: b"v" for k in keys}, resync=True)) is True
        assert listener.get_extra_args() is None  # no digest: it holds nothing
    finally:
        logging.getLogger("streamer.plugin.log").disabled = False
        listener.close()
