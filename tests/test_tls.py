"""Security, for real: TLS and mutual TLS with certificates made in the test, the ``:authority``
override, rejected certificates (wrong CA, expired, wrong host name), plaintext only where it is
safe or explicitly allowed, and no secrets or batch values in the logs.

Related tests elsewhere: plaintext to a remote target via the registry is refused and
``insecure=True`` warns (tests/test_registry.py::test_plaintext_to_remote_refused_unless_insecure);
a plugin that is not enabled is never imported
(tests/test_plugins.py::test_not_enabled_is_not_imported).
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import grpc
import pytest

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.cli.main import main as streamer_cli
from streamer.client.registry import TLSConfig
from streamer.client.stream import StreamRpcError
from streamer.host.config import load_config
from streamer.host.host import Host, build_registry
from streamer.server.reference import ServerTLS
from streamer.testing import CallHandle
from tests.certs import make_pki
from tests.faults import OptionsScriptedServer
from tests.helpers import eventually, write_config
from tests.listeners import Recorder
from tests.plugin_fixtures import dists

# Every test runs a sync listener in its own thread and an async one on the event loop.
pytestmark = pytest.mark.usefixtures("listener_path")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_tls(pki: dict[str, Path], cert: str = "server", *, mutual: bool = False) -> ServerTLS:
    return ServerTLS(
        pki[cert], pki[f"{cert}_key"], pki["ca"] if mutual else None, require_client_cert=mutual
    )


async def push_one(call: CallHandle) -> None:
    await call.push({"k": b"v"}, resync=True)


async def outcome(registry: StaticRegistry, name: str = "s1") -> Recorder:
    """Run one stream until it has a batch or an error."""
    client = new_streamer_client(
        registry, backoff=Backoff(initial=0.05, maximum=0.2), rng=random.Random(2)
    )
    listener = Recorder(name)
    task = asyncio.create_task(client.stream(listener))
    try:
        await eventually(lambda: listener.batches or listener.errors, "a batch or an error")
    finally:
        client.remove_listener(listener)
        await asyncio.wait_for(task, 5)
        assert task.exception() is None  # removed by us, never crashed
        await client.close()
    return listener


async def test_tls_server_verified_against_configured_root_ca(pki: dict[str, Path]) -> None:
    async with OptionsScriptedServer(tls=server_tls(pki)) as server:
        server.default = push_one
        got = await outcome(StaticRegistry(server.address, tls=TLSConfig(root_ca=pki["ca"])))
        assert got.errors == [] and got.keys() == [["k"]]
        assert server.auth_contexts[0]["transport_security_type"] == [b"ssl"]


async def test_mutual_tls_server_sees_the_client_certificate(pki: dict[str, Path]) -> None:
    async with OptionsScriptedServer(tls=server_tls(pki, mutual=True)) as server:
        server.default = push_one
        tls = TLSConfig(pki["ca"], pki["client"], pki["client_key"])
        got = await outcome(StaticRegistry(server.address, tls=tls))
        assert got.errors == [] and got.keys() == [["k"]]
        [auth] = server.auth_contexts
        assert auth["x509_common_name"] == [b"gateway-1"]
        assert auth["x509_pem_cert"] == [pki["client"].read_bytes()]

        # Without a client certificate the server refuses the handshake: no call is made.
        refused = await outcome(StaticRegistry(server.address, tls=TLSConfig(pki["ca"])))
        assert refused.batches == [] and len(server.calls) == 1
        assert refused.errors[0].code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


async def test_authority_override_honoured(pki: dict[str, Path]) -> None:
    """The certificate is valid for streamer-cloud.test only; we dial 127.0.0.1."""
    async with OptionsScriptedServer(tls=server_tls(pki, "cloud")) as server:
        server.default = push_one
        registry = StaticRegistry(
            server.address, tls=TLSConfig(pki["ca"]), authority="streamer-cloud.test"
        )
        got = await outcome(registry)
        assert got.errors == [] and got.keys() == [["k"]]


REJECTED = {
    # id: (server certificate, :authority override, the cause reported in the project's words)
    "wrong CA": ("rogue", None, "is not signed by root_ca '{ca}'"),
    "expired": ("expired", None, "expired"),
    "wrong host name": ("cloud", None, "is not valid for the name checked, '127.0.0.1'"),
    "wrong authority": (
        "server",
        "streamer-cloud.test",
        "is not valid for the name checked, 'streamer-cloud.test'",
    ),
}


@pytest.mark.parametrize("case", list(REJECTED.values()), ids=list(REJECTED))
async def test_bad_server_certificate_rejected_with_clear_error(
    pki: dict[str, Path], case: tuple[str, str | None, str]
) -> None:
    cert, authority, fragment = case
    async with OptionsScriptedServer(tls=server_tls(pki, cert)) as server:
        server.default = push_one
        registry = StaticRegistry(server.address, tls=TLSConfig(pki["ca"]), authority=authority)
        got = await outcome(registry, "subscribers")
        assert got.batches == [] and server.calls == []  # never got past the handshake
        error = got.errors[0]
        assert isinstance(error, StreamRpcError)
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert error.diagnosis is not None
        assert fragment.format(ca=pki["ca"]) in error.diagnosis.cause
        assert f"the server certificate of {server.address}" in error.diagnosis.cause
        text = str(error)
        assert text.startswith("stream 'subscribers': GetUpdates failed: UNAVAILABLE: the server")
        assert "(hint: " in text and "failed to connect to all addresses" not in text
        if authority or cert == "cloud":
            assert "authority" in error.diagnosis.hint


# -- plaintext rules through the config file -----------------------------------------------------


def test_config_plaintext_to_remote_only_with_insecure_and_then_warned(
    tmp_path: Path,
    sink_site: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = {"sink": {"streams": ["s"], "out": str(tmp_path / "out")}}
    remote = "10.1.2.3:443"
    # Without insecure a remote target always gets TLS (system roots): never plaintext.
    cfg = write_config(tmp_path / "tls.toml", remote, sink)
    assert streamer_cli(["check", "--config", str(cfg)]) == 0
    registry = build_registry(load_config(cfg))
    assert isinstance(registry, StaticRegistry) and registry.tls == TLSConfig()
    # insecure = true: plaintext, allowed because asked for, and logged as a warning.
    cfg = write_config(tmp_path / "plain.toml", remote, sink, {"insecure": True})
    assert streamer_cli(["check", "--config", str(cfg)]) == 0
    with caplog.at_level(logging.WARNING, "streamer.client.registry"):
        registry = build_registry(load_config(cfg))
    assert isinstance(registry, StaticRegistry) and registry.tls is None
    assert f"plaintext (insecure) connection to {remote}" in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    # Loopback stays plaintext without ceremony (a local proxy such as Magma's control_proxy).
    cfg = write_config(tmp_path / "local.toml", "127.0.0.1:8443", sink)
    registry = build_registry(load_config(cfg))
    assert isinstance(registry, StaticRegistry) and registry.tls is None
    capsys.readouterr()


# -- no secrets in logs --------------------------------------------------------------------------


SECRETS = (b"IMSI-SECRET-VALUE-7f3a9c", b"k3y=hunter2-subscriber-auth")


async def test_no_secret_material_or_values_in_logs(
    pki: dict[str, Path], tmp_path: Path, sink_site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole host over mutual TLS: batches carry secret-looking values and a call fails.
    Nothing logged (at any level) shows a value or the client key's contents."""
    out = tmp_path / "out.jsonl"
    async with OptionsScriptedServer(tls=server_tls(pki, mutual=True)) as server:
        files = {
            "root_ca": str(pki["ca"]),
            "client_cert": str(pki["client"]),
            "client_key": str(pki["client_key"]),
        }
        sink = {"sink": {"streams": ["subs"], "out": str(out)}}
        cfg = write_config(tmp_path / "streamer.toml", server.address, sink, files)
        host = Host(load_config(cfg), distributions=lambda: dists(sink_site))  # type: ignore[arg-type,return-value]
        caplog.set_level(logging.DEBUG)
        run = asyncio.create_task(host.run())
        try:
            call = await server.next_call("subs")
            await call.push({"imsi001": SECRETS[0], "imsi002": SECRETS[1]}, resync=True)
            await eventually(lambda: out.exists() and "imsi002" in out.read_text(), "the sink")
            await call.fail(grpc.StatusCode.UNAVAILABLE, "cloud restarting")
            call = await server.next_call("subs")
            await call.push({"imsi003": SECRETS[0]})
            await eventually(lambda: "imsi003" in out.read_text(), "after reconnect")
        finally:
            host.request_shutdown()
            assert await asyncio.wait_for(run, 10) == 0
    key_pem = pki["client_key"].read_text()
    key_body = [line for line in key_pem.splitlines() if line and not line.startswith("-----")]
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any("subs" in r.getMessage() for r in records)  # the stream was logged about
    assert any(r.levelno == logging.WARNING for r in records)  # the failure too
    for record in caplog.records:  # DEBUG included: values are never logged at all
        text = record.getMessage() + (caplog.handler.format(record) if record.exc_info else "")
        for secret in SECRETS:
            assert secret.decode() not in text, record
            assert repr(secret) not in text, record
        assert "PRIVATE KEY" not in text, record
        assert not any(line in text for line in key_body), record


