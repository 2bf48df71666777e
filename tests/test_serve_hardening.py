"""`streamer serve` fails closed and bounds what clients send (issue 19), for real: the CLI in
a subprocess, TLS handshakes with generated certificates, a real gRPC server on loopback."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from streamer.server.reference import MAX_STREAM_NAME, ReferenceServer, ServerTLS
from streamer.server.sources import MemorySource
from streamer.testing import ReferenceServerFactory
from tests.certs import make_pki
from tests.helpers import free_port, run_cli, streamer_env
from tests.test_server import SUBS, as_dict, open_call, read, read_all, request


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def channels() -> Any:
    opened: list[grpc.aio.Channel] = []

    def make(address: str) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(address)
        opened.append(ch)
        return ch

    yield make
    for ch in opened:
        await ch.close()


# -- the command line refuses weaker than asked -----------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--client-ca", "{ca}", "--require-client-cert"], ["--tls-cert", "--tls-key"]),
        (["--client-ca", "{ca}"], ["--tls-cert", "--tls-key"]),
        (["--tls-cert", "{cert}"], ["--tls-key"]),
        (["--tls-key", "{key}"], ["--tls-cert"]),
        (["--tls-cert", "{cert}", "--tls-key", "{key}", "--require-client-cert"], ["--client-ca"]),
    ],
)
def test_serve_refuses_incomplete_tls(
    tmp_path: Path, pki: dict[str, Path], flags: list[str], named: list[str]
) -> None:
    paths = {"ca": str(pki["ca"]), "cert": str(pki["server"]), "key": str(pki["server_key"])}
    args = [f.format(**paths) for f in flags]
    code, out = run_cli("serve", str(tmp_path), "--address", "127.0.0.1:0", *args,
                        env=streamer_env())  # fmt: skip
    assert code == 2, out
    for flag in named:
        assert flag in out
    assert "listening" not in out and "streamer serve:" not in out


def test_serve_plaintext_off_loopback_needs_insecure(tmp_path: Path) -> None:
    code, out = run_cli("serve", str(tmp_path), "--address", "0.0.0.0:0", env=streamer_env())
    assert code == 2, out
    assert "--insecure" in out and "0.0.0.0:0" in out


def test_serve_plaintext_off_loopback_with_insecure_starts(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "serve", str(tmp_path),
         "--address", f"0.0.0.0:{port}", "--insecure"],
        env=streamer_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"listening on 0.0.0.0:{port}" in line, line
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_max_calls_must_be_positive(tmp_path: Path) -> None:
    code, out = run_cli("serve", str(tmp_path), "--max-calls", "0", env=streamer_env())
    assert code == 2 and "--max-calls" in out


# -- a client CA means client certificates are required ---------------------------------------


async def _tls_read(address: str, creds: grpc.ChannelCredentials) -> list[Any]:
    async with grpc.aio.secure_channel(
        address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as ch:
        return await read_all(open_call(ch, request("subs")), timeout=5)


async def test_client_ca_alone_requires_client_certificates(
    pki: dict[str, Path], reference_server: ReferenceServerFactory
) -> None:
    tls = ServerTLS(pki["server"], pki["server_key"], client_ca_path=pki["ca"])
    server = await reference_server(MemorySource({"subs": SUBS}), "poll", tls=tls)
    ca = pki["ca"].read_bytes()
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=pki["client_key"].read_bytes(),
        certificate_chain=pki["client"].read_bytes(),
    )
    assert as_dict((await _tls_read(server.address, with_cert))[0]) == SUBS
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _tls_read(server.address, grpc.ssl_channel_credentials(root_certificates=ca))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# -- client input is bounded ------------------------------------------------------------------


async def test_long_stream_name_is_invalid_argument_with_a_short_escaped_echo(
    reference_server: ReferenceServerFactory, channels: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await reference_server(MemorySource({"subs": SUBS}), "poll")
    name = "\n2026-01-01 ERROR forged" + "x" * MAX_STREAM_NAME
    caplog.set_level(logging.INFO, "streamer.server.reference")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all(open_call(channels(server.address), request(name)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert "255" in details and len(details) < 200
    assert "\n" not in details and "\\n" in details
    assert all("\n" not in r.getMessage() for r in caplog.records)
    # exactly the limit is fine (and unknown)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all(open_call(channels(server.address), request("y" * MAX_STREAM_NAME)))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_huge_request_is_refused_without_echo(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    server = await reference_server(MemorySource({"subs": SUBS}), "poll")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all(open_call(channels(server.address), request("z" * 3_000_000)))
    assert info.value.code() in (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert len(info.value.details() or "") < 200
    assert server.requests == []  # refused by the 64 KiB receive limit before the handler


async def test_unknown_stream_is_unavailable_and_lists_no_other_stream(
    reference_server: ReferenceServerFactory, channels: Any
) -> None:
    server = await reference_server(
        MemorySource({"subscriberdb": SUBS, "secret-stream": SUBS}), "push"
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all(open_call(channels(server.address), request("nope")))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    details = info.value.details() or ""
    assert details == "stream 'nope' does not exist"
    assert "subscriberdb" not in details and "secret-stream" not in details


async def test_concurrent_calls_are_capped(channels: Any) -> None:
    server = ReferenceServer(MemorySource({"subs": SUBS}), "push", max_calls=2)
    await server.start()
    try:
        ch = channels(server.address)
        held = [open_call(ch, request("subs")) for _ in range(2)]
        for call in held:
            await read(call)  # both are being served, and stay open (push)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await read_all(open_call(ch, request("subs")))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        held[0].cancel()
        deadline = time.monotonic() + 5
        while True:  # the freed slot is usable again
            try:
                batches = await read_all(open_call(ch, request("subs")), timeout=1)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "slot never freed"
                await asyncio.sleep(0.05)
                continue
            except asyncio.TimeoutError:  # push: the snapshot came, the call stays open
                break
            raise AssertionError(f"push call ended: {batches}")
    finally:
        await server.stop()


def test_max_calls_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        ReferenceServer(MemorySource(), "poll", max_calls=0)


def test_cli_default_max_calls_is_the_servers() -> None:
    from streamer.cli import main as cli
    from streamer.server import reference as server

    assert cli.DEFAULT_MAX_CALLS == server.DEFAULT_MAX_CALLS
