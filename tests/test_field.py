"""What a real Magma gateway does to the host, for real: control_proxy.yml with its override,
certificates rewritten on disk while streams run, connection problems explained, and gRPC's
C-core log lines kept off the operator's terminal.

Every server here is a real gRPC server on loopback, over real TLS with certificates made in the
test; the CLI runs in a child process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.client.connection import ResolvedConnection
from streamer.client.diagnose import Diagnosis, diagnose
from streamer.client.registry import TLSConfig
from streamer.client.stream import StreamRpcError
from streamer.host.config import load_config
from streamer.host.host import Host
from streamer.host.observers import describe_error
from streamer.observability.metrics import _describe, error_kind
from streamer.server.reference import ServerTLS
from streamer.testing import CallHandle, ScriptedServer
from streamer.wire.streamer_pb2 import DataUpdateBatch, StreamRequest
from tests.certs import LOOPBACK_SANS, Issuer, issue, pem
from tests.helpers import FAST_STREAMING, eventually, free_port, streamer_env
from tests.listeners import Recorder
from tests.plugin_fixtures import dists


class PKI:
    """A CA, a loopback server certificate, and gateway certificates issued on demand."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = issue("field-ca", ca=True, valid_days=(-1, 30))
        self.ca_pem = self.write("ca.pem", self.ca)
        self.server = self.write("server.pem", issue("localhost", self.ca, sans=LOOPBACK_SANS))

    def write(self, name: str, made: Issuer) -> Path:
        cert, key = made
        (self.dir / name).write_bytes(pem(cert))
        (self.dir / f"{name}.key").write_bytes(pem(key))
        return self.dir / name

    def gateway(self, cn: str) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a gateway certificate with common name ``cn``."""
        cert, key = issue(cn, self.ca, client=True)
        return pem(cert), pem(key)

    def server_tls(self, *, mutual: bool = True) -> ServerTLS:
        key = self.dir / "server.pem.key"
        return ServerTLS(self.server, key, self.ca_pem if mutual else None, mutual)


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path / "pki")


class IdentityServer(ScriptedServer):
    """Records, per call, the stream and the common name of the client certificate it came
    with."""

    def __init__(self, **kw: Any) -> None:
        super().__init__("127.0.0.1:0", **kw)
        self.seen: list[tuple[str, str]] = []

    async def _handle(
        self,
        request: StreamRequest,
        context: grpc.aio.ServicerContext[StreamRequest, DataUpdateBatch],
    ) -> None:
        cn = b"".join(context.auth_context().get("x509_common_name", [b""])).decode()
        self.seen.append((request.stream_name, cn))
        await super()._handle(request, context)

    def names(self, stream: str) -> list[str]:
        return [cn for s, cn in self.seen if s == stream]


# -- §1 control_proxy.yml and its override ------------------------------------------------


def magma_files(root: Path, base: str, override: str | None) -> tuple[Path, Path]:
    etc, var = root / "etc", root / "var"
    etc.mkdir(parents=True)
    var.mkdir(parents=True)
    (etc / "control_proxy.yml").write_text(base)
    if override is not None:
        (var / "control_proxy.yml").write_text(override)
    return etc / "control_proxy.yml", var / "control_proxy.yml"


def magma_config(path: Path, site_out: Path, control_proxy: Path, override: Path) -> Path:
    streaming = "\n".join(f"{k} = {v}" for k, v in FAST_STREAMING.items())
    path.write_text(
        'plugins = ["sink"]\n'
        f'[plugin.sink]\nstreams = ["subscriberdb"]\nout = "{site_out}"\n'
        f'[cloud]\ncontrol_proxy = "{control_proxy}"\ncontrol_proxy_override = "{override}"\n'
        f"[streaming]\n{streaming}\n"
    )
    return path


async def test_host_dials_the_cloud_named_in_the_override_file(
    pki: PKI, tmp_path: Path, sink_site: Path
) -> None:
    """Base file: a cloud that does not exist. Override (as an operator writes it): the real
    cloud, direct TLS. The host connects there, and the server's certificate is valid only for
    ``streamer-<override's cloud_address>``: the :authority comes from the override too."""
    cert, key = pki.gateway("gateway-1")
    (tmp_path / "gateway.crt").write_bytes(cert)
    (tmp_path / "gateway.key").write_bytes(key)
    only_authority = [x509.DNSName("streamer-127.0.0.1")]
    server_pem = pki.write("cloud.pem", issue("cloud", pki.ca, sans=only_authority))
    tls = ServerTLS(server_pem, pki.dir / "cloud.pem.key", pki.ca_pem, True)
    async with IdentityServer(tls=tls) as server:

        async def one_batch(call: CallHandle) -> None:
            await call.push({"imsi001": b"x"}, resync=True)
            await call.end()

        server.default = one_batch
        port = server.address.rsplit(":", 1)[1]
        base, override = magma_files(
            tmp_path / "magma",
            "cloud_address: wrong-cloud.invalid\ncloud_port: 1\nproxy_cloud_connections: True\n"
            f"rootca_cert: {pki.ca_pem}\ngateway_cert: {tmp_path / 'gateway.crt'}\n"
            f"gateway_key: {tmp_path / 'gateway.key'}\n",
            f"cloud_address: 127.0.0.1\ncloud_port: {port}\nproxy_cloud_connections: False\n",
        )
        out = tmp_path / "out.jsonl"
        cfg = magma_config(tmp_path / "streamer.toml", out, base, override)
        host = Host(load_config(cfg), distributions=lambda: dists(sink_site))  # type: ignore[arg-type,return-value]
        run = asyncio.create_task(host.run())
        try:
            await eventually(lambda: out.exists() and "imsi001" in out.read_text(), "a batch")
        finally:
            host.request_shutdown()
            assert await asyncio.wait_for(run, 10) == 0
        assert server.names("subscriberdb")[0] == "gateway-1"


