from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest
import redis
from streamer_redis import RedisDataLost, RedisListener, RedisMirror, create_listeners

from streamer.client.backoff import Backoff
from streamer.client.listener import listener_problems
from streamer.server.sources import MemorySource
from streamer.sink import conformance as sinktest
from streamer.sink.conformance import listener_digest as _digest
from streamer.sink.conformance import make_batch as _batch
from streamer.testing import ReferenceServerFactory, run_listener
from streamer.wire.digest import EMPTY_DIGEST, snapshot_digest


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _hash(client: redis.Redis, key: str = "streamer:s") -> dict[str, bytes]:
    raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    return {k.decode(): v for k, v in raw.items()}


@pytest.fixture
def lst(redis_url: str) -> Iterator[RedisListener]:
    (listener,) = create_listeners({"streams": ["s"], "url": redis_url})
    yield listener
    listener.close()


def test_listeners_per_stream_contract_and_entry_point() -> None:
    listeners = create_listeners({"streams": ["a", "b"], "key_prefix": "gw1:"})
    assert [lst.name for lst in listeners] == ["a", "b"]
    assert [lst.mirror.key for lst in listeners] == ["gw1:a", "gw1:b"]
    assert all(listener_problems(lst) == [] for lst in listeners)
    for lst in listeners:
        lst.close()
    (ep,) = [e for e in entry_points(group="streamer.listeners") if e.name == "redis"]
    assert ep.load() is create_listeners


@pytest.mark.redis
def test_resync_replaces_the_content(lst: RedisListener, client: redis.Redis) -> None:
    def no_scratch_hash_and_no_empty_hash(expected: dict[str, bytes]) -> None:
        assert not client.exists("streamer:s:resync")
        assert client.exists("streamer:s") == (1 if expected else 0)

    sinktest.check_resync_replaces(
        lst, lambda: _hash(client), extra_check=no_scratch_hash_and_no_empty_hash
    )


@pytest.mark.redis
def test_resync_keeps_keys_with_empty_values(lst: RedisListener, client: redis.Redis) -> None:
    sinktest.check_resync_keeps_empty_values(lst, lambda: _hash(client))


@pytest.mark.redis
def test_identical_snapshot_writes_nothing(lst: RedisListener, client: redis.Redis) -> None:
    lst.update(_batch({"a": b"1"}, resync=True))
    assert lst.mirror.sync_snapshot({"a": b"1"}) is False
    assert lst.mirror.apply_changes({"a": b"1", "missing": b""}) is False
    assert lst.mirror.sync_snapshot({"a": b"2"}) is True


@pytest.mark.redis
def test_incremental_sets_and_empty_value_deletes(lst: RedisListener, client: redis.Redis) -> None:
    sinktest.check_incremental(lst, lambda: _hash(client))


def _digest_key_matches(client: redis.Redis, key: str) -> sinktest.ExtraCheck:
    def check(held: dict[str, bytes]) -> None:
        assert client.get(key) == snapshot_digest(held.items()).encode()

    return check


@pytest.mark.redis
def test_digest_tracks_content_and_lives_beside_the_hash(
    lst: RedisListener, client: redis.Redis, redis_url: str
) -> None:
    def reopen() -> RedisListener:  # e.g. after a restart
        (other,) = create_listeners({"streams": ["s"], "url": redis_url})
        return other

    sinktest.check_digest(
        lst,
        lambda: _hash(client),
        reopen=reopen,
        extra_check=_digest_key_matches(client, "streamer:s:digest"),
    )


HOSTILE = {
    "x\x00y": b"nul",
    "k" * 1000: b"long",
    "Key": b"upper",
    "key": b"lower",
    "ü": b"nfc",
    "u\u0308": b"nfd",
    "": b"empty key",
    "a:b": b"colon",
    "bin": bytes(range(256)),
}


@pytest.mark.redis
def test_hostile_keys_and_binary_values_round_trip(lst: RedisListener, client: redis.Redis) -> None:
    lst.update(_batch(HOSTILE, resync=True))
    assert _hash(client) == HOSTILE
    assert lst.mirror.read() == HOSTILE
    assert _digest(lst) == snapshot_digest(HOSTILE.items())
    lst.update(_batch(dict.fromkeys(HOSTILE, b"")))
    assert not client.exists("streamer:s")
    assert _digest(lst) == EMPTY_DIGEST


