"""Connection settings that can be checked without importing gRPC.

``streamer check`` validates certificate files, key/cert pairs and Magma's control_proxy.yml
through this module, so it stays fast and never imports grpc.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamer.base.errors import StreamerError
from streamer.client.defaults import KEEPALIVE_TIME, KEEPALIVE_TIMEOUT

__all__ = [
    "CONTROL_PROXY_OVERRIDE",
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "MAGMA_DEFAULTS",
    "ConnectionProblem",
    "MagmaConfig",
    "MagmaSettings",
    "RegistryError",
    "ResolvedConnection",
    "check_key_matches_cert",
    "is_loopback",
    "load_magma_config",
    "load_tls_files",
    "magma_settings",
    "read_control_proxy",
    "read_pem",
    "resolve_target",
    "targets_uri",
]

DEFAULT_KEEPALIVE_TIME = KEEPALIVE_TIME  # the names 0.2 exported; see streamer.client.defaults
DEFAULT_KEEPALIVE_TIMEOUT = KEEPALIVE_TIMEOUT


class RegistryError(StreamerError):
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
    """Catch a mismatched, unreadable or half-written cert/key pair with a message naming the
    file; gRPC would only fail later, at handshake time, with a vague error."""
    if b"-----BEGIN CERTIFICATE-----" not in cert or b"-----END CERTIFICATE-----" not in cert:
        raise RegistryError(f"client certificate {str(cert_path)!r} is not a PEM certificate")
    if b"PRIVATE KEY-----" not in key or b"-----END " not in key:
        raise RegistryError(f"client key {str(key_path)!r} is not a PEM private key")
    try:  # best effort: cryptography is optional at run time
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        return
    try:
        public = x509.load_pem_x509_certificate(cert).public_key()
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"cannot parse client certificate {str(cert_path)!r}: {exc}") from exc
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"cannot parse client key {str(key_path)!r}: {exc}") from exc
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if public.public_bytes(enc, fmt) != private.public_key().public_bytes(enc, fmt):
        raise RegistryError(
            f"client key {str(key_path)!r} does not match client certificate {str(cert_path)!r}"
        )


def targets_uri(addresses: Sequence[str]) -> str:
    """Several ``IP:port`` server addresses as one gRPC target: ``ipv4:A,B`` or ``ipv6:A,B``.

    One channel then holds every address and gRPC's ``pick_first`` moves to the next one when
    the connection in use fails (the registry's service config shuffles the list, so a fleet
    spreads over the replicas). gRPC's address-list schemes take IP literals of one family only,
    not host names (a name with several addresses is ``target = "name:port"``): ValueError says
    which entry is not usable.
    """
    if not addresses:
        raise ValueError("expected at least one IP:port address, got none")
    families: set[int] = set()
    for address in addresses:
        host, sep, port = address.rpartition(":")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            ip = None
        if not sep or ip is None or (ip.version == 6) != (bare != host):
            raise ValueError(
                f"expected IP:port (IPv6 in brackets), got {address!r}: several addresses "
                "must be IP literals; for a host name with several addresses use target"
            )
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            raise ValueError(f"expected a port from 1 to 65535 in {address!r}")
        families.add(ip.version)
    if len(families) > 1:
        raise ValueError(
            "expected addresses of one family (all IPv4 or all IPv6), got both: gRPC dials "
            "one address list per family"
        )
    return f"ipv{families.pop()}:" + ",".join(addresses)


def is_loopback(target: str) -> bool:
    """True for targets that cannot leave this machine (127/8, ::1, localhost, unix sockets).

    An address list (``ipv4:A,B``) is loopback when every address in it is."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    if target.startswith(("ipv4:", "ipv6:")):
        return all(is_loopback(a) for a in target[len("ipv4:") :].split(","))
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


CONTROL_PROXY_OVERRIDE = Path("/var/opt/magma/configs/control_proxy.yml")
"""Where Magma looks for the operator's overrides of ``/etc/magma/control_proxy.yml``."""

