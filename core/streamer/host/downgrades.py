"""What ``streamer check`` warns about: every security downgrade visible in the config.

Each warning names the key that causes it. None of these stops the host (each is an explicit,
documented opt-in, or a permission the operator may have chosen); they are listed so that no
downgrade goes unnoticed. Pure apart from ``stat`` calls; never imports gRPC.

- ``[cloud] insecure = true`` with a target that is not loopback: plaintext to the cloud.
- TLS verification turned off in a plugin table (``verify = false``, ``tls_verify = false``,
  ``ssl_cert_reqs = "none"``, or ``ssl_cert_reqs=none`` in a URL).
- A plaintext ``redis://`` URL (any plugin key) to a host that is not loopback.
- A mirror directory or database (plugin keys ``dir``, ``directory``, ``path``, ``database``,
  ``db``, ``file``) that other users can read: any permission bit for "others", or for the
  group unless the table sets ``file_mode`` (sharing with a group on purpose).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from streamer.client.connection import is_loopback
from streamer.host.config import Config

__all__ = ["downgrades"]

_PATH_KEYS = ("dir", "directory", "path", "database", "db", "file")
_VERIFY_KEYS = ("verify", "tls_verify", "ssl_verify", "verify_tls", "verify_ssl")
_NO_VERIFY = ("none", "optional", "cert_none", "cert_optional")


def downgrades(config: Config) -> list[str]:
    """One line per downgrade: ``"<key path>: <what is weaker and why it matters>"``."""
    out: list[str] = []
    cloud = config.cloud
    target = None if cloud is None or not cloud.insecure else cloud.target
    if target is not None and not is_loopback(target):
        out.append(
            f"cloud.insecure: plaintext to non-loopback cloud {target!r}: anyone on "
            "the path can read the streams and change what this gateway applies"
        )
    for name, table in sorted(config.plugin_tables.items()):
        out.extend(_table(f"plugin.{name}", table))
    return out


def _table(prefix: str, table: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in table.items():
        where = f"{prefix}.{key}"
        lowered = key.lower()
        if isinstance(value, str):
            out.extend(_url(where, value))
        if lowered in _VERIFY_KEYS and value is False:
            out.append(f"{where} = false: TLS verification is off; any server is trusted")
        if lowered == "ssl_cert_reqs" and isinstance(value, str) and value.lower() in _NO_VERIFY:
            out.append(f"{where} = {value!r}: TLS verification is off; any server is trusted")
        if lowered in _PATH_KEYS and isinstance(value, str) and value:
            out.extend(_exposed(where, value, shared="file_mode" in table))
    return out


def _url(where: str, value: str) -> list[str]:
    if "://" not in value:
        return []
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return []
    out = []
    if parts.scheme == "redis" and host and not is_loopback(f"[{host}]:0" if ":" in host else host):
        out.append(
            f"{where}: plaintext redis:// to non-loopback host {host!r}: the mirrored data and "
            "the password cross the network unencrypted (use rediss://)"
        )
    reqs = parse_qs(parts.query).get("ssl_cert_reqs", [])
    if any(r.lower() in _NO_VERIFY for r in reqs):
        out.append(f"{where}: ssl_cert_reqs={reqs[0]}: TLS verification is off")
    return out


def _exposed(where: str, value: str, *, shared: bool) -> list[str]:
    path = os.path.expanduser(value)
    try:
        st = os.stat(path)
    except OSError:
        return []  # not there yet: the plugin creates it private
    mode = stat.S_IMODE(st.st_mode)
    others = mode & 0o007
    group = mode & 0o070
    if not others and (not group or shared):
        return []
    who = "other users" if others else "its group"
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
    return [
        f"{where}: {kind} {path!r} is readable by {who} (mode {mode:04o}); the mirrored data "
        f"should be private (chmod {'0700' if kind == 'directory' else '0600'}"
        f"{', or set file_mode to share with a group' if not others else ''})"
    ]
