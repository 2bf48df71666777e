from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from streamer.registry import (
    DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH,
    MagmaRegistry,
    RegistryError,
    StaticRegistry,
    TLSConfig,
    is_loopback,
    read_control_proxy,
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:50051", True),
        ("127.3.4.5:1", True),
        ("localhost:8443", True),
        ("[::1]:80", True),
        ("unix:/run/streamer.sock", True),
        ("dns:///localhost:1", True),
        ("10.0.0.1:50051", False),
        ("controller.magma.test:443", False),
        ("[2001:db8::1]:443", False),
    ],
)
def test_is_loopback(target: str, expected: bool) -> None:
    assert is_loopback(target) is expected


def test_plaintext_to_remote_refused_unless_insecure(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RegistryError, match=r"refusing plaintext.*'10\.1\.2\.3:443'.*insecure"):
        StaticRegistry("10.1.2.3:443")
    with caplog.at_level(logging.WARNING, "streamer.registry"):
        StaticRegistry("10.1.2.3:443", insecure=True)
    assert "plaintext (insecure) connection to 10.1.2.3:443" in caplog.text


def test_channel_options() -> None:
    reg = StaticRegistry("127.0.0.1:1", authority="streamer-cloud.test")
    opts = reg.options
    assert opts["grpc.max_receive_message_length"] == DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH
    assert DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH > 4 * 1024 * 1024
    assert opts["grpc.keepalive_time_ms"] >= 300_000  # never provokes too_many_pings
    assert opts["grpc.http2.max_pings_without_data"] == 0
    assert opts["grpc.default_authority"] == "streamer-cloud.test"
    assert opts["grpc.max_reconnect_backoff_ms"] == 1_000
    assert opts["grpc.min_reconnect_backoff_ms"] == 100


async def test_channels_are_reused_per_shard() -> None:
    reg = StaticRegistry("127.0.0.1:1")
    a = reg.get_channel("streamer")
    assert reg.get_channel("streamer") is a
    assert reg.get_channel("streamer", 1) is not a
    assert isinstance(a, grpc.aio.Channel)
    await reg.close()


def test_missing_and_mismatched_tls_files(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"cannot read root CA certificate '.*nope\.pem'"):
        StaticRegistry("cloud:443", tls=TLSConfig(root_ca=tmp_path / "nope.pem"))
    with pytest.raises(RegistryError, match="together"):
        TLSConfig(client_cert=tmp_path / "c.pem")
    bad = tmp_path / "ca.pem"
    bad.write_text("not a cert\n")
    with pytest.raises(RegistryError, match="is not PEM"):
        StaticRegistry("cloud:443", tls=TLSConfig(root_ca=bad))


CONTROL_PROXY = """\
---
# Magma gateway control_proxy.yml
cloud_address: controller.magma.test
cloud_port: 443
local_port: 8443
rootca_cert: /var/opt/magma/certs/rootCA.pem   # trust anchor
gateway_cert: "/var/opt/magma/certs/gateway.crt"
gateway_key: '/var/opt/magma/certs/gateway.key'
proxy_cloud_connections: {proxied}
"""


def test_read_control_proxy(tmp_path: Path) -> None:
    path = tmp_path / "control_proxy.yml"
    path.write_text(CONTROL_PROXY.format(proxied="True"))
    cfg = read_control_proxy(path)
    assert cfg["cloud_address"] == "controller.magma.test"
    assert cfg["rootca_cert"] == "/var/opt/magma/certs/rootCA.pem"
    assert cfg["gateway_cert"] == "/var/opt/magma/certs/gateway.crt"
    assert cfg["gateway_key"] == "/var/opt/magma/certs/gateway.key"


def test_magma_registry_proxied(tmp_path: Path) -> None:
    path = tmp_path / "control_proxy.yml"
    path.write_text(CONTROL_PROXY.format(proxied="True"))
    reg = MagmaRegistry(path)
    assert reg.proxied
    assert reg.target == "localhost:8443"
    assert reg.tls is None
    assert reg.options["grpc.default_authority"] == "streamer-controller.magma.test"


def test_magma_registry_direct_reads_cert_files(tmp_path: Path) -> None:
    path = tmp_path / "control_proxy.yml"
    path.write_text(CONTROL_PROXY.format(proxied="false"))
    with pytest.raises(RegistryError, match=r"/var/opt/magma/certs/rootCA\.pem"):
        MagmaRegistry(path)


def test_magma_registry_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "control_proxy.yml"
    path.write_text("cloud_port: 443\n")
    with pytest.raises(RegistryError, match="missing required key 'cloud_address'"):
        MagmaRegistry(path)
    with pytest.raises(RegistryError, match="cannot read"):
        MagmaRegistry(tmp_path / "absent.yml")