# What Magma's Go gateway code (orc8r/gateway/go/config/control_proxy.go; the cloud registry's
# getUseProxyCloudConnection) uses when a key is in neither file. Magma's Python client has no
# defaults of its own (a missing key raises KeyError), except that it too proxies when it cannot
# load control_proxy.yml at all. So: an absent proxy_cloud_connections means *proxied*.
MAGMA_DEFAULTS: dict[str, str] = {
    "proxy_cloud_connections": "true",
    "local_port": "8443",
    "cloud_port": "443",
    "rootca_cert": "/var/opt/magma/certs/rootCA.pem",
    "gateway_cert": "/var/opt/magma/certs/gateway.crt",
    "gateway_key": "/var/opt/magma/certs/gateway.key",
}

# YAML 1.1 booleans, which is what Magma's PyYAML and Go yaml.v2 loaders accept.
_YAML_TRUE = ("y", "yes", "true", "on")
_YAML_FALSE = ("n", "no", "false", "off")


def read_control_proxy(path: Path, *, missing_ok: bool = False) -> dict[str, str] | None:
    """Read the flat ``key: value`` settings of Magma's control_proxy.yml.

    Only top-level scalars are needed, so this reads that subset of YAML (comments, quotes)
    instead of depending on a YAML library. With ``missing_ok`` a file that does not exist gives
    None (Magma skips an absent override file); any other problem names the file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if missing_ok:
            return None
        raise RegistryError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise RegistryError(f"cannot read {str(path)!r}: {why}") from exc
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith(("#", "---")) or line[0] in " \t-":
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise RegistryError(f"{path}:{lineno}: expected 'key: value', got {raw.strip()!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


@dataclass(frozen=True, slots=True)
class MagmaConfig:
    """control_proxy.yml with its override laid over it, as Magma's ``load_service_config``
    does: each top-level key of the override replaces the base's. ``sources`` maps each key to
    the file it came from; ``files`` are the files actually read, in order."""

    values: Mapping[str, str]
    sources: Mapping[str, Path]
    files: tuple[Path, ...]

    def get(self, key: str) -> tuple[str, Path | None]:
        """(value, file it came from); Magma's default and None when neither file sets it."""
        if key in self.values and self.values[key] != "":
            return self.values[key], self.sources[key]
        return MAGMA_DEFAULTS.get(key, ""), None

    def where(self, key: str) -> str:
        source = self.sources.get(key)
        return f"{source}: {key}" if source is not None else f"{key} (Magma's default)"


def load_magma_config(path: Path, override: Path | None = CONTROL_PROXY_OVERRIDE) -> MagmaConfig:
    base = read_control_proxy(path)
    assert base is not None
    values = dict(base)
    sources = dict.fromkeys(base, path)
    files = [path]
    if override is not None:
        over = read_control_proxy(override, missing_ok=True)
        if over is not None:
            files.append(override)
            values.update(over)
            sources.update(dict.fromkeys(over, override))
    return MagmaConfig(values, sources, tuple(files))