async def test_proxied_mode_dials_the_local_control_proxy_port(
    tmp_path: Path, sink_site: Path
) -> None:
    """proxy_cloud_connections absent from both files means proxied (as in Magma): plaintext
    to 127.0.0.1:<local_port>, with local_port taken from the override."""
    async with ScriptedServer("127.0.0.1:0") as server:

        async def one_batch(call: CallHandle) -> None:
            await call.push({"k": b"v"}, resync=True)
            await call.end()

        server.default = one_batch
        port = server.address.rsplit(":", 1)[1]
        base, override = magma_files(
            tmp_path / "magma",
            "cloud_address: controller.magma.test\nlocal_port: 1\n",
            f"local_port: {port}\n",
        )
        out = tmp_path / "out.jsonl"
        cfg = magma_config(tmp_path / "streamer.toml", out, base, override)
        host = Host(load_config(cfg), distributions=lambda: dists(sink_site))  # type: ignore[arg-type,return-value]
        run = asyncio.create_task(host.run())
        try:
            await eventually(lambda: out.exists() and '"k"' in out.read_text(), "a batch")
        finally:
            host.request_shutdown()
            assert await asyncio.wait_for(run, 10) == 0


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """``streamer ARGS`` in a child process, while this test's event loop keeps serving."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_check_prints_the_resolved_connection_without_connecting(
    tmp_path: Path, sink_site: Path
) -> None:
    port = free_port()  # nothing listens: check must not try
    base, override = magma_files(
        tmp_path / "magma",
        "cloud_address: wrong-cloud.invalid\nproxy_cloud_connections: True\n",
        f"cloud_address: orc8r.example\nlocal_port: {port}\n",
    )
    cfg = magma_config(tmp_path / "streamer.toml", tmp_path / "out", base, override)
    code, out = await run_cli("check", "--config", str(cfg), env=streamer_env(sink_site))
    assert code == 0, out
    assert f"target: 127.0.0.1:{port}" in out
    assert "mode: plaintext to Magma's local control proxy" in out
    assert "authority: streamer-orc8r.example" in out
    assert f"read: {base}, {override}" in out
    assert "connection (not dialled)" in out and "stream subscriberdb" not in out
    override.unlink()  # a missing override is normal: the base alone decides
    code, out = await run_cli("check", "--config", str(cfg), env=streamer_env(sink_site))
    assert code == 0, out
    assert "authority: streamer-wrong-cloud.invalid" in out and "target: 127.0.0.1:8443" in out
    assert f"read: {base}\n" in out
    override.write_text("proxy_cloud_connections: perhaps\n")
    code, out = await run_cli("check", "--config", str(cfg), env=streamer_env(sink_site))
    assert code == 2
    assert f"{override}: proxy_cloud_connections: expected true or false" in out


# -- §2 certificate rotation ------------------------------------------------------------------


@pytest.fixture
def gateway_files(pki: PKI, tmp_path: Path) -> tuple[Path, Path]:
    cert, key = pki.gateway("gateway-1")
    crt_path, key_path = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    crt_path.write_bytes(cert)
    key_path.write_bytes(key)
    return crt_path, key_path


def client_for(registry: StaticRegistry, interval: float = 0.05) -> Any:
    return new_streamer_client(
        registry,
        streaming_interval=interval,
        backoff=Backoff(initial=0.05, maximum=0.1),
        rng=random.Random(1),
    )


@pytest.mark.usefixtures("listener_path")  # a sync and an async listener
async def test_rotated_certificate_used_by_the_next_connection_open_streams_kept(
    pki: PKI, gateway_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Two streams over mutual TLS: 'held' keeps its call open (push), 'polled' gets one batch
    per call (Magma's cloud). The bootstrapper rewrites the pair: the next 'polled' call
    presents the new certificate, while 'held' keeps its call and still receives batches."""
    crt_path, key_path = gateway_files
    async with IdentityServer(tls=pki.server_tls()) as server:
        held_calls: list[CallHandle] = []

        async def script(call: CallHandle) -> None:
            await call.push({"n": b"1"}, resync=True)
            if call.stream == "held":
                held_calls.append(call)
            else:
                await call.end()

        server.default = script
        registry = StaticRegistry(server.address, tls=TLSConfig(pki.ca_pem, crt_path, key_path))
        client = client_for(registry)
        held, polled = Recorder("held"), Recorder("polled")
        tasks = [asyncio.create_task(client.stream(r)) for r in (held, polled)]
        try:
            await eventually(lambda: len(server.names("polled")) >= 2, "polled twice")
            assert set(server.names("polled")) == {"gateway-1"}
            cert, key = pki.gateway("gateway-2")
            caplog.set_level(logging.INFO, "streamer.client.registry")
            key_path.write_bytes(key)
            crt_path.write_bytes(cert)
            await eventually(lambda: "gateway-2" in server.names("polled"), "the new certificate")
            after = server.names("polled")
            after = after[after.index("gateway-2") :]
            assert after == ["gateway-2"] * len(after)  # never back to the old one
            # The open call was never torn down, and it still works.
            assert server.names("held") == ["gateway-1"] and not held_calls[0].closed
            await held_calls[0].push({"after": b"rotation"})
            await eventually(lambda: ["after"] in held.keys(), "a batch on the old call")  # noqa: SIM118
            assert held.errors == []
            assert "TLS files changed on disk" in caplog.text and str(crt_path) in caplog.text
        finally:
            for r in (held, polled):
                client.remove_listener(r)
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            await client.close()


