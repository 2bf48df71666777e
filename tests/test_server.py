"""The reference Streamer server, over real loopback gRPC with a plain grpc.aio client."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from streamer.server.reference import (
    METHOD,
    ReferenceServer,
    ServerTLS,
    StreamSpec,
    open_source,
    requested_digest,
    run_server,
)
from streamer.server.sources import (
    DirectorySource,
    MemorySource,
    SourceError,
    SQLiteSource,
    UnknownStreamError,
    key_filename,
    write_key,
)
from streamer.testing import ReferenceServerFactory
from streamer.wire.digest import EMPTY_DIGEST, snapshot_digest
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest
from tests.certs import make_pki

Call = Any  # grpc.aio.UnaryStreamCall[StreamRequest, DataUpdateBatch]


def request(stream: str, digest: str | None = None, gateway: str = "gw1") -> StreamRequest:
    req = StreamRequest(gatewayId=gateway, stream_name=stream)
    if digest is not None:
        req.extra_args.Pack(StringValue(value=digest))
    return req


def open_call(channel: grpc.aio.Channel, req: StreamRequest) -> Call:
    stub = channel.unary_stream(
        METHOD,
        request_serializer=StreamRequest.SerializeToString,
        response_deserializer=DataUpdateBatch.FromString,
    )
    return stub(req)


async def read(call: Call, timeout: float = 3.0) -> DataUpdateBatch:
    batch = await asyncio.wait_for(call.read(), timeout)
    assert batch is not grpc.aio.EOF, "call ended, expected a batch"
    assert isinstance(batch, DataUpdateBatch)
    return batch


async def read_all(call: Call, timeout: float = 3.0) -> list[DataUpdateBatch]:
    async def collect() -> list[DataUpdateBatch]:
        out = []
        while (batch := await call.read()) is not grpc.aio.EOF:
            out.append(batch)
        return out

    return await asyncio.wait_for(collect(), timeout)


def as_dict(batch: DataUpdateBatch) -> dict[str, bytes]:
    return {u.key: u.value for u in batch.updates}


async def read_until(call: Call, want: dict[str, bytes], timeout: float = 3.0) -> None:
    """Read resync=False batches until ``want`` has been seen (changes may be coalesced)."""
    seen: dict[str, bytes] = {}

    async def loop() -> None:
        while any(seen.get(k) != v for k, v in want.items()):
            batch = await read(call, timeout)
            assert not batch.resync
            seen.update(as_dict(batch))

    await asyncio.wait_for(loop(), timeout)


@pytest.fixture
async def channels() -> AsyncIterator[Any]:
    opened: list[grpc.aio.Channel] = []

    def make(address: str, **options: Any) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(address, options=list(options.items()))
        opened.append(ch)
        return ch

    yield make
    for ch in opened:
        await ch.close()


SUBS = {"imsi1": b"one", "imsi2": b"two"}


async def test_poll_mode_sends_one_resync_batch_then_ends(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    server = await reference_server(MemorySource({"subs": SUBS}), "poll")
    call = open_call(channels(server.address), request("subs"))
    batches = await read_all(call)
    assert len(batches) == 1
    assert batches[0].resync is True
    assert as_dict(batches[0]) == SUBS
    assert await call.code() == grpc.StatusCode.OK


async def test_push_mode_sends_snapshot_then_changes(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    source = MemorySource({"subs": SUBS})
    server = await reference_server(source, "push")
    call = open_call(channels(server.address), request("subs"))
    first = await read(call)
    assert first.resync and as_dict(first) == SUBS

    source.set("subs", "imsi3", b"three")
    batch = await read(call)
    assert not batch.resync and as_dict(batch) == {"imsi3": b"three"}

    source.delete("subs", "imsi1")
    batch = await read(call)
    assert not batch.resync and as_dict(batch) == {"imsi1": b""}

    source.set("subs", "imsi2", b"two")  # unchanged value: not a change
    source.replace("subs", {"imsi2": b"TWO", "imsi4": b"four"})
    batch = await read(call)
    assert not batch.resync
    assert as_dict(batch) == {"imsi2": b"TWO", "imsi3": b"", "imsi4": b"four"}
    call.cancel()


async def test_per_stream_mode_overrides(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    source = MemorySource({"a": SUBS, "b": SUBS, "c": SUBS})
    server = await reference_server(source, "push", modes={"a": "poll"})
    ch = channels(server.address)
    assert len(await read_all(open_call(ch, request("a")))) == 1
    push_call = open_call(ch, request("b"))
    await read(push_call)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(push_call.read(), 0.2)  # still open, nothing to send
    push_call.cancel()

    server2 = await reference_server(source, "poll", modes=[StreamSpec("c", "push")])
    assert server2.mode_for("c") == "push" and server2.mode_for("a") == "poll"
    with pytest.raises(ValueError, match="'sideways'"):
        ReferenceServer(source, "sideways")
    with pytest.raises(ValueError, match="stream 'x'"):
        ReferenceServer(source, modes={"x": "nope"})


async def test_digest_match_skips_snapshot(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    source = MemorySource({"subs": SUBS})
    digest = snapshot_digest(SUBS.items())
    poll = await reference_server(source, "poll")
    batches = await read_all(open_call(channels(poll.address), request("subs", digest)))
    assert batches == []

    stale = await read_all(open_call(channels(poll.address), request("subs", EMPTY_DIGEST)))
    assert len(stale) == 1 and stale[0].resync

    push = await reference_server(source, "push")
    call = open_call(channels(push.address), request("subs", digest))
    await asyncio.wait_for(call.initial_metadata(), 3)  # sent at once when nothing else is
    source.set("subs", "imsi1", b"ONE")
    batch = await read(call)
    assert not batch.resync and as_dict(batch) == {"imsi1": b"ONE"}
    call.cancel()


def test_requested_digest_ignores_other_extra_args() -> None:
    assert requested_digest(request("s")) is None
    assert requested_digest(request("s", "sha256:ab")) == "sha256:ab"
    other = request("s")
    other.extra_args.Pack(StreamRequest(stream_name="x"))
    assert requested_digest(other) is None


async def test_unknown_stream_is_unavailable(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    server = await reference_server(MemorySource({"subs": SUBS}), "push")
    call = open_call(channels(server.address), request("nope"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all(call)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "'nope'" in (info.value.details() or "")
    assert "'subs'" not in (info.value.details() or "")


async def test_removed_stream_ends_push_calls_with_unavailable(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    source = MemorySource({"subs": SUBS})
    server = await reference_server(source, "push")
    call = open_call(channels(server.address), request("subs"))
    await read(call)
    source.remove_stream("subs")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all(call)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_requests_are_recorded_and_logged(
    reference_server: ReferenceServerFactory, channels: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamer.server.reference")
    source = MemorySource({"subs": SUBS})
    server = await reference_server(source, "poll")
    ch = channels(server.address)
    await read_all(open_call(ch, request("subs", gateway="gw-A")))
    await read_all(open_call(ch, request("subs", snapshot_digest(SUBS.items()), gateway="gw-B")))
    assert [(r.gatewayId, r.stream_name) for r in server.requests] == [
        ("gw-A", "subs"),
        ("gw-B", "subs"),
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "streamer.server.reference"]
    gets = [line for line in lines if line.startswith("GetUpdates")]
    assert len(gets) == 2
    assert "'gw-A'" in gets[0] and "digest_matched=False" in gets[0] and "peer=ipv4:" in gets[0]
    assert "'gw-B'" in gets[1] and "digest_matched=True" in gets[1]


async def test_hundred_concurrent_push_calls(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    source = MemorySource({"subs": SUBS})
    server = await reference_server(source, "push")
    ch = channels(server.address)
    calls = [open_call(ch, request("subs", gateway=f"gw{i}")) for i in range(100)]
    firsts = await asyncio.gather(*(read(c, 10) for c in calls))
    assert all(b.resync and as_dict(b) == SUBS for b in firsts)
    source.set("subs", "imsi9", b"nine")
    changes = await asyncio.gather(*(read(c, 10) for c in calls))
    assert all(not b.resync and as_dict(b) == {"imsi9": b"nine"} for b in changes)
    assert len(server.requests) == 100
    for c in calls:
        c.cancel()


async def test_large_snapshot_with_raised_limits(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    big = {f"k{i}": bytes(1024) * 1024 for i in range(6)}  # 6 MiB > gRPC's 4 MiB default
    server = await reference_server(
        MemorySource({"big": big}), "poll", max_send_message_length=32 << 20
    )
    ch = channels(server.address, **{"grpc.max_receive_message_length": 32 << 20})
    batches = await read_all(open_call(ch, request("big")))
    assert as_dict(batches[0]) == big


# -- the change log -----------------------------------------------------------------------


async def test_changes_since_resyncs_when_log_is_too_short() -> None:
    source = MemorySource({"s": {"a": b"1"}}, log_limit=2)
    v0 = source.snapshot_now("s").version
    source.set("s", "b", b"2")
    v1 = source.snapshot_now("s").version
    source.set("s", "c", b"3")
    source.set("s", "d", b"4")
    recent = await source.changes_since("s", v1 + 1)
    assert not recent.resync and recent.items == (("d", b"4"),)
    old = await source.changes_since("s", v0)
    assert old.resync and dict(old.items) == {"a": b"1", "b": b"2", "c": b"3", "d": b"4"}
    with pytest.raises(UnknownStreamError, match="'zz'"):
        await source.changes_since("zz", 0)


async def test_memory_source_wakes_waiters_from_other_threads() -> None:
    source = MemorySource({"s": {}})
    version = source.snapshot_now("s").version
    waiter = asyncio.create_task(source.changes_since("s", version))
    await asyncio.sleep(0.01)
    await asyncio.to_thread(source.set, "s", "k", b"v")
    changes = await asyncio.wait_for(waiter, 2)
    assert changes.items == (("k", b"v"),)
    assert source.snapshot_now("s").digest == snapshot_digest([("k", b"v")])


# -- directory and SQLite sources ---------------------------------------------------------


async def test_directory_source_serves_and_picks_up_changes(
    tmp_path: Path, reference_server: ReferenceServerFactory, channels: Any
) -> None:
    odd_key = "a/b c%d.é"
    write_key(tmp_path, "subs", "imsi1", b"one")
    write_key(tmp_path, "subs", odd_key, b"odd")
    (tmp_path / "empty").mkdir()
    assert (tmp_path / "subs" / key_filename(odd_key)).is_file()
    source = DirectorySource(tmp_path, poll_interval=0.05)
    server = await reference_server(source, "push", modes={"empty": "poll"})
    ch = channels(server.address)

    call = open_call(ch, request("subs"))
    assert as_dict(await read(call)) == {"imsi1": b"one", odd_key: b"odd"}
    empty = await read_all(open_call(ch, request("empty")))
    assert len(empty) == 1 and empty[0].resync and not empty[0].updates

    write_key(tmp_path, "subs", "imsi1", b"ONE")  # same size, same second: still seen
    await read_until(call, {"imsi1": b"ONE"})
    (tmp_path / "subs" / key_filename(odd_key)).unlink()
    await read_until(call, {odd_key: b""})

    write_key(tmp_path, "late", "k", b"v")  # a new stream appears; poll requests see it at once
    server_poll = await reference_server(source, "poll")  # the same source, shared
    late = await read_all(open_call(channels(server_poll.address), request("late")))
    assert as_dict(late[0]) == {"k": b"v"}
    call.cancel()


async def test_directory_source_missing_root(tmp_path: Path) -> None:
    source = DirectorySource(tmp_path / "nope")
    with pytest.raises(SourceError, match="nope"):
        await source.start()


def _make_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute('CREATE TABLE "subs" (key TEXT PRIMARY KEY, value BLOB)')
    db.execute('CREATE TABLE "my stream" (key TEXT PRIMARY KEY, value TEXT)')
    db.execute("CREATE TABLE other (id INTEGER)")
    db.executemany("INSERT INTO subs VALUES (?, ?)", [("imsi1", b"one"), ("imsi2", b"two")])
    db.execute("""INSERT INTO "my stream" VALUES ('k', 'text')""")
    return db


async def test_sqlite_source_serves_and_picks_up_changes(
    tmp_path: Path, reference_server: ReferenceServerFactory, channels: Any
) -> None:
    db = _make_db(tmp_path / "data.sqlite")
    source = SQLiteSource(tmp_path / "data.sqlite", poll_interval=0.05)
    server = await reference_server(source, "push", modes={"my stream": "poll"})
    ch = channels(server.address)
    assert source.streams() == ["my stream", "subs"]

    polled = await read_all(open_call(ch, request("my stream")))
    assert as_dict(polled[0]) == {"k": b"text"}
    call = open_call(ch, request("subs"))
    assert as_dict(await read(call)) == {"imsi1": b"one", "imsi2": b"two"}

    db.execute("UPDATE subs SET value = ? WHERE key = 'imsi1'", (b"ONE",))
    await read_until(call, {"imsi1": b"ONE"})
    db.execute("DELETE FROM subs WHERE key = 'imsi2'")
    await read_until(call, {"imsi2": b""})

    db.execute("CREATE TABLE fresh (key TEXT, value BLOB)")
    fresh = open_call(ch, request("fresh"))
    first = await read(fresh)
    assert first.resync and not first.updates
    fresh.cancel()
    db.execute("DROP TABLE subs")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all(call)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    db.close()


def test_open_source_picks_by_spec(tmp_path: Path) -> None:
    _make_db(tmp_path / "x.db").close()
    assert isinstance(open_source(tmp_path / "x.db"), SQLiteSource)
    assert isinstance(open_source(str(tmp_path)), DirectorySource)
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "missing.sqlite")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SourceError, match="neither a directory"):
        open_source(tmp_path / "file.txt")


async def test_run_server_serves_a_directory_until_cancelled(tmp_path: Path, channels: Any) -> None:
    write_key(tmp_path, "subs", "imsi1", b"one")
    started: asyncio.Future[ReferenceServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_server(str(tmp_path), "127.0.0.1:0", "poll", on_started=started.set_result)
    )
    server = await asyncio.wait_for(started, 5)
    batches = await read_all(open_call(channels(server.address), request("subs")))
    assert as_dict(batches[0]) == {"imsi1": b"one"}
    assert server.requests == []  # not recorded in a long-running server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = make_pki(tmp_path_factory.mktemp("pki"))
    return {
        "ca": made["ca"],
        "server_cert": made["server"],
        "server_key": made["server_key"],
        "client_cert": made["client"],
        "client_key": made["client_key"],
    }


async def _tls_read(address: str, creds: grpc.ChannelCredentials) -> list[DataUpdateBatch]:
    async with grpc.aio.secure_channel(
        address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as ch:
        return await read_all(open_call(ch, request("subs")), timeout=5)


async def test_tls_handshake(
    pki: dict[str, Path], reference_server: ReferenceServerFactory
) -> None:
    tls = ServerTLS(pki["server_cert"], pki["server_key"])
    server = await reference_server(MemorySource({"subs": SUBS}), "poll", tls=tls)
    creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
    batches = await _tls_read(server.address, creds)
    assert as_dict(batches[0]) == SUBS

    async with grpc.aio.insecure_channel(server.address) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await read_all(open_call(plain, request("subs")), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_requires_client_certificate(
    pki: dict[str, Path], reference_server: ReferenceServerFactory
) -> None:
    tls = ServerTLS(
        pki["server_cert"],
        pki["server_key"],
        client_ca_path=pki["ca"],
        require_client_cert=True,
    )
    server = await reference_server(MemorySource({"subs": SUBS}), "poll", tls=tls)
    ca = pki["ca"].read_bytes()
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=pki["client_key"].read_bytes(),
        certificate_chain=pki["client_cert"].read_bytes(),
    )
    assert as_dict((await _tls_read(server.address, with_cert))[0]) == SUBS
    without = grpc.ssl_channel_credentials(root_certificates=ca)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _tls_read(server.address, without)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="client_ca_path"):
        ServerTLS("c", "k", require_client_cert=True).credentials()
    with pytest.raises(ValueError, match=r"missing\.pem"):
        ServerTLS(tmp_path / "missing.pem", tmp_path / "k").credentials()


async def test_vanished_directory_keeps_serving_last_data(
    tmp_path: Path, reference_server: ReferenceServerFactory, channels: Any
) -> None:
    root = tmp_path / "data"
    write_key(root, "subs", "k", b"v")
    server = await reference_server(DirectorySource(root, poll_interval=0.05), "poll")
    (root / "subs" / "k").unlink()
    (root / "subs").rmdir()
    root.rmdir()
    batches = await read_all(open_call(channels(server.address), request("subs")))
    assert as_dict(batches[0]) == {"k": b"v"}


async def test_run_server_fixed_port_is_exclusive(tmp_path: Path) -> None:
    started: asyncio.Future[ReferenceServer] = asyncio.get_running_loop().create_future()
    first = asyncio.create_task(
        run_server(str(tmp_path), "127.0.0.1:0", on_started=started.set_result)
    )
    server = await asyncio.wait_for(started, 5)
    with pytest.raises(OSError, match="cannot listen"):
        await run_server(str(tmp_path), server.address)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


# -- defects fixed: replaced SQLite file, empty values, unreadable files, start() failures ---


def _write_db(path: Path, rows: dict[str, bytes]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute('CREATE TABLE "subs" (key TEXT PRIMARY KEY, value BLOB)')
    db.executemany("INSERT INTO subs VALUES (?, ?)", list(rows.items()))
    db.close()


async def test_sqlite_source_follows_a_replaced_database_file(tmp_path: Path) -> None:
    path = tmp_path / "data.db"
    _write_db(path, {"k": b"old"})
    source = SQLiteSource(path, poll_interval=60)
    await source.start()
    try:
        assert (await source.snapshot("subs")).items == (("k", b"old"),)
        _write_db(tmp_path / "new.db", {"k": b"new", "k2": b"two"})
        os.replace(tmp_path / "new.db", path)  # atomic replace: a new inode
        assert dict((await source.snapshot("subs")).items) == {"k": b"new", "k2": b"two"}

        path.unlink()  # vanished: the last data is kept
        assert dict((await source.snapshot("subs")).items) == {"k": b"new", "k2": b"two"}
        _write_db(path, {"k": b"back"})  # ... and came back
        assert (await source.snapshot("subs")).items == (("k", b"back"),)
    finally:
        await source.stop()


async def test_empty_value_is_a_deletion_everywhere() -> None:
    source = MemorySource({"s": {"a": b"1", "b": b"2"}})
    before = source.snapshot_now("s").version
    source.set("s", "a", b"")
    assert source.get("s") == {"b": b"2"}
    snap = source.snapshot_now("s")
    assert snap.items == (("b", b"2"),) and snap.digest == snapshot_digest([("b", b"2")])
    assert (await source.changes_since("s", before)).items == (("a", b""),)
    version = snap.version
    source.set("s", "missing", b"")  # deleting a missing key: no change
    assert source.snapshot_now("s").version == version
    source.replace("s", {"b": b"2", "c": b""})
    assert source.get("s") == {"b": b"2"}
    source.apply("s", {"b": b""}, replace=True)
    assert source.get("s") == {} and source.snapshot_now("s").digest == EMPTY_DIGEST


async def test_directory_source_holds_back_a_freshly_truncated_file(tmp_path: Path) -> None:
    path = write_key(tmp_path, "subs", "k", b"value")
    source = DirectorySource(tmp_path, poll_interval=60)
    await source.start()
    try:
        version = (await source.snapshot("subs")).version
        path.write_bytes(b"")  # an in-place rewrite, caught between truncate and write
        snap = await source.snapshot("subs")
        assert snap.items == (("k", b"value"),) and snap.version == version
        path.write_bytes(b"VALUE")
        assert (await source.snapshot("subs")).items == (("k", b"VALUE"),)

        path.write_bytes(b"")  # still empty once it has settled: a deletion
        old = time.time() - 60
        os.utime(path, (old, old))
        snap = await source.snapshot("subs")
        assert snap.items == () and snap.digest == EMPTY_DIGEST
    finally:
        await source.stop()


async def test_directory_source_skips_hidden_and_backup_files(tmp_path: Path) -> None:
    write_key(tmp_path, "subs", "k", b"v")
    (tmp_path / "subs" / ".k.swp").write_bytes(b"swap")
    (tmp_path / "subs" / "k~").write_bytes(b"backup")
    for key in (".hidden", "a~", ".", ".."):
        name = key_filename(key)
        assert not name.startswith(".") and not name.endswith("~"), name
        write_key(tmp_path, "subs", key, key.encode())
    source = DirectorySource(tmp_path, poll_interval=60)
    assert dict((await source.snapshot("subs")).items) == {
        "k": b"v",
        ".hidden": b".hidden",
        "a~": b"a~",
        ".": b".",
        "..": b"..",
    }


async def test_unreadable_file_keeps_every_stream_serving(
    tmp_path: Path,
    reference_server: ReferenceServerFactory,
    channels: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_key(tmp_path, "subs", "k1", b"one")
    k2 = write_key(tmp_path, "subs", "k2", b"two")
    write_key(tmp_path, "other", "x", b"x")
    source = DirectorySource(tmp_path, poll_interval=0.02)
    server = await reference_server(source, "poll")
    ch = channels(server.address)

    caplog.set_level(logging.DEBUG, logger="streamer.server.reference")
    # A symlink loop raises ELOOP even for root; chmod 000 does the same for other users.
    k2.unlink()
    os.symlink(k2.name, k2)
    os.symlink("loop", tmp_path / "subs" / "loop")
    os.symlink("rootloop", tmp_path / "rootloop")
    if os.geteuid() != 0:
        (tmp_path / "other" / "y").write_bytes(b"y")
        (tmp_path / "other" / "y").chmod(0)
    write_key(tmp_path, "subs", "k1", b"ONE")
    await asyncio.sleep(0.3)  # many polls

    subs = await read_all(open_call(ch, request("subs")))
    assert as_dict(subs[0]) == {"k1": b"ONE", "k2": b"two"}  # k2 keeps its last value
    other = await read_all(open_call(ch, request("other")))
    assert as_dict(other[0]) == {"x": b"x"}
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in warned if r.levelno >= logging.ERROR or r.exc_info], warned
    for path in (k2, tmp_path / "subs" / "loop", tmp_path / "rootloop"):
        hits = [r for r in warned if repr(str(path)) in r.getMessage()]
        assert len(hits) == 1, (path, [r.getMessage() for r in warned])

    k2.unlink()  # fixed: read again, and the warning may come back later
    write_key(tmp_path, "subs", "k2", b"TWO")
    subs = await read_all(open_call(ch, request("subs")))
    assert as_dict(subs[0]) == {"k1": b"ONE", "k2": b"TWO"}


async def test_stream_and_scan_failures_log_once_and_keep_the_last_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data"
    write_key(root, "subs", "k", b"v")
    write_key(root, "other", "x", b"x")
    source = DirectorySource(root, poll_interval=0.02)
    await source.start()
    try:
        caplog.set_level(logging.DEBUG, logger="streamer.server.reference")
        scan_stream = source._scan_stream

        def flaky(stream: str, *args: Any) -> None:
            if stream == "subs":
                raise OSError(5, "Input/output error", str(root / stream))
            scan_stream(stream, *args)

        source._scan_stream = flaky  # type: ignore[method-assign]
        write_key(root, "other", "x", b"X")
        await asyncio.sleep(0.2)  # many polls
        assert (await source.snapshot("subs")).items == (("k", b"v"),)
        assert (await source.snapshot("other")).items == (("x", b"X"),)
        source._scan_stream = scan_stream  # type: ignore[method-assign]

        for path in (root / "subs" / "k", root / "other" / "x"):
            path.unlink()
        for path in (root / "subs", root / "other", root):
            path.rmdir()
        await asyncio.sleep(0.2)  # the whole root is gone: every poll fails
        assert (await source.snapshot("subs")).items == (("k", b"v"),)
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [r for r in warned if r.exc_info or r.levelno > logging.WARNING], warned
        messages = [r.getMessage() for r in warned]
        assert len([m for m in messages if "Input/output error" in m]) == 1, messages
        assert len([m for m in messages if "cannot read stream directory" in m]) == 1, messages
    finally:
        await source.stop()


class _CountingSource(MemorySource):
    running = 0

    async def start(self) -> None:
        self.running += 1

    async def stop(self) -> None:
        self.running -= 1


async def test_start_failure_stops_the_source() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        source = _CountingSource({"s": {}})
        server = ReferenceServer(
            source, address=f"127.0.0.1:{port}", options=[("grpc.so_reuseport", 0)]
        )
        with pytest.raises(OSError, match="cannot listen"):
            await server.start()
        assert source.running == 0
    bad = ReferenceServer(source, options=[(1, 2)])  # type: ignore[list-item]
    with pytest.raises(TypeError):  # raised by grpc.aio.server(), after the source started
        await bad.start()
    assert source.running == 0
    await bad.stop()
    assert source.running == 0


async def test_snapshot_cache_forgets_removed_streams(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    source = MemorySource({"gone": {"k": b"v"}, "kept": {"k": b"v"}})
    server = await reference_server(source, "poll")
    ch = channels(server.address)
    await read_all(open_call(ch, request("gone")))
    await read_all(open_call(ch, request("kept")))
    assert set(server._batches) == {"gone", "kept"}
    source.remove_stream("gone")
    call = open_call(ch, request("gone"))
    with pytest.raises(grpc.aio.AioRpcError):
        await read_all(call)
    assert await call.code() == grpc.StatusCode.UNAVAILABLE
    assert set(server._batches) == {"kept"}
