"""Bad input from the wire and from the operator: responses that are not a DataUpdateBatch,
messages over the receive limit, unusable TLS files. Each gives an error that names what is
wrong (stream, limit, file) and the stream goes on as the decision table says.

Config-file fuzzing (random TOML documents, random values for known keys, arbitrary text) lives
in tests/test_config.py (``test_fuzz_*``) and is not repeated here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.cli.main import main as streamer_cli
from streamer.client.connection import RegistryError
from streamer.client.registry import TLSConfig
from streamer.client.stream import StreamRpcError
from streamer.testing import CallHandle, ScriptedServer
from streamer.wire import DataUpdate, DataUpdateBatch, StreamRequest
from tests.certs import make_pki
from tests.faults import RawServer, eventually, write_config
from tests.listeners import Recorder

# Every test runs a sync listener in its own thread and an async one on the event loop.
pytestmark = pytest.mark.usefixtures("listener_path")

VALID = DataUpdateBatch(updates=[DataUpdate(key="k", value=b"v")], resync=True)
GARBAGE = {
    "random bytes": b"\xff\xfe\xfd\xfc not protobuf at all",
    "truncated": VALID.SerializeToString()[:4],  # ends inside a length-delimited field
    "field number 0": b"\x00",
    "key not UTF-8": bytes.fromhex("0a050a03fffefd"),  # DataUpdate.key is a proto3 string
}


async def run(listener: Recorder, address: str, until: object, **registry: object) -> None:
    client = new_streamer_client(
        StaticRegistry(address, **registry),  # type: ignore[arg-type]
        streaming_interval=0.2,
        backoff=Backoff(initial=0.02, maximum=0.1),
        rng=random.Random(5),
    )
    task = asyncio.create_task(client.stream(listener))
    try:
        await eventually(until, "expected outcome")  # type: ignore[arg-type]
    finally:
        client.remove_listener(listener)
        await asyncio.wait_for(task, 5)
        assert task.exception() is None  # stopped by us, never crashed
        await client.close()


@pytest.mark.parametrize("payload", list(GARBAGE.values()), ids=list(GARBAGE))
async def test_response_that_is_not_a_batch_is_reported_and_stream_goes_on(
    payload: bytes,
) -> None:
    async def script(request: StreamRequest) -> AsyncIterator[bytes]:
        if len(server.requests) == 1:
            yield VALID.SerializeToString()  # good data first, then garbage on the same call
            yield payload
        else:
            yield VALID.SerializeToString()

    server = RawServer(script)
    async with server:
        listener = Recorder("subs")
        await run(listener, server.address, lambda: len(listener.batches) == 2)
    assert len(listener.errors) == 1
    error = listener.errors[0]
    assert isinstance(error, StreamRpcError) and isinstance(error, grpc.RpcError)
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "not a valid DataUpdateBatch" in (error.details() or "")
    assert str(error).startswith("stream 'subs': GetUpdates failed: INTERNAL")
    assert len(server.requests) == 2  # reported, backed off, called again


async def test_message_over_receive_limit_names_stream_and_limit(
    streamer_server: ScriptedServer,
) -> None:
    big = DataUpdateBatch(updates=[DataUpdate(key="k", value=b"x" * 5000)])

    async def serve(call: CallHandle) -> None:
        await call.push(big if len(streamer_server.calls) == 1 else VALID)

    streamer_server.default = serve
    listener = Recorder("subscribers")
    await run(
        listener,
        streamer_server.address,
        lambda: listener.batches,
        max_receive_message_length=1000,
    )
    [error] = listener.errors
    assert isinstance(error, StreamRpcError)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.stream == "subscribers"
    text = str(error)
    assert "stream 'subscribers'" in text
    assert "receive limit of 1000 bytes" in text
    assert "max_receive_message_mb" in text  # says how to fix it
    # The original is kept: grpc.aio's error, or the failed call of gRPC's sync API.
    assert isinstance(error.__cause__, grpc.RpcError)
    assert error.__cause__.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert listener.keys() == [["k"]]  # the next (small) message got through


async def test_over_limit_with_listener_choosing_to_stop(streamer_server: ScriptedServer) -> None:
    """The decision is the listener's: report_error returning an error stops only this stream."""

    async def serve(call: CallHandle) -> None:
        await call.push(DataUpdateBatch(updates=[DataUpdate(key="k", value=b"x" * 5000)]))

    streamer_server.default = serve
    chosen = RuntimeError("snapshot too large, giving up")
    listener = Recorder(answers=[chosen])
    client = new_streamer_client(
        StaticRegistry(streamer_server.address, max_receive_message_length=1000)
    )
    with pytest.raises(RuntimeError) as info:
        await asyncio.wait_for(client.stream(listener), 5)
    assert info.value is chosen
    assert "receive limit of 1000 bytes" in str(listener.errors[0])
    await client.close()


