"""The connection rules are one function (``resolve_target``), and each of them fires from
``streamer check``, from ``streamer run`` (the running host refuses to start) and from the
registry the host dials with."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.client.connection import ResolvedConnection, resolve_target
from streamer.client.registry import RegistryError, StaticRegistry, TLSConfig
from streamer.host.config import config_from_text
from streamer.host.host import build_registry
from tests.helpers import run_cli, streamer_env

RULES = [
    (  # TLS to several replicas: one name is checked for all of them, so it must be given
        'targets = ["10.0.0.1:7443", "10.0.0.2:7443"]\n',
        "cloud.authority: expected the name every replica's certificate carries",
        lambda: StaticRegistry("ipv4:10.0.0.1:7443,10.0.0.2:7443", tls=TLSConfig()),
        "authority: expected the name every replica's certificate carries",
    ),
    (  # cert and key together
        'target = "cloud.example.com:443"\nclient_cert = "gw.crt"\n',
        "cloud.client_key: expected a path because client_cert is set, got nothing",
        lambda: TLSConfig(client_cert=Path("gw.crt")),
        "client_key: expected a path because client_cert is set, got nothing",
    ),
    (  # insecure contradicts TLS files
        'target = "cloud.example.com:443"\ninsecure = true\nroot_ca = "ca.pem"\n',
        "cloud.insecure: expected false when root_ca or client_cert is set, got true",
        lambda: StaticRegistry(
            "cloud.example.com:443", tls=TLSConfig(root_ca=Path("ca.pem")), insecure=True
        ),
        "insecure: expected false when root_ca or client_cert is set, got true",
    ),
    (  # an authority, when set, is a name
        'target = "127.0.0.1:50051"\nauthority = " "\n',
        "cloud.authority: expected a non-empty string, got ' '",
        lambda: StaticRegistry("127.0.0.1:50051", authority=" "),
        "authority: expected a non-empty string, got ' '",
    ),
]


@pytest.mark.parametrize(("cloud", "reported", "api", "raised"), RULES)
def test_each_rule_fires_from_check_run_and_the_registry(
    tmp_path: Path, cloud: str, reported: str, api: object, raised: str
) -> None:
    cfg = tmp_path / "streamer.toml"
    cfg.write_text(f'plugins = ["log"]\n[plugin.log]\nstreams = ["s"]\n[cloud]\n{cloud}')
    for command in ("check", "run"):
        code, out = run_cli(command, "--config", str(cfg), env=streamer_env())
        assert code == 2, out
        assert f"1 problem found; nothing was started:\n  1. {reported}" in out, (command, out)
    with pytest.raises(RegistryError) as info:
        api()  # type: ignore[operator]
    assert raised in str(info.value)


def test_plaintext_stays_on_loopback_unless_insecure(tmp_path: Path) -> None:
    """From the file, a remote target without TLS files gets TLS (system roots), a loopback
    one plaintext; plaintext to a remote target only with insecure = true. The registry
    refuses plaintext off loopback without insecure."""
    for target, insecure, tls in [
        ("cloud.example.com:443", False, True),
        ("127.0.0.1:50051", False, False),
        ("cloud.example.com:443", True, False),
    ]:
        text = f'[cloud]\ntarget = "{target}"\ninsecure = {str(insecure).lower()}\n'
        config = config_from_text(text, tmp_path / "streamer.toml")
        registry = build_registry(config)  # what the running host dials with
        assert isinstance(registry, StaticRegistry)
        assert registry.connection.tls is tls, target
        cfg = tmp_path / "streamer.toml"
        cfg.write_text(f'plugins = ["log"]\n[plugin.log]\nstreams = ["s"]\n{text}')
        code, out = run_cli("check", "--config", str(cfg), env=streamer_env())
        assert code == 0, out
        assert ("mode: TLS" if tls else "mode: plaintext") in out, out
    with pytest.raises(RegistryError, match="refusing plaintext connection to non-loopback"):
        StaticRegistry("10.1.2.3:443")


def test_resolve_target_reports_every_broken_rule_at_once() -> None:
    found = resolve_target(
        "10.1.2.3:443", tls=False, client_cert=Path("c"), insecure=False, authority=""
    )
    assert isinstance(found, tuple)
    assert [p.key for p in found] == ["client_key", "tls", "insecure", "authority"]
    ok = resolve_target("10.1.2.3:443", root_ca=Path("ca.pem"))
    assert ok == ResolvedConnection("10.1.2.3:443", True, None, Path("ca.pem"))