@pytest.mark.redis
def test_a_redis_that_lost_its_data_refuses_increments_and_asks_for_a_snapshot(
    lst: RedisListener, client: redis.Redis
) -> None:
    lst.update(_batch({"a": b"1", "b": b"2"}, resync=True))
    lst.update(_batch({"c": b"3"}))
    client.flushall()  # a restart without persistence, between two incremental batches
    with pytest.raises(RedisDataLost, match=r"stream 's' lost its data \(digest key missing\)"):
        lst.update(_batch({"d": b"4"}))
    assert _hash(client) == {}  # nothing half-applied, no digest of a partial state
    assert not client.exists("streamer:s:digest")
    # The supervisor opens a new call: the digest says "empty", so the server sends a snapshot.
    assert _digest(lst) == EMPTY_DIGEST
    full = {"a": b"1", "b": b"2", "c": b"3", "d": b"4"}
    assert lst.update(_batch(full, resync=True)) is True
    assert _hash(client) == full
    assert _digest(lst) == snapshot_digest(full.items())
    lst.update(_batch({"e": b"5"}))
    assert _hash(client) == {**full, "e": b"5"}


@pytest.mark.redis
def test_increments_after_reporting_an_empty_digest_are_applied(
    lst: RedisListener, client: redis.Redis
) -> None:
    # An empty server skips the snapshot for an empty sink: its increments build on "empty".
    lst.update(_batch({"a": b"1"}, resync=True))
    client.flushall()
    assert _digest(lst) == EMPTY_DIGEST  # a new call: what Redis holds is reported
    lst.update(_batch({"c": b"3"}))
    assert _hash(client) == {"c": b"3"}
    assert _digest(lst) == snapshot_digest([("c", b"3")])


@pytest.mark.redis
def test_an_evicted_hash_or_digest_key_is_noticed(lst: RedisListener, client: redis.Redis) -> None:
    lst.update(_batch({"a": b"1", "b": b"2"}, resync=True))
    client.delete("streamer:s")  # the hash evicted, its digest key left behind
    with pytest.raises(RedisDataLost, match=r"lost its data \(hash missing\)"):
        lst.update(_batch({"c": b"3"}))
    assert _digest(lst) == EMPTY_DIGEST
    lst.update(_batch({"a": b"1", "b": b"2"}, resync=True))
    client.delete("streamer:s:digest")  # the digest key evicted
    with pytest.raises(RedisDataLost, match=r"digest key missing"):
        lst.update(_batch({"c": b"3"}))
    assert _digest(lst) == snapshot_digest([("a", b"1"), ("b", b"2")])  # the hash is adopted
    lst.update(_batch({"c": b"3"}))
    assert _hash(client) == {"a": b"1", "b": b"2", "c": b"3"}


@pytest.mark.redis
def test_a_hash_changed_behind_the_sinks_back_is_refused(
    lst: RedisListener, client: redis.Redis
) -> None:
    lst.update(_batch({"a": b"1"}, resync=True))
    other = RedisMirror(client, "s")  # another writer, keeping the digest key consistent
    other.apply_changes({"a": b"other"})
    with pytest.raises(RedisDataLost, match="did not write"):
        lst.update(_batch({"b": b"2"}))
    assert _hash(client) == {"a": b"other"}
    assert _digest(lst) == snapshot_digest([("a", b"other")])


@pytest.mark.redis
async def test_flushall_mid_stream_is_repaired_by_a_snapshot(
    lst: RedisListener,
    client: redis.Redis,
    reference_server: ReferenceServerFactory,
) -> None:
    data = {f"k{i}": f"v{i}".encode() for i in range(50)}
    source = MemorySource({"s": data})
    server = await reference_server(source, mode="push")
    stream = asyncio.create_task(
        run_listener(
            lst,
            server.address,
            until=lambda: False,
            timeout=30,
            backoff=Backoff(initial=0.05, maximum=0.2, jitter=0),
        )
    )

    async def hash_becomes(expected: dict[str, bytes]) -> None:
        deadline = time.monotonic() + 10
        while _hash(client) != expected:
            assert time.monotonic() < deadline, (_hash(client), expected)
            await asyncio.sleep(0.02)

    try:
        await hash_becomes(data)
        client.flushall()
        source.set("s", "new", b"x")  # an incremental batch onto a Redis that lost everything
        await hash_becomes({**data, "new": b"x"})
        assert client.get("streamer:s:digest") == snapshot_digest(_hash(client).items()).encode()
    finally:
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)