# -- TLS files ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_errors(pki: dict[str, Path], tmp_path: Path) -> Iterator[tuple[TLSConfig, str]]:
    """(TLS settings, fragment of the error) for every statically detectable file problem."""
    missing = tmp_path / "missing.pem"
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    directory = tmp_path / "a-directory.pem"
    directory.mkdir(exist_ok=True)
    yield TLSConfig(root_ca=missing), f"cannot read root CA certificate '{missing}'"
    yield TLSConfig(root_ca=directory), f"cannot read root CA certificate '{directory}'"
    yield TLSConfig(root_ca=empty), f"root CA certificate '{empty}' is empty"
    yield TLSConfig(root_ca=pki["ca_key"]), f"root CA certificate '{pki['ca_key']}' is not PEM"
    yield (
        TLSConfig(pki["ca"], missing, pki["client_key"]),
        f"cannot read client certificate '{missing}'",
    )
    yield (
        TLSConfig(pki["ca"], pki["client"], directory),
        f"cannot read client key '{directory}'",
    )
    yield (
        TLSConfig(pki["ca"], pki["client_key"], pki["client_key"]),
        f"client certificate '{pki['client_key']}' is not a PEM certificate",
    )
    yield (
        TLSConfig(pki["ca"], pki["client"], pki["server_key"]),
        f"client key '{pki['server_key']}' does not match client certificate '{pki['client']}'",
    )


def test_tls_file_problems_name_the_file_and_why(pki: dict[str, Path], tmp_path: Path) -> None:
    for tls, fragment in tls_errors(pki, tmp_path):
        with pytest.raises(RegistryError) as info:
            StaticRegistry("cloud.example:443", tls=tls)
        assert fragment in str(info.value), (fragment, str(info.value))


def test_streamer_check_reports_tls_file_problems(
    pki: dict[str, Path], tmp_path: Path, sink_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = {"sink": {"streams": ["s"], "out": str(tmp_path / "out")}}
    for i, (tls, fragment) in enumerate(tls_errors(pki, tmp_path)):
        files = {
            k: str(v)
            for k, v in (
                ("root_ca", tls.root_ca),
                ("client_cert", tls.client_cert),
                ("client_key", tls.client_key),
            )
            if v is not None
        }
        cfg = write_config(tmp_path / f"c{i}.toml", "cloud.example:443", sink, files)
        assert streamer_cli(["check", "--config", str(cfg)]) == 2
        out = capsys.readouterr().out
        assert "NOT OK" in out and f"cloud: {fragment}" in out, (fragment, out)
    # What check cannot know without connecting: whether this CA signed the server's
    # certificate. That fails at the handshake (tests/test_tls.py::test_wrong_ca_rejected...).
    cfg = write_config(tmp_path / "ok.toml", "cloud.example:443", sink, {"root_ca": str(pki["ca"])})
    assert streamer_cli(["check", "--config", str(cfg)]) == 0
    assert "OK" in capsys.readouterr().out
