"""Connection settings that can be checked without importing gRPC.

``streamer check`` validates certificate files, key/cert pairs and Magma's control_proxy.yml
through this module, so it stays fast and never imports grpc.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "MagmaSettings",
    "RegistryError",
    "check_key_matches_cert",
    "is_loopback",
    "load_tls_files",
    "magma_settings",
    "read_control_proxy",
    "read_pem",
]

# Default gRPC servers (C core, Go) count a ping as abuse when it comes less than 5 minutes after
# the previous one while they send no data, and close the connection with too_many_pings after
# two strikes. 300 s is the shortest interval that never trips that on a quiet stream, and it is
# under common NAT idle timeouts (AWS NAT: 350 s); the timeout then detects a half-open path.
DEFAULT_KEEPALIVE_TIME = 300.0
DEFAULT_KEEPALIVE_TIMEOUT = 20.0


class RegistryError(Exception):
    """A connection setting is unusable (missing file, plaintext to a remote host, ...)."""


def read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc
    if not data.strip():
        raise RegistryError(f"{what} {str(path)!r} is empty")
    return data


def check_key_matches_cert(cert: bytes, key: bytes, cert_path: Path, key_path: Path) -> None:
    """Catch a mismatched or unreadable cert/key pair at start-up with a message naming the
    files; gRPC would only fail later, at handshake time, with a vague error."""
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise RegistryError(f"client certificate {str(cert_path)!r} is not a PEM certificate")
    if b"PRIVATE KEY-----" not in key:
        raise RegistryError(f"client key {str(key_path)!r} is not a PEM private key")
    try:  # best effort: cryptography is optional at run time
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        return
    try:
        public = x509.load_pem_x509_certificate(cert).public_key()
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise RegistryError(
            f"cannot parse client certificate {str(cert_path)!r} / key {str(key_path)!r}: {exc}"
        ) from exc
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if public.public_bytes(enc, fmt) != private.public_key().public_bytes(enc, fmt):
        raise RegistryError(
            f"client key {str(key_path)!r} does not match client certificate {str(cert_path)!r}"
        )


def is_loopback(target: str) -> bool:
    """True for targets that cannot leave this machine (127/8, ::1, localhost, unix sockets)."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host = target
    if host.startswith("dns:///"):
        host = host[len("dns:///") :]
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_control_proxy(path: Path) -> dict[str, str]:
    """Read the flat ``key: value`` settings of Magma's control_proxy.yml.

    Only top-level scalars are needed, so this reads that subset of YAML (comments, quotes)
    instead of depending on a YAML library.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith(("#", "---")) or line[0] in " \t-":
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise RegistryError(f"{path}:{lineno}: expected 'key: value', got {raw.strip()!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def load_tls_files(
    root_ca: Path | None, client_cert: Path | None, client_key: Path | None
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """Read and check TLS files: (root CA, client key, client cert chain), PEM bytes or None.

    Every failure names the file and what is wrong with it.
    """
    if (client_cert is None) != (client_key is None):
        raise RegistryError("TLS client_cert and client_key must be given together")
    root = read_pem(root_ca, "root CA certificate") if root_ca else None
    if root is not None and b"-----BEGIN CERTIFICATE-----" not in root:
        raise RegistryError(f"root CA certificate {str(root_ca)!r} is not PEM")
    cert = key = None
    if client_cert is not None and client_key is not None:
        cert = read_pem(client_cert, "client certificate")
        key = read_pem(client_key, "client key")
        check_key_matches_cert(cert, key, client_cert, client_key)
    return root, key, cert


@dataclass(frozen=True, slots=True)
class MagmaSettings:
    path: Path
    proxied: bool
    target: str
    authority: str
    root_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


def magma_settings(path: Path, service: str = "streamer") -> MagmaSettings:
    """Where and how a Magma gateway reaches ``service``, from its control_proxy.yml.

    Direct mode: TLS to ``cloud_address:cloud_port`` with ``rootca_cert``, ``gateway_cert`` and
    ``gateway_key``. Proxied mode (``proxy_cloud_connections: true``): plaintext to
    ``localhost:local_port``, where Magma's control_proxy adds TLS. Both send the
    ``:authority`` ``<service>-<cloud_address>`` the cloud routes on.
    """
    cfg = read_control_proxy(path)

    def need(key: str) -> str:
        value = cfg.get(key, "")
        if not value:
            raise RegistryError(f"{path}: missing required key {key!r}")
        return value

    cloud_address = need("cloud_address")
    authority = f"{service}-{cloud_address}"
    proxied = cfg.get("proxy_cloud_connections", "false").lower() in ("true", "yes", "on", "1")
    if proxied:
        return MagmaSettings(path, True, f"localhost:{need('local_port')}", authority)
    base = path.parent
    return MagmaSettings(
        path,
        False,
        f"{cloud_address}:{need('cloud_port')}",
        authority,
        root_ca=base / need("rootca_cert"),
        client_cert=base / need("gateway_cert"),
        client_key=base / need("gateway_key"),
    )