@pytest.mark.redis
def test_an_identical_snapshot_unlinks_a_leftover_scratch_hash(
    lst: RedisListener, client: redis.Redis
) -> None:
    lst.update(_batch({"a": b"1"}, resync=True))
    client.hset("streamer:s:resync", mapping={"half": b"written"})  # SIGKILL mid-resync
    assert lst.mirror.sync_snapshot({"a": b"1"}) is False
    assert not client.exists("streamer:s:resync")
    assert _hash(client) == {"a": b"1"}


@pytest.mark.redis
def test_resync_unlinks_the_old_hash_instead_of_renaming_over_it(
    lst: RedisListener, client: redis.Redis
) -> None:
    lst.update(_batch({"a": b"1"}, resync=True))
    with client.monitor() as monitor:
        lst.update(_batch({"b": b"2"}, resync=True))
        commands = []
        while not commands or commands[-1] != "EXEC":
            commands.append(monitor.next_command()["command"].split()[0].upper())
    assert commands[-5:] == ["MULTI", "UNLINK", "RENAME", "SET", "EXEC"]
    assert _hash(client) == {"b": b"2"}


@pytest.mark.redis
def test_a_hash_written_by_something_else_is_adopted(
    lst: RedisListener, client: redis.Redis
) -> None:
    client.hset("streamer:s", mapping={"a": b"1"})
    assert _digest(lst) == snapshot_digest([("a", b"1")])
    assert client.get("streamer:s:digest") == snapshot_digest([("a", b"1")]).encode()


@pytest.mark.redis
def test_close_releases_the_connection(redis_url: str, client: redis.Redis) -> None:
    def clients() -> int:
        return len(client.client_list())

    baseline = clients()
    (listener,) = create_listeners({"streams": ["s"], "url": redis_url})
    listener.update(_batch({"a": b"1"}, resync=True))
    assert clients() == baseline + 1
    listener.close()
    deadline = time.monotonic() + 5
    while clients() != baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    assert clients() == baseline
    with pytest.raises(RuntimeError, match="closed"):
        listener.update(_batch({"a": b"2"}))


def _refused_port() -> int:
    """A loopback TCP port with nothing listening (picked, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_redis_down_update_raises_and_digest_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://127.0.0.1:{_refused_port()}/0"
    (listener,) = create_listeners({"streams": ["s"], "url": url, "timeout": 0.5})
    assert listener.get_extra_args() is None
    assert "cannot read the digest" in caplog.text
    with pytest.raises(redis.RedisError):
        listener.update(_batch({"a": b"1"}, resync=True))
    assert listener.report_error(redis.ConnectionError("down")) is None
    listener.close()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({}, "streams"),
        ({"streams": []}, "streams"),
        ({"streams": ["a:digest"]}, "streams"),
        ({"streams": ["a", "a"]}, "streams"),
        ({"streams": ["a"], "url": "http://localhost"}, "url"),
        ({"streams": ["a"], "url": 6379}, "url"),
        ({"streams": ["a"], "key_prefix": 1}, "key_prefix"),
        ({"streams": ["a"], "timeout": 0}, "timeout"),
        ({"streams": ["a"], "host": "localhost"}, "host"),
        ({"streams": ["a"], "timeout": float("inf")}, "timeout"),
        ({"streams": ["a"], "url": "redis://10.0.0.1:6379/0"}, "url"),
        ({"streams": ["a"], "url": "redis://cache.example.com/0", "insecure": False}, "url"),
    ],
)
def test_bad_config_names_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"(^|\d\. ){key}(\[\d+\])?: "):
        create_listeners(table)


def test_a_remote_redis_needs_tls_or_an_explicit_insecure() -> None:
    with pytest.raises(ValueError, match=r"not loopback; use rediss:// .* or set insecure = true"):
        create_listeners({"streams": ["a"], "url": "redis://10.0.0.1:6379/0"})
    for url, insecure in [
        ("rediss://10.0.0.1:6379/0", False),
        ("redis://10.0.0.1:6379/0", True),
        ("redis://127.0.0.1:6379/0", False),
        ("unix:///run/redis.sock", False),
    ]:
        listeners = create_listeners({"streams": ["a"], "url": url, "insecure": insecure})
        assert [lst.name for lst in listeners] == ["a"]
        for lst in listeners:
            lst.close()


@pytest.mark.redis
@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_old_or_new_state(
    redis_url: str, client: redis.Redis
) -> None:
    report = sinktest.check_crash_consistency(
        "streamer_redis:create_listeners",
        {"streams": ["crash"], "url": redis_url},
        lambda: _hash(client, "streamer:crash"),
        states=sinktest.CrashStates(n=5000),
        check_found=_digest_key_matches(client, "streamer:crash:digest"),
        seed=99,
    )
    assert report.outcomes