@dataclass(frozen=True, slots=True)
class ConnectionProblem:
    """A connection rule broken by the settings; ``key`` names the setting to change
    (``insecure``, ``client_key``...; ``streamer.toml`` puts it under ``[cloud]``)."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def _pair_problem(client_cert: object, client_key: object) -> ConnectionProblem | None:
    if (client_cert is None) == (client_key is None):
        return None
    have, missing = (
        ("client_cert", "client_key") if client_key is None else ("client_key", "client_cert")
    )
    return ConnectionProblem(missing, f"expected a path because {have} is set, got nothing")


def resolve_target(
    target: str,
    *,
    tls: bool | None = None,
    insecure: bool = False,
    root_ca: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    authority: str | None = None,
) -> ResolvedConnection | tuple[ConnectionProblem, ...]:
    """The connection rules, in one place: what ``target`` with these settings will dial, or
    every rule they break. Pure (reads no file); ``streamer check``, the config file's
    validation and the registry the running host dials with all call it.

    - TLS or plaintext: ``tls=None`` decides as the config file does (plaintext with
      ``insecure``, or to a loopback target without TLS files; TLS otherwise, with the system's
      roots unless ``root_ca`` is set); ``True``/``False`` is the caller's explicit choice.
    - ``client_cert`` and ``client_key`` are given together.
    - ``insecure`` contradicts TLS files, and an explicit ``tls=True``.
    - Plaintext leaves this machine only with ``insecure`` (an address list: unless every
      address is loopback).
    - ``authority``, when given, is not blank; TLS to an address list (``ipv4:A,B``, from
      ``[cloud] targets``) needs it: one connection checks one name for every address.
    """
    problems: list[ConnectionProblem] = []
    if not isinstance(target, str) or not target.strip():
        problems.append(ConnectionProblem("target", f"expected a 'host:port', got {target!r}"))
        target = ""
    files = root_ca is not None or client_cert is not None or client_key is not None
    pair = _pair_problem(client_cert, client_key)
    if pair is not None:
        problems.append(pair)
    if insecure and (files or tls is True):
        problems.append(
            ConnectionProblem(
                "insecure", "expected false when root_ca or client_cert is set, got true"
            )
        )
    if tls is None:
        tls = not insecure and (files or not (target and is_loopback(target)))
    elif not tls and files:
        problems.append(
            ConnectionProblem("tls", "TLS files are set but the connection is plaintext")
        )
    if target and not tls and not insecure and not is_loopback(target):
        problems.append(
            ConnectionProblem(
                "insecure",
                f"refusing plaintext connection to non-loopback target {target!r}: "
                "configure TLS, or set insecure = true to allow it explicitly",
            )
        )
    if authority is not None and not authority.strip():
        problems.append(
            ConnectionProblem("authority", f"expected a non-empty string, got {authority!r}")
        )
    elif authority is None and tls and len(_addresses(target)) > 1:
        # Without authority gRPC would check the joined list, which no certificate carries.
        problems.append(
            ConnectionProblem(
                "authority",
                "expected the name every replica's certificate carries (TLS to several targets "
                "checks each one against that name), got nothing",
            )
        )
    if problems:
        return tuple(problems)
    return ResolvedConnection(
        target,
        tls,
        authority,
        root_ca if tls else None,
        client_cert if tls else None,
        client_key if tls else None,
    )


def _addresses(target: str) -> tuple[str, ...]:
    """Each address of an address-list target (``ipv4:A,B``), else the target itself."""
    if target.startswith(("ipv4:", "ipv6:")):
        return tuple(target[len("ipv4:") :].split(","))
    return (target,)


def load_tls_files(
    root_ca: Path | None, client_cert: Path | None, client_key: Path | None
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """Read and check TLS files: (root CA, client key, client cert chain), PEM bytes or None.

    Every failure names the file and what is wrong with it.
    """
    pair = _pair_problem(client_cert, client_key)
    if pair is not None:
        raise RegistryError(f"TLS {pair}")
    root = read_pem(root_ca, "root CA certificate") if root_ca else None
    if root is not None and (
        b"-----BEGIN CERTIFICATE-----" not in root or b"-----END CERTIFICATE-----" not in root
    ):
        raise RegistryError(f"root CA certificate {str(root_ca)!r} is not PEM")
    cert = key = None
    if client_cert is not None and client_key is not None:
        cert = read_pem(client_cert, "client certificate")
        key = read_pem(client_key, "client key")
        check_key_matches_cert(cert, key, client_cert, client_key)
    return root, key, cert


@dataclass(frozen=True, slots=True)
class ResolvedConnection:
    """What will be dialled, and how: what ``streamer check`` prints and what error messages
    explain failures against. ``files`` are the config files read to decide it (Magma's
    control_proxy.yml and its override); ``proxied`` is Magma's local control proxy."""

    target: str
    tls: bool
    authority: str | None = None
    root_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    proxied: bool = False
    files: tuple[Path, ...] = ()

    def describe(self) -> list[str]:
        """Lines for an operator: target, mode, authority, TLS files, files read."""
        if self.proxied:
            mode = "plaintext to Magma's local control proxy (proxy_cloud_connections)"
        elif self.tls:
            mode = "TLS"
        else:
            mode = "plaintext"
        lines = [f"target: {self.target}", f"mode: {mode}"]
        if len(self.addresses) > 1:
            lines.insert(
                1,
                f"targets: {', '.join(self.addresses)} (one connection at a time; tried in a "
                "random order, the next one when the connection in use fails)",
            )
        default = "the address list" if len(self.addresses) > 1 else "the target host"
        lines.append(f"authority: {self.authority or f'(default: {default})'}")
        if self.tls:
            lines.append(f"root_ca: {self.root_ca or '(system trust store)'}")
            if self.client_cert is not None:
                lines.append(f"client_cert: {self.client_cert}")
                lines.append(f"client_key: {self.client_key}")
        if self.files:
            lines.append("read: " + ", ".join(str(f) for f in self.files))
        return lines

    def to_json(self) -> dict[str, object]:
        """The same facts as ``describe()``, for ``streamer check --json``."""
        mode = "proxied" if self.proxied else "tls" if self.tls else "plaintext"

        def path(p: Path | None) -> str | None:
            return str(p) if p is not None else None

        return {
            "target": self.target,
            "targets": list(self.addresses),
            "mode": mode,
            "authority": self.authority,
            "root_ca": path(self.root_ca),
            "client_cert": path(self.client_cert),
            "client_key": path(self.client_key),
            "files": [str(f) for f in self.files],
        }

    @property
    def addresses(self) -> tuple[str, ...]:
        """The server addresses dialled: each of an address list (``ipv4:A,B``, from
        ``[cloud] targets``), else the one target."""
        return _addresses(self.target)

    def checked_name(self) -> str:
        """The host name the server's certificate must match (authority, else target host)."""
        if self.authority:
            return self.authority
        host = self.target
        for prefix in ("dns:///", "ipv4:", "ipv6:"):
            if host.startswith(prefix):
                host = host[len(prefix) :]
        if host.startswith("["):
            return host[1 : host.find("]")] if "]" in host else host[1:]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True, slots=True)