@pytest.mark.usefixtures("listener_path")  # a sync and an async listener
async def test_half_written_pair_is_never_used_and_warned_once(
    pki: PKI, gateway_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A key that does not match the certificate (the bootstrapper is between its two
    writes), then a truncated certificate: every reconnect meanwhile keeps the last good pair,
    with one warning per problem naming the file; once the pair is whole it is used."""
    crt_path, key_path = gateway_files
    async with IdentityServer(tls=pki.server_tls()) as server:

        async def poll(call: CallHandle) -> None:
            await call.push({"n": b"1"}, resync=True)
            await call.end()

        server.default = poll
        registry = StaticRegistry(server.address, tls=TLSConfig(pki.ca_pem, crt_path, key_path))
        client = client_for(registry)
        polled = Recorder("polled")
        task = asyncio.create_task(client.stream(polled))
        try:
            await eventually(lambda: len(server.names("polled")) >= 1, "a first call")
            caplog.set_level(logging.WARNING, "streamer.client.registry")
            new_cert, new_key = pki.gateway("gateway-2")
            key_path.write_bytes(new_key)  # torn: new key, old certificate
            seen = len(server.seen)
            await eventually(lambda: len(server.seen) >= seen + 4, "reconnects after the write")
            assert set(server.names("polled")) == {"gateway-1"}
            mismatch = [r for r in caplog.records if "does not match" in r.getMessage()]
            assert len(mismatch) == 1 and str(key_path) in mismatch[0].getMessage()
            crt_path.write_bytes(new_cert[: len(new_cert) // 2])  # half of the certificate
            seen = len(server.seen)
            await eventually(lambda: len(server.seen) >= seen + 4, "reconnects after the write")
            assert set(server.names("polled")) == {"gateway-1"}
            torn = [r for r in caplog.records if "not a PEM certificate" in r.getMessage()]
            assert len(torn) == 1 and str(crt_path) in torn[0].getMessage()
            assert all(r.levelno == logging.WARNING for r in mismatch + torn)
            crt_path.write_bytes(new_cert)  # the write completes
            await eventually(lambda: "gateway-2" in server.names("polled"), "the new pair")
            assert polled.errors == []  # the stream never failed on the way
        finally:
            client.remove_listener(polled)
            await asyncio.wait_for(task, 5)
            await client.close()


async def test_same_content_rewritten_keeps_the_channel(
    pki: PKI, gateway_files: tuple[Path, Path]
) -> None:
    """Only content counts: rewriting the same bytes (a new mtime) reuses the channel; new
    content in the pair or in root_ca gives the next call a new one."""
    crt_path, key_path = gateway_files
    registry = StaticRegistry("127.0.0.1:1", tls=TLSConfig(pki.ca_pem, crt_path, key_path))
    first = registry.get_channel("streamer")
    crt_path.write_bytes(crt_path.read_bytes())
    assert registry.get_channel("streamer") is first
    cert, key = pki.gateway("gateway-2")
    key_path.write_bytes(key)
    crt_path.write_bytes(cert)
    second = registry.get_channel("streamer")
    assert second is not first
    assert registry.get_channel("streamer") is second
    # The trust anchor is followed too (a CA bundle gaining the next CA).
    pki.ca_pem.write_bytes(pki.ca_pem.read_bytes() + pem(issue("next-ca", ca=True)[0]))
    third = registry.get_channel("streamer")
    assert third is not second and registry.get_channel("streamer") is third
    await registry.close()


async def test_old_connections_closed_once_idle_open_calls_kept(
    pki: PKI, gateway_files: tuple[Path, Path]
) -> None:
    """After a rotation, a channel with an open call keeps working; one gRPC has put to sleep
    (no calls) is closed when the registry next hands out a channel."""
    crt_path, key_path = gateway_files
    async with IdentityServer(tls=pki.server_tls()) as server:

        async def hold(call: CallHandle) -> None:
            await call.push({"n": b"1"}, resync=True)

        server.default = hold
        registry = StaticRegistry(server.address, tls=TLSConfig(pki.ca_pem, crt_path, key_path))
        busy = registry.get_channel("streamer", 0)
        call = busy.unary_stream(
            "/magma.orc8r.Streamer/GetUpdates",
            request_serializer=StreamRequest.SerializeToString,
            response_deserializer=DataUpdateBatch.FromString,
        )(StreamRequest(stream_name="held"))
        assert len((await call.read()).updates) == 1
        idle = registry.get_channel("streamer", 1)  # never used: IDLE
        cert, key = pki.gateway("gateway-2")
        key_path.write_bytes(key)
        crt_path.write_bytes(cert)
        assert registry.get_channel("streamer", 0) is not busy
        assert registry.get_channel("streamer", 1) is not idle
        await eventually(
            lambda: idle.get_state() is grpc.ChannelConnectivity.SHUTDOWN, "the idle one closed"
        )
        assert busy.get_state() is grpc.ChannelConnectivity.READY
        await server.calls[0].push({"more": b"2"})
        assert [u.key for u in (await call.read()).updates] == ["more"]
        call.cancel()
        await registry.close()
        assert busy.get_state() is grpc.ChannelConnectivity.SHUTDOWN  # close() takes all


# -- §4 connection problems explained ----------------------------------------------------------


async def first_error(registry: StaticRegistry) -> StreamRpcError:
    client = client_for(registry)
    listener = Recorder("s1")
    task = asyncio.create_task(client.stream(listener))
    try:
        await eventually(lambda: listener.errors, "an error", timeout=15)
    finally:
        client.remove_listener(listener)
        await asyncio.wait_for(task, 5)
        await client.close()
    error = listener.errors[0]
    assert isinstance(error, StreamRpcError)
    return error


@pytest.mark.parametrize(
    "case",
    [
        "plaintext server, TLS configured",
        "TLS server, plaintext configured",
        "no client certificate",
        "client certificate refused",
    ],
)
@pytest.mark.usefixtures("listener_path")  # a sync and an async listener
async def test_tls_failures_get_a_cause_and_a_hint(pki: PKI, case: str) -> None:
    rogue_ca = issue("rogue-ca", ca=True)
    rogue = PKI.write(pki, "rogue.pem", issue("gateway-1", rogue_ca, client=True))
    server_tls, client_tls, cause = {
        "plaintext server, TLS configured": (None, TLSConfig(pki.ca_pem), "answered in plaintext"),
        "TLS server, plaintext configured": (pki.server_tls(mutual=False), None, "expects TLS"),
        "no client certificate": (
            pki.server_tls(),
            TLSConfig(pki.ca_pem),
            "requires a client certificate and none is configured",
        ),
        "client certificate refused": (
            pki.server_tls(),
            TLSConfig(pki.ca_pem, rogue, pki.dir / "rogue.pem.key"),
            f"refused the client certificate '{rogue}'",
        ),
    }[case]
    async with ScriptedServer("127.0.0.1:0", tls=server_tls) as server:
        error = await first_error(StaticRegistry(server.address, tls=client_tls))
    assert error.diagnosis is not None, error.details()
    assert cause in error.diagnosis.cause
    assert server.address in error.diagnosis.cause
    assert error.hint == error.diagnosis.hint and error.hint
    assert "failed to connect to all addresses" not in str(error)


@pytest.mark.usefixtures("listener_path")  # a sync and an async listener
async def test_refused_and_unresolvable_targets_explained() -> None:
    port = free_port()
    error = await first_error(StaticRegistry(f"127.0.0.1:{port}"))
    assert error.diagnosis is not None
    assert error.diagnosis.cause == f"connection to 127.0.0.1:{port} refused: nothing listens there"
    # The host's log line for a failed call says the same, not gRPC's text.
    line = describe_error(error)
    assert line.startswith(f"RPC failed: UNAVAILABLE: connection to 127.0.0.1:{port} refused")
    assert "(hint: " in line and "failed to connect to all addresses" not in line
    # ... and so does the stream's last_error in /status and `streamer status`.
    assert _describe(error_kind(error), error) == (
        f"UNAVAILABLE: connection to 127.0.0.1:{port} refused: nothing listens there"
    )
    error = await first_error(StaticRegistry("no-such-host.invalid:443", tls=TLSConfig()))
    assert error.diagnosis is not None
    assert error.diagnosis.cause == "cannot resolve the host name of no-such-host.invalid:443"


CONN = ResolvedConnection("cloud.example:443", True, "streamer-cloud.example")
# gRPC's own words for the same failure differ between releases: both must be understood.
SAMPLES = {
    "1.85 no route": (
        "failed to connect to all addresses; last error: UNKNOWN: ipv6:%5B100::1%5D:443: "
        "Failed to connect to remote host: getsockopt(SO_ERROR): No route to host",
        "no route to cloud.example:443",
    ),
    "1.60 unreachable": (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.9.9.9:443: "
        "Failed to connect to remote host: Network is unreachable",
        "no route to cloud.example:443",
    ),
    "1.60 DNS": (
        "DNS resolution failed for cloud.example:443: C-ares status is not ARES_SUCCESS "
        "qtype=AAAA name=cloud.example is_balancer=0: Domain name not found",
        "cannot resolve the host name of cloud.example:443",
    ),
    "1.60 host name": (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Peer name streamer-cloud.example is not in peer certificate",
        "not valid for the name checked, 'streamer-cloud.example'",
    ),
    "1.60 unknown CA": (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Ssl "
        "handshake failed: SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
        "CERTIFICATE_VERIFY_FAILED",
        "is not signed by the system trust store (or it has expired)",
    ),
}


@pytest.mark.parametrize("sample", list(SAMPLES.values()), ids=list(SAMPLES))
def test_diagnose_understands_each_grpc_wording(sample: tuple[str, str]) -> None:
    details, cause = sample
    found = diagnose(grpc.StatusCode.UNAVAILABLE, details, CONN)
    assert isinstance(found, Diagnosis) and cause in found.cause
    assert diagnose("UNAVAILABLE", details, CONN) == found  # the code's name works too


def test_diagnose_leaves_the_servers_own_answers_alone() -> None:
    assert diagnose("UNAVAILABLE", "stream 'x' does not exist", CONN) is None
    assert diagnose(grpc.StatusCode.PERMISSION_DENIED, "Connection refused", CONN) is None
    assert diagnose(grpc.StatusCode.UNAVAILABLE, "", CONN) is None


@pytest.fixture
def connect_config(tmp_path: Path, sink_site: Path) -> Iterator[Any]:
    def write(target: str, streams: list[str], **cloud: str) -> Path:
        lines = [f'{k} = "{v}"' for k, v in cloud.items()]
        path = tmp_path / "streamer.toml"
        path.write_text(
            'plugins = ["sink"]\n'
            f'[plugin.sink]\nstreams = {streams!r}\nout = "{tmp_path / "out"}"\n'.replace("'", '"')
            + f'[cloud]\ntarget = "{target}"\n'
            + "\n".join(lines)
            + "\n"
        )
        return path

    yield write


async def test_check_connect_reports_each_stream_and_exits_2_on_a_problem(
    pki: PKI, gateway_files: tuple[Path, Path], connect_config: Any, sink_site: Path
) -> None:
    crt_path, key_path = gateway_files
    async with IdentityServer(tls=pki.server_tls()) as server:

        async def script(call: CallHandle) -> None:
            if call.stream == "nosuch":
                await call.fail(grpc.StatusCode.UNAVAILABLE, "stream nosuch does not exist")
            else:
                await call.push({"k": b"v"}, resync=True)

        server.default = script
        tls = {
            "root_ca": str(pki.ca_pem),
            "client_cert": str(crt_path),
            "client_key": str(key_path),
        }
        env = streamer_env(sink_site)
        cfg = connect_config(server.address, ["subs", "policies"], **tls)
        code, out = await run_cli("check", "--connect", "--config", str(cfg), env=env)
        assert code == 0, out
        assert re.search(r"stream subs: OK", out) and re.search(r"stream policies: OK", out)
        assert sorted(s for s, _ in server.seen) == ["policies", "subs"]
        assert {cn for _, cn in server.seen} == {"gateway-1"}  # the handshake was real
        cfg = connect_config(server.address, ["subs", "nosuch"], **tls)
        code, out = await run_cli("check", "--connect", "--config", str(cfg), env=env)
        assert code == 2, out
        assert "stream subs: OK" in out
        assert "stream nosuch: PROBLEM: UNAVAILABLE: stream nosuch does not exist" in out
        code, out = await run_cli("check", "--connect", "--json", "--config", str(cfg), env=env)
        assert code == 2, out
        doc = json.loads(out)
        assert doc["ok"] is False
        assert doc["connection"]["mode"] == "tls" and doc["connection"]["target"] == server.address
        assert doc["connection"]["client_cert"] == str(crt_path)
        results = [(r["stream"], r["ok"]) for r in doc["streams"]]
        assert results == [("subs", True), ("nosuch", False)]
    # Server gone: every stream reports the refused connection, in the project's words.
    code, out = await run_cli("check", "--connect", "--config", str(cfg), env=env)
    assert code == 2
    assert f"stream subs: PROBLEM: connection to {server.address} refused" in out
    assert "(hint: " in out


async def test_grpc_core_log_lines_silenced_unless_asked_for(
    pki: PKI, connect_config: Any, sink_site: Path
) -> None:
    """A failing handshake makes gRPC's C core log ("Handshake failed ...",
    ssl_transport_security.cc). Not on the operator's terminal, unless GRPC_VERBOSITY says so."""
    rogue_ca = issue("rogue-ca", ca=True)
    rogue_ca_pem = pki.write("rogue-ca.pem", rogue_ca)
    core_line = re.compile(r"^[DIWE]\d{4} |ssl_transport_security\.cc|Handshake failed", re.M)
    async with ScriptedServer("127.0.0.1:0", tls=pki.server_tls(mutual=False)) as server:
        cfg = connect_config(server.address, ["subs"], root_ca=str(rogue_ca_pem))
        env = streamer_env(sink_site)
        env.pop("GRPC_VERBOSITY", None)
        code, quiet = await run_cli("check", "--connect", "--config", str(cfg), env=env)
        assert code == 2
        assert f"is not signed by root_ca '{rogue_ca_pem}'" in quiet
        assert not core_line.search(quiet), quiet
        env["GRPC_VERBOSITY"] = "DEBUG"
        code, loud = await run_cli("check", "--connect", "--config", str(cfg), env=env)
        assert code == 2
        assert core_line.search(loud), loud  # the user asked: respected


async def test_check_connect_bounds_the_wait_for_a_silent_server(
    connect_config: Any, sink_site: Path
) -> None:
    async with ScriptedServer("127.0.0.1:0") as server:  # accepts calls, never answers
        cfg = connect_config(server.address, ["subs"])
        env = streamer_env(sink_site)
        code, out = await run_cli(
            "check", "--connect", "--timeout", "0.5", "--config", str(cfg), env=env
        )
        assert code == 2, out
        assert "stream subs: PROBLEM: no answer within 0.5 s" in out
        assert len(server.calls) == 1
        await server.calls[0].wait_closed()  # and the call was cancelled, not left open


async def test_tap_explains_a_connection_failure(connect_config: Any, sink_site: Path) -> None:
    port = free_port()
    cfg = connect_config(f"127.0.0.1:{port}", ["subs"])
    code, out = await run_cli("tap", "subs", "--config", str(cfg), env=streamer_env(sink_site))
    assert code == 1, out
    assert f"streamer tap: subs: UNAVAILABLE: connection to 127.0.0.1:{port} refused" in out
    assert "failed to connect to all addresses" not in out
