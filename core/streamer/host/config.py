"""``streamer.toml``: where it is, what it may contain, and what a mistake in it looks like.

Parsing is pure (``parse_config`` takes the decoded document) and strict: an unknown key, a
wrong type or an out-of-range value is a ``ConfigError`` that names the file, the dotted key
path, what was expected and what was found. A typo never silently falls back to a default.

This module must not import grpc or protobuf (``streamer check`` and ``streamer list`` use it).
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import math
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

from streamer.base.errors import StreamerError
from streamer.base.redact import redact_text
from streamer.client.connection import (
    CONTROL_PROXY_OVERRIDE,
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    is_loopback,
    targets_uri,
)

__all__ = [
    "CONFIG_ENV",
    "CONFIG_NAME",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "PLUGIN_STREAMING_KEYS",
    "CloudConfig",
    "Config",
    "ConfigError",
    "LogConfig",
    "MetricsConfig",
    "StreamSettings",
    "StreamingConfig",
    "config_from_text",
    "find_config",
    "load_config",
    "parse_config",
    "split_address",
]

CONFIG_NAME = "streamer.toml"
CONFIG_ENV = "STREAMER_CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("human", "json")

# gRPC channel args are C ints: milliseconds and bytes must fit in 2**31 - 1.
_INT32_MAX = 2**31 - 1
_MAX_RECEIVE_MB = _INT32_MAX // (1024 * 1024)  # 2047
_MAX_KEEPALIVE_S = _INT32_MAX / 1000
# Longer than this cannot be waited for (threading.Event.wait raises OverflowError).
_MAX_DURATION_S = float(threading.TIMEOUT_MAX)


class ConfigError(StreamerError):
    """A problem with the configuration file.

    ``path`` is the file, ``key`` the dotted key path (``""`` when the problem is the file as a
    whole: missing, unreadable or not valid TOML).
    """

    path: Path
    key: str

    def __init__(self, path: Path | str, key: str, message: str) -> None:
        self.path = Path(path)
        self.key = key
        self.message = message
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(redact_text(where + message))


@dataclass(frozen=True, slots=True)
class CloudConfig:
    """How to reach the cloud's Streamer service (``[cloud]``).

    Exactly one of ``target`` and ``control_proxy`` is set. With ``control_proxy`` the address,
    TLS files and authority come from Magma's ``control_proxy.yml`` with
    ``control_proxy_override`` (default ``/var/opt/magma/configs/control_proxy.yml``) laid
    over it, key by key, as Magma reads them. ``targets`` (the file's ``targets = [...]``,
    several replicas' ``IP:port``) is dialled as the one gRPC target ``ipv4:A,B`` in
    ``target``.
    """

    target: str | None = None
    targets: tuple[str, ...] = ()
    insecure: bool = False
    root_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    authority: str | None = None
    control_proxy: Path | None = None
    control_proxy_override: Path | None = None
    gateway_id: str = ""
    max_receive_message_mb: int = 64
    keepalive_time_s: float = DEFAULT_KEEPALIVE_TIME
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT
    max_streams_per_connection: int = 100

    @property
    def use_tls(self) -> bool:
        """Whether a ``target`` connection uses TLS.

        Plaintext when ``insecure = true``, or when the target is a loopback address and no
        TLS file is configured; TLS otherwise (system roots unless ``root_ca`` is set).
        Meaningless with ``control_proxy`` (``control_proxy.yml`` decides).
        """
        if self.insecure:
            return False
        if self.root_ca or self.client_cert or self.client_key:
            return True
        return not (self.target is not None and is_loopback(self.target))

    @property
    def max_receive_message_bytes(self) -> int:
        return self.max_receive_message_mb * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """The safe-sync settings of one plugin's streams: ``[streaming]``'s, with the plugin's
    own ``[plugin.<name>]`` keys of the same names laid over them.

    ``guard_max_delete_fraction``: a batch deleting more than this fraction of a stream's keys
    is held (0 = guard off); ``guard_confirmations``: further calls that must serve the same
    held snapshot before it is applied; ``max_staleness``: seconds a stream may go without an
    applied batch or a confirmed sync before ``/readyz`` calls it stale (None = never)."""

    guard_max_delete_fraction: float = 0.5
    guard_confirmations: int = 2
    max_staleness: float | None = None


PLUGIN_STREAMING_KEYS = tuple(StreamSettings.__dataclass_fields__)
"""Keys of ``[plugin.<name>]`` that the host reads (and never passes to the plugin)."""


@dataclass(frozen=True, slots=True)
class StreamingConfig:
    """Per-stream cadence and retry policy (``[streaming]``); all values in seconds, and the
    safe-sync defaults (:class:`StreamSettings`)."""

    interval: float = 20.0
    backoff_initial: float = 1.0
    backoff_multiplier: float = 1.6
    backoff_jitter: float = 0.2
    backoff_max: float = 20.0
    shutdown_timeout: float = 10.0
    guard_max_delete_fraction: float = 0.5
    guard_confirmations: int = 2
    max_staleness: float | None = None


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: ``address`` None means the metrics/health endpoint is off.
    ``remote_release``: accept ``POST /release`` (``streamer release``) although the endpoint
    listens off loopback; off by default, as anyone who reaches the port could then apply a
    held snapshot."""

    address: str | None = None
    remote_release: bool = False


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "INFO"
    format: str = "human"


def _empty_tables() -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file. ``cloud`` is None when the file has no ``[cloud]`` table (enough for
    ``streamer list``; the host calls ``require_cloud()``)."""

    path: Path
    cloud: CloudConfig | None = None
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    plugins: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    plugin_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty_tables)
    hook_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty_tables)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # [plugin.<name>] keys the host reads (PLUGIN_STREAMING_KEYS), validated, per plugin
    plugin_streaming: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty_tables)

    def stream_settings(self, name: str) -> StreamSettings:
        """Plugin ``name``'s safe-sync settings: ``[streaming]``, overridden by its table."""
        s = self.streaming
        base = {k: getattr(s, k) for k in PLUGIN_STREAMING_KEYS}
        return StreamSettings(**{**base, **self.plugin_streaming.get(name, {})})

    def plugin_table(self, name: str) -> dict[str, Any]:
        """A fresh copy of ``[plugin.<name>]`` for the plugin's factory (``{}`` when absent)."""
        return copy.deepcopy(dict(self.plugin_tables.get(name, {})))

    def hook_table(self, name: str) -> dict[str, Any]:
        """A fresh copy of ``[hook.<name>]`` (``{}`` when absent)."""
        return copy.deepcopy(dict(self.hook_tables.get(name, {})))

    def require_cloud(self) -> CloudConfig:
        if self.cloud is None:
            raise ConfigError(self.path, "cloud", "missing table: streaming needs a [cloud] table")
        return self.cloud


# --- finding the file -----------------------------------------------------------------------


def find_config(
    cli_path: str | None,
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    system_dir: Path = Path("/etc/streamer"),
) -> Path | None:
    """The configuration file to use, or None when there is none.

    Order: ``--config`` flag, ``$STREAMER_CONFIG``, ``./streamer.toml``,
    ``$XDG_CONFIG_HOME/streamer/streamer.toml`` (default ``~/.config``),
    ``/etc/streamer/streamer.toml``. A path named explicitly (flag or variable) must exist.
    """
    for explicit, origin in ((cli_path, "--config"), (env.get(CONFIG_ENV), CONFIG_ENV)):
        if explicit:
            path = Path(explicit).expanduser()
            if not path.is_file():
                what = "does not exist" if not path.exists() else "is not a file"
                raise ConfigError(path, "", f"{what} (named by {origin})")
            return path
    candidates = [(cwd or Path.cwd()) / CONFIG_NAME]
    xdg = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says relative values are to be ignored.
    if xdg and Path(xdg).is_absolute():
        config_home = Path(xdg)
    else:
        home = env.get("HOME")
        config_home = (Path(home) if home else Path.home()) / ".config"
    candidates.append(config_home / "streamer" / CONFIG_NAME)
    candidates.append(system_dir / CONFIG_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


# --- loading --------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read, decode and validate ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(path, "", "does not exist") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    except OSError as exc:
        raise ConfigError(path, "", f"cannot be read: {exc.strerror or exc}") from exc
    return config_from_text(text, path)


def config_from_text(text: str, path: Path) -> Config:
    """Decode TOML ``text`` (reported as coming from ``path``) and validate it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # 3.14+ carries lineno/colno attributes; older messages end in "(at line L, column C)".
        msg = getattr(exc, "msg", None)
        lineno, colno = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        detail = f"{msg} (at line {lineno}, column {colno})" if msg and lineno else str(exc)
        raise ConfigError(path, "", f"invalid TOML: {detail}") from exc
    return parse_config(data, path)


_TOP_KEYS = ("cloud", "streaming", "plugins", "hooks", "plugin", "hook", "metrics", "log")
_CLOUD_KEYS = tuple(CloudConfig.__dataclass_fields__)
_STREAMING_KEYS = tuple(StreamingConfig.__dataclass_fields__)
_TLS_KEYS = ("insecure", "root_ca", "client_cert", "client_key", "authority")


def parse_config(data: Mapping[str, Any], path: Path) -> Config:
    """Validate a decoded document. Pure: touches no files (relative paths in it are resolved
    against ``path``'s directory, which need not exist)."""
    v = _Validator(Path(path))
    top = v.table(data, "", _TOP_KEYS)
    plugins = v.names(top, "plugins")
    hooks = v.names(top, "hooks")
    plugin_tables, plugin_streaming = _split_plugin_tables(
        v, v.sub_tables(top, "plugin", plugins, "plugins")
    )
    return Config(
        path=Path(path),
        cloud=_cloud(v, top["cloud"]) if "cloud" in top else None,
        streaming=_streaming(v, top.get("streaming", {})),
        plugins=plugins,
        hooks=hooks,
        plugin_tables=plugin_tables,
        hook_tables=v.sub_tables(top, "hook", hooks, "hooks"),
        metrics=_metrics(v, top.get("metrics", {})),
        log=_log(v, top.get("log", {})),
        plugin_streaming=plugin_streaming,
    )


def _split_plugin_tables(
    v: _Validator, tables: Mapping[str, Mapping[str, Any]]
) -> tuple[Mapping[str, Mapping[str, Any]], Mapping[str, Mapping[str, Any]]]:
    """Take the host's keys (PLUGIN_STREAMING_KEYS) out of each ``[plugin.<name>]`` table:
    (the tables the factories get, the validated overrides)."""
    own: dict[str, Mapping[str, Any]] = {}
    host: dict[str, Mapping[str, Any]] = {}
    for name, table in tables.items():
        ours = {k: table[k] for k in PLUGIN_STREAMING_KEYS if k in table}
        if not ours:
            own[name] = table
            continue
        prefix = _join("plugin", name)
        host[name] = MappingProxyType(_stream_settings(v, ours, prefix))
        own[name] = MappingProxyType({k: x for k, x in table.items() if k not in ours})
    return MappingProxyType(own), MappingProxyType(host)


def _stream_settings(v: _Validator, t: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The safe-sync keys present in ``t`` (``[streaming]`` or a plugin table), validated."""
    out: dict[str, Any] = {}
    key = f"{prefix}.guard_max_delete_fraction"
    if "guard_max_delete_fraction" in t:
        out["guard_max_delete_fraction"] = v.fraction_or_off(t, key)
    if "guard_confirmations" in t:
        out["guard_confirmations"] = v.integer(
            t, f"{prefix}.guard_confirmations", 2, minimum=1, maximum=1000
        )
    if "max_staleness" in t:
        out["max_staleness"] = v.seconds_or_off(t, f"{prefix}.max_staleness")
    return out


def _cloud(v: _Validator, raw: object) -> CloudConfig:
    t = v.table(raw, "cloud", _CLOUD_KEYS)
    given = [k for k in ("target", "targets", "control_proxy") if k in t]
    if len(given) > 1:
        v.fail(
            f"cloud.{given[1]}",
            f"expected one of target, targets and control_proxy, got both {given[0]} and "
            f"{given[1]}",
        )
    if not given:
        v.fail(
            "cloud",
            "expected a target (host:port), targets (a list of IP:port) or a control_proxy "
            "path, got none",
        )
    if "control_proxy_override" in t and "control_proxy" not in t:
        v.fail("cloud.control_proxy_override", f"only allowed with control_proxy, got {given[0]}")
    if "control_proxy" in t:
        for key in _TLS_KEYS:
            if key in t:
                v.fail(
                    f"cloud.{key}",
                    "not allowed with control_proxy (control_proxy.yml sets it), got "
                    + _show(t[key]),
                )
    target = v.address(t, "cloud.target", allow_port_zero=False) if "target" in t else None
    targets = v.addresses(t, "cloud.targets") if "targets" in t else ()
    cloud = CloudConfig(
        target=targets_uri(targets) if targets else target,
        targets=targets,
        insecure=v.boolean(t, "cloud.insecure", False),
        root_ca=v.path(t, "cloud.root_ca"),
        client_cert=v.path(t, "cloud.client_cert"),
        client_key=v.path(t, "cloud.client_key"),
        authority=v.string(t, "cloud.authority", None, nonempty=True),
        control_proxy=v.path(t, "cloud.control_proxy"),
        control_proxy_override=(
            v.path(t, "cloud.control_proxy_override") or CONTROL_PROXY_OVERRIDE
            if "control_proxy" in t
            else None
        ),
        gateway_id=v.string(t, "cloud.gateway_id", "") or "",
        max_receive_message_mb=v.integer(
            t, "cloud.max_receive_message_mb", 64, minimum=1, maximum=_MAX_RECEIVE_MB
        ),
        keepalive_time_s=v.number(
            t, "cloud.keepalive_time_s", DEFAULT_KEEPALIVE_TIME, maximum=_MAX_KEEPALIVE_S
        ),
        keepalive_timeout_s=v.number(
            t, "cloud.keepalive_timeout_s", DEFAULT_KEEPALIVE_TIMEOUT, maximum=_MAX_KEEPALIVE_S
        ),
        max_streams_per_connection=v.integer(
            t, "cloud.max_streams_per_connection", 100, minimum=1, maximum=_INT32_MAX
        ),
    )
    if (cloud.client_cert is None) != (cloud.client_key is None):
        have, missing = (
            ("client_cert", "client_key")
            if cloud.client_key is None
            else ("client_key", "client_cert")
        )
        v.fail(f"cloud.{missing}", f"expected a path because {have} is set, got nothing")
    if cloud.insecure and (cloud.root_ca or cloud.client_cert):
        v.fail("cloud.insecure", "expected false when root_ca or client_cert is set, got true")
    if len(targets) > 1 and cloud.use_tls and cloud.authority is None:
        # One connection holds every address and checks one name for all of them; without
        # authority gRPC would check the joined list, which no certificate carries.
        v.fail(
            "cloud.authority",
            "expected the name every replica's certificate carries (TLS to several targets "
            "checks each one against that name), got nothing",
        )
    return cloud


def _streaming(v: _Validator, raw: object) -> StreamingConfig:
    t = v.table(raw, "streaming", _STREAMING_KEYS)
    interval = v.number(t, "streaming.interval", 20.0)
    initial = v.number(t, "streaming.backoff_initial", 1.0)
    multiplier = v.number(t, "streaming.backoff_multiplier", 1.6, minimum=1.0, positive=False)
    jitter = v.number(t, "streaming.backoff_jitter", 0.2, minimum=0.0, below=1.0, positive=False)
    # Defaults to the interval (a fleet spreads its reconnects over one poll period), but never
    # below backoff_initial so a sub-second test interval needs no extra setting.
    backoff_max = v.number(t, "streaming.backoff_max", max(interval, initial))
    if backoff_max < initial:
        v.fail(
            "streaming.backoff_max",
            f"expected a number >= backoff_initial ({initial!r}), got {_show(backoff_max)}",
        )
    shutdown = v.number(t, "streaming.shutdown_timeout", 10.0, minimum=0.0, positive=False)
    return StreamingConfig(
        interval,
        initial,
        multiplier,
        jitter,
        backoff_max,
        shutdown,
        **_stream_settings(v, t, "streaming"),
    )


def _metrics(v: _Validator, raw: object) -> MetricsConfig:
    t = v.table(raw, "metrics", ("address", "remote_release"))
    address = v.address(t, "metrics.address", allow_port_zero=True) if "address" in t else None
    return MetricsConfig(address, v.boolean(t, "metrics.remote_release", False))


def _log(v: _Validator, raw: object) -> LogConfig:
    t = v.table(raw, "log", ("level", "format"))
    level = v.choice(t, "log.level", "INFO", LOG_LEVELS, upper=True)
    fmt = v.choice(t, "log.format", "human", LOG_FORMATS, upper=False)
    return LogConfig(level, fmt)


# --- validation primitives ------------------------------------------------------------------


def _show(value: object) -> str:
    """``'abc' (str)``: the value and its TOML-ish type, shortened."""
    kind = {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "str",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)
    text = redact_text(repr(value))
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def split_address(address: str) -> tuple[str, int] | None:
    """``host:port`` → ``(host, port)``; IPv6 hosts in brackets (``[::1]:50051``). None when
    it is not of that form."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or len(port) > 5:
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        host = host[1:-1]
    elif ":" in host or any(c.isspace() for c in host) or "/" in host:
        return None
    return host, int(port)


class _Validator:
    """Typed getters that raise ``ConfigError`` with the key path on the first bad value."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> NoReturn:
        raise ConfigError(self.file, key, message)

    def table(self, raw: object, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            self.fail(key, f"expected a table, got {_show(raw)}")
        for name in raw:
            if name not in allowed:
                self.fail(_join(key, name), "unknown key" + _suggest(str(name), allowed))
        return raw

    def _get(self, t: Mapping[str, Any], key: str) -> Any:
        return t[key.rpartition(".")[2]]

    def _has(self, t: Mapping[str, Any], key: str) -> bool:
        return key.rpartition(".")[2] in t

    def number(
        self,
        t: Mapping[str, Any],
        key: str,
        default: float,
        *,
        minimum: float = 0.0,
        positive: bool = True,
        below: float | None = None,
        maximum: float = _MAX_DURATION_S,
    ) -> float:
        if not self._has(t, key):
            return default
        value = self._get(t, key)
        if positive:
            expected = "a positive number"
        elif below is not None:
            expected = f"a number in [{minimum:g}, {below:g})"
        else:
            expected = f"a number >= {minimum:g}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"expected {expected}, got {_show(value)}")
        if not math.isfinite(value):
            self.fail(key, f"expected {expected} (finite), got {_show(value)}")
        if (positive and value <= 0) or value < minimum or (below is not None and value >= below):
            self.fail(key, f"expected {expected}, got {_show(value)}")
        if value > maximum:
            self.fail(key, f"expected {expected} no larger than {maximum:g}, got {_show(value)}")
        return float(value)

    def integer(
        self, t: Mapping[str, Any], key: str, default: int, *, minimum: int, maximum: int
    ) -> int:
        if not self._has(t, key):
            return default
        value = self._get(t, key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer from {minimum} to {maximum}, got {_show(value)}")
        if not minimum <= value <= maximum:
            self.fail(key, f"expected an integer from {minimum} to {maximum}, got {_show(value)}")
        return value

    def fraction_or_off(self, t: Mapping[str, Any], key: str) -> float:
        """A fraction in [0, 1], or "off" / false (0.0: off)."""
        value = self._get(t, key)
        if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
            return 0.0
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.0 <= value <= 1.0  # NaN fails too
        ):
            self.fail(key, f'expected a fraction from 0 to 1 or "off", got {_show(value)}')
        return float(value)

    def seconds_or_off(self, t: Mapping[str, Any], key: str) -> float | None:
        """Positive seconds, or "off" / false / 0 (None: off)."""
        value = self._get(t, key)
        if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
            return None
        expected = 'a number of seconds >= 0 or "off"'
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            self.fail(key, f"expected {expected}, got {_show(value)}")
        if value > _MAX_DURATION_S:
            self.fail(key, f"expected {expected} no larger than {_MAX_DURATION_S:g}")
        return float(value) if value else None

    def boolean(self, t: Mapping[str, Any], key: str, default: bool) -> bool:
        if not self._has(t, key):
            return default
        value = self._get(t, key)
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_show(value)}")
        return value

    def string(
        self, t: Mapping[str, Any], key: str, default: str | None, *, nonempty: bool = False
    ) -> str | None:
        if not self._has(t, key):
            return default
        value = self._get(t, key)
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_show(value)}")
        if nonempty and not value.strip():
            self.fail(key, f"expected a non-empty string, got {_show(value)}")
        return value

    def path(self, t: Mapping[str, Any], key: str) -> Path | None:
        if not self._has(t, key):
            return None
        value = self._get(t, key)
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            self.fail(key, f"expected a file path, got {_show(value)}")
        p = Path(value)
        if value.startswith("~"):
            try:
                p = p.expanduser()
            except RuntimeError as exc:
                self.fail(key, f"expected a file path, got {_show(value)} ({exc})")
        return p if p.is_absolute() else self.file.parent / p

    def address(self, t: Mapping[str, Any], key: str, *, allow_port_zero: bool) -> str:
        value = self._get(t, key)
        low = 0 if allow_port_zero else 1
        expected = f"host:port with a port from {low} to 65535"
        if not isinstance(value, str):
            self.fail(key, f"expected {expected}, got {_show(value)}")
        parts = split_address(value)
        if parts is None or not low <= parts[1] <= 65535:
            self.fail(key, f"expected {expected}, got {_show(value)}")
        return value

    def addresses(self, t: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = self._get(t, key)
        if not isinstance(value, list) or not value:
            self.fail(key, f"expected a non-empty array of IP:port strings, got {_show(value)}")
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{key}[{i}]", f"expected an IP:port string, got {_show(item)}")
            try:
                targets_uri([item])
            except ValueError as exc:
                self.fail(f"{key}[{i}]", str(exc))
            if item in seen:
                self.fail(f"{key}[{i}]", f"expected each address once, got {item!r} again")
            seen.add(item)
        try:
            targets_uri(value)
        except ValueError as exc:
            self.fail(key, str(exc))
        return tuple(value)

    def choice(
        self,
        t: Mapping[str, Any],
        key: str,
        default: str,
        choices: tuple[str, ...],
        *,
        upper: bool,
    ) -> str:
        if not self._has(t, key):
            return default
        value = self._get(t, key)
        expected = "one of " + ", ".join(repr(c) for c in choices)
        if not isinstance(value, str):
            self.fail(key, f"expected {expected}, got {_show(value)}")
        normal = value.upper() if upper else value
        if normal not in choices:
            self.fail(key, f"expected {expected}, got {_show(value)}" + _suggest(normal, choices))
        return normal

    def names(self, top: Mapping[str, Any], key: str) -> tuple[str, ...]:
        if key not in top:
            return ()
        value = top[key]
        if not isinstance(value, list):
            self.fail(key, f"expected an array of names, got {_show(value)}")
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail(f"{key}[{i}]", f"expected a non-empty name, got {_show(item)}")
            if item in seen:
                self.fail(f"{key}[{i}]", f"expected each name once, got {item!r} again")
            seen.add(item)
        return tuple(value)

    def sub_tables(
        self, top: Mapping[str, Any], key: str, enabled: tuple[str, ...], list_key: str
    ) -> Mapping[str, Mapping[str, Any]]:
        if key not in top:
            return MappingProxyType({})
        raw = top[key]
        if not isinstance(raw, Mapping):
            self.fail(key, f"expected a table of [{key}.<name>] tables, got {_show(raw)}")
        out: dict[str, Mapping[str, Any]] = {}
        for name, table in raw.items():
            sub = _join(key, name)
            if name not in enabled:
                self.fail(
                    sub,
                    f"table [{sub}] but {name!r} is not enabled in {list_key} = "
                    f"{list(enabled)!r}" + _typo_hint(key, name, enabled, list_key, raw),
                )
            if not isinstance(table, Mapping):
                self.fail(sub, f"expected a table, got {_show(table)}")
            out[name] = MappingProxyType(copy.deepcopy(dict(table)))
        return MappingProxyType(out)


def _join(prefix: str, name: object) -> str:
    text = str(name)
    # Quote keys that would make the dotted path ambiguous, as TOML itself would.
    if not text or not all(c.isalnum() or c in "_-" for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{prefix}.{text}" if prefix else text


def _suggest(word: str, options: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _typo_hint(
    key: str, name: str, enabled: tuple[str, ...], list_key: str, tables: Mapping[str, Any]
) -> str:
    """Which of the two spellings to fix, when a table's name is close to an enabled name.

    Either the table or the list entry is misspelt; when the close enabled name has no table of
    its own, both readings are possible and both fixes are named, the list's first.
    """
    close = difflib.get_close_matches(name, enabled, n=1)
    if not close:
        return ""
    other = close[0]
    if other in tables:
        return f"; [{_join(key, other)}] exists too: remove or merge this one"
    fixed = [name if n == other else n for n in enabled]
    return (
        f"; if {other!r} is misspelt, write {list_key} = {fixed!r}; "
        f"if this table is, rename it [{_join(key, other)}]"
    )