class MagmaSettings:
    path: Path
    proxied: bool
    target: str
    authority: str
    root_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    files: tuple[Path, ...] = ()

    def connection(self) -> ResolvedConnection:
        return ResolvedConnection(
            self.target,
            not self.proxied,
            self.authority,
            self.root_ca,
            self.client_cert,
            self.client_key,
            proxied=self.proxied,
            files=self.files,
        )


def magma_settings(
    path: Path, service: str = "streamer", override: Path | None = CONTROL_PROXY_OVERRIDE
) -> MagmaSettings:
    """Where and how a Magma gateway reaches ``service``, as Magma's own client decides it.

    ``path`` (``/etc/magma/control_proxy.yml``) is read with ``override``
    (``/var/opt/magma/configs/control_proxy.yml``; absent is normal) laid over it key by key.
    Direct mode: TLS to ``cloud_address:cloud_port`` with ``rootca_cert``, ``gateway_cert`` and
    ``gateway_key``. Proxied mode (``proxy_cloud_connections`` true, or absent as in Magma):
    plaintext to ``127.0.0.1:local_port``, where Magma's control_proxy adds TLS. Both send the
    ``:authority`` ``<service>-<cloud_address>`` the cloud routes on. Keys in neither file take
    Magma's defaults (MAGMA_DEFAULTS). A relative certificate path is resolved against the
    directory of the file that set it.
    """
    cfg = load_magma_config(path, override)
    cloud_address, _ = cfg.get("cloud_address")
    if not cloud_address:
        read = " or ".join(repr(str(f)) for f in cfg.files)
        raise RegistryError(f"missing required key 'cloud_address' (in {read})")
    authority = f"{service}-{cloud_address}"
    flag, _ = cfg.get("proxy_cloud_connections")
    if flag.lower() in _YAML_TRUE:
        proxied = True
    elif flag.lower() in _YAML_FALSE:
        proxied = False
    else:
        raise RegistryError(
            f"{cfg.where('proxy_cloud_connections')}: expected true or false, got {flag!r}"
        )

    def port(key: str) -> int:
        value, _ = cfg.get(key)
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise RegistryError(f"{cfg.where(key)}: expected a port (1-65535), got {value!r}")
        return int(value)

    def file(key: str) -> Path:
        value, source = cfg.get(key)
        p = Path(value)
        return p if p.is_absolute() or source is None else source.parent / p

    if proxied:
        # Magma dials 127.0.0.1 (its service registry's control_proxy address) on local_port.
        target = f"127.0.0.1:{port('local_port')}"
        return MagmaSettings(path, True, target, authority, files=cfg.files)
    host = cloud_address.split(":")[0]  # as Magma's Go registry: a port in cloud_address is ignored
    return MagmaSettings(
        path,
        False,
        f"{host}:{port('cloud_port')}",
        authority,
        root_ca=file("rootca_cert"),
        client_cert=file("gateway_cert"),
        client_key=file("gateway_key"),
        files=cfg.files,
    )