async def test_sync_and_async_listeners_dial_with_the_same_tls_and_authority(
    pki: dict[str, Path],
) -> None:
    """One client, one registry: a sync listener (its own thread, gRPC's sync API) and an async
    one (grpc.aio) both complete a mutual-TLS handshake against a certificate valid only for
    the ``:authority`` override, and present the same client certificate."""
    from tests import listeners

    async with OptionsScriptedServer(tls=server_tls(pki, "cloud", mutual=True)) as server:
        server.default = push_one
        registry = StaticRegistry(
            server.address,
            tls=TLSConfig(pki["ca"], pki["client"], pki["client_key"]),
            authority="streamer-cloud.test",
        )
        client = new_streamer_client(registry, backoff=Backoff(initial=0.05, maximum=0.2))
        sync = listeners.Recorder("sync")
        aio = listeners.async_twin(listeners.Recorder)("aio")
        tasks = [asyncio.create_task(client.stream(x)) for x in (sync, aio)]
        try:
            await eventually(lambda: sync.batches and aio.batches, "a batch on both paths")
        finally:
            for x in (sync, aio):
                client.remove_listener(x)
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            await client.close()
        assert sync.errors == [] and aio.errors == []
        assert len(server.auth_contexts) == 2
        for auth in server.auth_contexts:
            assert auth["transport_security_type"] == [b"ssl"]
            assert auth["x509_pem_cert"] == [pki["client"].read_bytes()]
