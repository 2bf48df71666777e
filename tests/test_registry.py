from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from streamer.client.connection import magma_settings
from streamer.client.registry import (
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
    with caplog.at_level(logging.WARNING, "streamer.client.registry"):
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


async def test_sync_channels_share_the_options_and_shards_of_aio_ones() -> None:
    """Sync listeners' threads get sync channels built from the same option list (keepalive,
    authority, receive limit, reconnect backoff, one connection per shard)."""
    reg = StaticRegistry(
        "127.0.0.1:1", authority="streamer-cloud.test", keepalive_time=42.0,
        max_receive_message_length=12345,
    )  # fmt: skip
    opts = dict(reg.channel_options())
    assert opts["grpc.keepalive_time_ms"] == 42_000
    assert opts["grpc.max_receive_message_length"] == 12345
    assert opts["grpc.default_authority"] == "streamer-cloud.test"
    assert opts["grpc.use_local_subchannel_pool"] == 1
    assert {k: v for k, v in opts.items() if k != "grpc.use_local_subchannel_pool"} == dict(
        reg.options
    )
    a = reg.get_sync_channel("streamer")
    assert isinstance(a, grpc.Channel) and not isinstance(a, grpc.aio.Channel)
    assert reg.get_sync_channel("streamer") is a
    assert reg.get_sync_channel("streamer", 1) is not a
    await reg.close()


def test_missing_and_mismatched_tls_files(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"cannot read root CA certificate '.*nope\.pem'"):
        StaticRegistry("cloud:443", tls=TLSConfig(root_ca=tmp_path / "nope.pem"))
    with pytest.raises(RegistryError, match="client_key: expected a path because client_cert"):
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
    reg = MagmaRegistry(path, override=tmp_path / "absent.yml")
    assert reg.proxied
    assert reg.target == "127.0.0.1:8443"  # what Magma dials: its local control proxy
    assert reg.tls is None
    assert reg.options["grpc.default_authority"] == "streamer-controller.magma.test"


def test_magma_registry_direct_reads_cert_files(tmp_path: Path) -> None:
    path = tmp_path / "control_proxy.yml"
    path.write_text(CONTROL_PROXY.format(proxied="false"))
    with pytest.raises(RegistryError, match=r"/var/opt/magma/certs/rootCA\.pem"):
        MagmaRegistry(path, override=None)


def test_magma_registry_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "control_proxy.yml"
    path.write_text("cloud_port: 443\n")
    with pytest.raises(RegistryError, match="missing required key 'cloud_address'"):
        MagmaRegistry(path, override=None)
    with pytest.raises(RegistryError, match="cannot read"):
        MagmaRegistry(tmp_path / "absent.yml")


# -- control_proxy.yml + its override, as Magma reads them ------------------------------------

BASE = """\
# /etc/magma/control_proxy.yml as shipped
cloud_address: controller.magma.test
cloud_port: 443
local_port: 8443
rootca_cert: /var/opt/magma/certs/rootCA.pem
gateway_cert: /var/opt/magma/certs/gateway.crt
gateway_key: /var/opt/magma/certs/gateway.key
proxy_cloud_connections: True
"""


def test_override_file_replaces_keys_of_the_base(tmp_path: Path) -> None:
    base = tmp_path / "etc" / "control_proxy.yml"
    base.parent.mkdir()
    base.write_text(BASE)
    override = tmp_path / "var" / "control_proxy.yml"
    override.parent.mkdir()
    override.write_text(
        "cloud_address: orc8r.operator.example\ncloud_port: 7443\n"
        "proxy_cloud_connections: False\nrootca_cert: certs/ca.pem\n"
    )
    settings = magma_settings(base, override=override)
    assert settings.target == "orc8r.operator.example:7443"
    assert settings.authority == "streamer-orc8r.operator.example"
    assert not settings.proxied
    # relative paths resolve against the file that set them; the others come from the base
    assert settings.root_ca == override.parent / "certs" / "ca.pem"
    assert settings.client_cert == Path("/var/opt/magma/certs/gateway.crt")
    assert settings.files == (base, override)
    conn = settings.connection()
    assert conn.tls and conn.target == "orc8r.operator.example:7443"


def test_missing_override_is_normal_and_unreadable_or_malformed_is_an_error(
    tmp_path: Path,
) -> None:
    base = tmp_path / "control_proxy.yml"
    base.write_text(BASE)
    settings = magma_settings(base, override=tmp_path / "absent.yml")
    assert settings.files == (base,)
    assert settings.target == "127.0.0.1:8443"
    bad = tmp_path / "bad.yml"
    bad.write_text("cloud_address controller\n")
    with pytest.raises(RegistryError, match=rf"{bad}:1: expected 'key: value'"):
        magma_settings(base, override=bad)
    directory = tmp_path / "dir.yml"
    directory.mkdir()
    with pytest.raises(RegistryError, match=rf"cannot read '{directory}'"):
        magma_settings(base, override=directory)
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"cloud_address: \xff\xfe\n")
    with pytest.raises(RegistryError, match=rf"cannot read '{binary}'"):
        magma_settings(base, override=binary)


def test_keys_in_neither_file_take_magmas_defaults(tmp_path: Path) -> None:
    """Magma's Go registry and control_proxy config: an absent proxy_cloud_connections means
    proxied; local_port 8443, cloud_port 443, certificates under /var/opt/magma/certs."""
    base = tmp_path / "control_proxy.yml"
    base.write_text("cloud_address: controller.magma.test\n")
    settings = magma_settings(base, override=None)
    assert settings.proxied
    assert settings.target == "127.0.0.1:8443"
    override = tmp_path / "override.yml"
    override.write_text("proxy_cloud_connections: off\n")
    direct = magma_settings(base, override=override)
    assert direct.target == "controller.magma.test:443"
    assert direct.root_ca == Path("/var/opt/magma/certs/rootCA.pem")
    assert direct.client_key == Path("/var/opt/magma/certs/gateway.key")


def test_bad_values_name_the_file_and_key(tmp_path: Path) -> None:
    base = tmp_path / "control_proxy.yml"
    base.write_text(BASE)
    override = tmp_path / "override.yml"
    override.write_text("proxy_cloud_connections: maybe\n")
    with pytest.raises(RegistryError, match=rf"{override}: proxy_cloud_connections: expected"):
        magma_settings(base, override=override)
    override.write_text("local_port: 70000\n")
    with pytest.raises(RegistryError, match=rf"{override}: local_port: expected a port"):
        magma_settings(base, override=override)
