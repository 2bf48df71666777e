"""``streamer.toml``: where it is, what it may contain, and what a mistake in it looks like.

The file's shape is declared once, as typed schemas (:class:`ConfigFile` and its sections),
validated by the same engine as plugin tables (:mod:`streamer.host.schema`): an unknown key, a
wrong type, an out-of-range or non-finite value is a problem that names the file, the dotted
key path, what was expected and what was found, and *every* problem of the file is reported at
once (``ConfigError.problems``). A typo never silently falls back to a default. Defaults come
from :mod:`streamer.client.defaults`, the client's own.

Parsing is pure (``parse_config`` takes the decoded document). This module must not import
grpc or protobuf (``streamer check`` and ``streamer list`` use it).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import ipaddress
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

from streamer.base.errors import StreamerError
from streamer.base.redact import redact_text
from streamer.client.connection import (
    CONTROL_PROXY_OVERRIDE,
    ResolvedConnection,
    resolve_target,
    targets_uri,
)
from streamer.client.defaults import (
    BACKOFF_INITIAL,
    BACKOFF_JITTER,
    BACKOFF_MULTIPLIER,
    GUARD_CONFIRMATIONS,
    GUARD_MAX_DELETE_FRACTION,
    KEEPALIVE_TIME,
    KEEPALIVE_TIMEOUT,
    MAX_RECEIVE_MESSAGE_MB,
    MAX_STREAMS_PER_CHANNEL,
    SHUTDOWN_TIMEOUT,
    STREAMING_INTERVAL,
)
from streamer.host.schema import (
    UNIQUE,
    Before,
    ConfigProblems,
    Doc,
    FieldProblem,
    FrozenSchema,
    Names,
    Rule,
    show_value,
    validate,
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
    "ConfigFile",
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
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["human", "json"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)

# gRPC channel args are C ints: milliseconds and bytes must fit in 2**31 - 1.
_INT32_MAX = 2**31 - 1
_MAX_RECEIVE_MB = _INT32_MAX // (1024 * 1024)  # 2047
_MAX_KEEPALIVE_S = _INT32_MAX / 1000
# Longer than this cannot be waited for (threading.Event.wait raises OverflowError).
_MAX_DURATION_S = float(threading.TIMEOUT_MAX)


class ConfigError(StreamerError):
    """Problems with the configuration file: every one found, in ``problems``.

    ``path`` is the file; ``key`` and ``message`` are the first problem's (``key`` is ``""``
    when the problem is the file as a whole: missing, unreadable or not valid TOML).
    ``plugins`` and ``plugin_tables`` are what could be read of the enabled listener plugins
    and their tables, so that ``streamer check`` can list their problems with the file's.
    """

    path: Path
    key: str

    def __init__(
        self,
        path: Path | str,
        key: str,
        message: str,
        *,
        problems: Sequence[FieldProblem] = (),
        plugins: tuple[str, ...] = (),
        plugin_tables: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.problems = tuple(problems) or (FieldProblem(key, message),)
        self.key = self.problems[0].key
        self.message = self.problems[0].message
        self.plugins = plugins
        self.plugin_tables: Mapping[str, Mapping[str, Any]] = plugin_tables or {}
        if len(self.problems) == 1:
            text = f"{path}: {self.problems[0]}"
        else:
            text = f"{path}: {len(self.problems)} problems:\n" + "\n".join(
                f"  {i}. {p}" for i, p in enumerate(self.problems, 1)
            )
        super().__init__(redact_text(text))


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


def _address(low: int) -> Rule:
    def ok(value: str | None) -> bool:
        parts = split_address(value) if value is not None else ("", low)
        return parts is not None and low <= parts[1] <= 65535

    return Rule(f"host:port with a port from {low} to 65535", ok)


Seconds = Annotated[float, Meta(gt=0, le=_MAX_DURATION_S)]
_TLS_KEYS = ("insecure", "root_ca", "client_cert", "client_key", "authority")


class CloudConfig(FrozenSchema, frozen=True):
    """How to reach the cloud's Streamer service (``[cloud]``).

    Exactly one of ``target``, ``targets`` and ``control_proxy`` is set. With ``control_proxy``
    the address, TLS files and authority come from Magma's ``control_proxy.yml`` with
    ``control_proxy_override`` (default ``/var/opt/magma/configs/control_proxy.yml``) laid
    over it, key by key, as Magma reads them. ``targets`` (the file's ``targets = [...]``,
    several replicas' ``IP:port``) is dialled as the one gRPC target ``ipv4:A,B`` in
    ``target``.
    """

    target: Annotated[str | None, Doc("host:port of the cloud's Streamer service"), _address(1)] = (
        None
    )
    targets: Annotated[
        tuple[str, ...],
        Doc("several replicas' IP:port, instead of target (one at a time, failing over)"),
        Rule("a non-empty array of IP:port strings", bool),
        UNIQUE,
    ] = ()
    insecure: Annotated[bool, Doc("allow plaintext to a non-loopback target")] = False
    root_ca: Annotated[Path | None, Doc("CA file to verify the server (default: system roots)")] = (
        None
    )
    client_cert: Annotated[Path | None, Doc("client certificate file (with client_key)")] = None
    client_key: Annotated[Path | None, Doc("client key file (with client_cert)")] = None
    authority: Annotated[str | None, Doc(":authority and TLS name to send")] = None
    control_proxy: Annotated[Path | None, Doc("Magma's control_proxy.yml, instead of target")] = (
        None
    )
    control_proxy_override: Annotated[
        Path | None, Doc("file laid over control_proxy.yml key by key")
    ] = None
    gateway_id: Annotated[str, Doc("gatewayId sent in each request")] = ""
    max_receive_message_mb: Annotated[
        int, Doc("largest batch accepted, MiB"), Meta(ge=1, le=_MAX_RECEIVE_MB)
    ] = MAX_RECEIVE_MESSAGE_MB
    keepalive_time_s: Annotated[
        float, Doc("seconds between keepalive pings"), Meta(gt=0, le=_MAX_KEEPALIVE_S)
    ] = KEEPALIVE_TIME
    keepalive_timeout_s: Annotated[
        float, Doc("seconds to wait for a ping's answer"), Meta(gt=0, le=_MAX_KEEPALIVE_S)
    ] = KEEPALIVE_TIMEOUT
    max_streams_per_connection: Annotated[
        int, Doc("streams sharing one HTTP/2 connection"), Meta(ge=1, le=_INT32_MAX)
    ] = MAX_STREAMS_PER_CHANNEL

    def __post_init__(self) -> None:
        if self.targets and self.target is None:
            target = _list_target(self.targets)  # check() says what is wrong with a bad list
            if target is not None:
                msgspec.structs.force_setattr(self, "target", target)
        if self.control_proxy is not None and self.control_proxy_override is None:
            msgspec.structs.force_setattr(self, "control_proxy_override", CONTROL_PROXY_OVERRIDE)

    def _given(self) -> list[str]:
        """Which of target, targets and control_proxy the file sets."""
        listed = self.targets and self.target in (None, _list_target(self.targets))
        target = self.target is not None and not listed
        flags = (target, bool(self.targets), self.control_proxy is not None)
        names = ("target", "targets", "control_proxy")
        return [k for k, on in zip(names, flags, strict=True) if on]

    def check(self) -> Iterator[tuple[str, str]]:
        given = self._given()
        if len(given) > 1:
            yield (
                given[1],
                f"expected one of target, targets and control_proxy, got both {given[0]} and "
                f"{given[1]}",
            )
        if not given:
            yield (
                "",
                "expected a target (host:port), targets (a list of IP:port) or a control_proxy "
                "path, got none",
            )
        if self.control_proxy is None and self.control_proxy_override is not None and given:
            yield "control_proxy_override", f"only allowed with control_proxy, got {given[0]}"
        if self.targets:
            yield from _target_problems(self.targets)
        if self.control_proxy is not None:
            for key in _TLS_KEYS:
                value = getattr(self, key)
                if value not in (None, False):
                    yield (
                        key,
                        "not allowed with control_proxy (control_proxy.yml sets it), got "
                        + show_value(str(value) if isinstance(value, Path) else value),
                    )
        elif len(given) == 1 and self.target is not None:
            found = self.connection()
            if isinstance(found, tuple):
                yield from ((p.key, p.message) for p in found)

    def connection(self) -> ResolvedConnection | tuple[Any, ...]:
        """What ``target`` resolves to under the connection rules
        (:func:`streamer.client.connection.resolve_target`), or the rules it breaks."""
        return resolve_target(
            self.target or "",
            insecure=self.insecure,
            root_ca=self.root_ca,
            client_cert=self.client_cert,
            client_key=self.client_key,
            authority=self.authority,
        )

    @property
    def use_tls(self) -> bool:
        """Whether a ``target`` connection uses TLS.

        Plaintext when ``insecure = true``, or when the target is a loopback address and no
        TLS file is configured; TLS otherwise (system roots unless ``root_ca`` is set).
        Meaningless with ``control_proxy`` (``control_proxy.yml`` decides).
        """
        found = self.connection()
        return found.tls if isinstance(found, ResolvedConnection) else not self.insecure

    @property
    def max_receive_message_bytes(self) -> int:
        return self.max_receive_message_mb * 1024 * 1024

    def resolved(self, base: Path) -> CloudConfig:
        """Relative file paths made relative to ``base`` (the config file's directory)."""
        changes = {
            key: base / value
            for key in (
                "root_ca",
                "client_cert",
                "client_key",
                "control_proxy",
                "control_proxy_override",
            )
            if isinstance(value := getattr(self, key), Path) and not value.is_absolute()
        }
        return msgspec.structs.replace(self, **changes) if changes else self


def _list_target(targets: tuple[str, ...]) -> str | None:
    try:
        return targets_uri(targets)
    except ValueError:
        return None


def _target_problems(targets: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """Each unusable address of ``targets``, else the list's own problem (mixed families)."""
    bad = False
    for i, address in enumerate(targets):
        try:
            targets_uri([address])
        except ValueError as exc:
            bad = True
            yield f"targets[{i}]", str(exc)
    if not bad and _list_target(targets) is None:
        try:
            targets_uri(targets)
        except ValueError as exc:
            yield "targets", str(exc)


def _is_off(value: object) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "off")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_FRACTION_OR_OFF = Rule(
    'a fraction from 0 to 1 or "off"', lambda v: _is_off(v) or (_number(v) and 0 <= v <= 1)
)
_SECONDS_OR_OFF = Rule(
    'a number of seconds >= 0 or "off"',
    lambda v: _is_off(v) or (_number(v) and 0 <= v <= _MAX_DURATION_S),
)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """The safe-sync settings of one plugin's streams: ``[streaming]``'s, with the plugin's
    own ``[plugin.<name>]`` keys of the same names laid over them.

    ``guard_max_delete_fraction``: a batch deleting more than this fraction of a stream's keys
    is held (0 = guard off); ``guard_confirmations``: further calls that must serve the same
    held snapshot before it is applied; ``max_staleness``: seconds a stream may go without an
    applied batch or a confirmed sync before ``/readyz`` calls it stale (None = never)."""

    guard_max_delete_fraction: float = GUARD_MAX_DELETE_FRACTION
    guard_confirmations: int = GUARD_CONFIRMATIONS
    max_staleness: float | None = None


PLUGIN_STREAMING_KEYS = tuple(StreamSettings.__dataclass_fields__)
"""Keys of ``[plugin.<name>]`` that the host reads (and never passes to the plugin)."""


class StreamingConfig(FrozenSchema, frozen=True):
    """Per-stream cadence and retry policy (``[streaming]``); all values in seconds, and the
    safe-sync defaults (:class:`StreamSettings`; "off" / false is read as 0.0 for the guard
    and None for staleness)."""

    interval: Annotated[Seconds, Doc("wait before a new call after a call ends")] = (
        STREAMING_INTERVAL
    )
    backoff_initial: Annotated[Seconds, Doc("first retry delay after a failure")] = BACKOFF_INITIAL
    backoff_multiplier: Annotated[
        float, Doc("growth of the retry delay"), Meta(ge=1, le=_MAX_DURATION_S)
    ] = BACKOFF_MULTIPLIER
    backoff_jitter: Annotated[float, Doc("random spread of each delay"), Meta(ge=0, lt=1)] = (
        BACKOFF_JITTER
    )
    # None: the interval (a fleet spreads its reconnects over one poll period), but never
    # below backoff_initial so a sub-second test interval needs no extra setting.
    backoff_max: Annotated[Seconds | None, Doc("cap of the retry delay (default: interval)")] = None
    shutdown_timeout: Annotated[
        float, Doc("wait for running updates at shutdown"), Meta(ge=0, le=_MAX_DURATION_S)
    ] = SHUTDOWN_TIMEOUT
    guard_max_delete_fraction: Annotated[
        float | bool | str,
        Doc('hold a batch deleting more than this fraction of a stream (0, "off": never)'),
        _FRACTION_OR_OFF,
    ] = GUARD_MAX_DELETE_FRACTION
    guard_confirmations: Annotated[
        int,
        Doc("further calls that must serve a held snapshot before it is applied"),
        Rule("an integer from 1 to 1000", lambda v: 1 <= v <= 1000),
    ] = GUARD_CONFIRMATIONS
    max_staleness: Annotated[
        float | bool | str | None,
        Doc('seconds without a confirmed sync before /readyz says stale (0, "off": never)'),
        _SECONDS_OR_OFF,
    ] = None

    def __post_init__(self) -> None:
        if self.backoff_max is None:
            msgspec.structs.force_setattr(
                self, "backoff_max", max(self.interval, self.backoff_initial)
            )
        guard = self.guard_max_delete_fraction
        if _is_off(guard):
            msgspec.structs.force_setattr(self, "guard_max_delete_fraction", 0.0)
        elif isinstance(guard, (int, float)):
            msgspec.structs.force_setattr(self, "guard_max_delete_fraction", float(guard))
        stale = self.max_staleness
        if _is_off(stale) or stale == 0:
            msgspec.structs.force_setattr(self, "max_staleness", None)
        elif isinstance(stale, (int, float)):
            msgspec.structs.force_setattr(self, "max_staleness", float(stale))

    def settings(self) -> StreamSettings:
        """The safe-sync settings, typed."""
        fraction, stale = self.guard_max_delete_fraction, self.max_staleness
        assert isinstance(fraction, float) and (stale is None or isinstance(stale, float))
        return StreamSettings(fraction, self.guard_confirmations, stale)

    @property
    def max_backoff(self) -> float:
        """``backoff_max``, always set after construction."""
        assert self.backoff_max is not None
        return self.backoff_max

    def check(self) -> Iterator[tuple[str, str]]:
        if self.max_backoff < self.backoff_initial:
            yield (
                "backoff_max",
                f"expected a number >= backoff_initial ({self.backoff_initial!r}), "
                f"got {show_value(self.backoff_max)}",
            )


class MetricsConfig(FrozenSchema, frozen=True):
    """``[metrics]``: ``address`` None means the metrics/health endpoint is off."""

    address: Annotated[
        str | None, Doc("host:port of /metrics, /healthz, /status (port 0: any)"), _address(0)
    ] = None
    remote_release: Annotated[
        bool, Doc("serve POST /release (streamer release) although address is not loopback")
    ] = False


class LogConfig(FrozenSchema, frozen=True):
    """``[log]``."""

    level: Annotated[LogLevel, Doc("least severe level logged"), Before(str.upper)] = "INFO"
    format: Annotated[LogFormat, Doc("human lines or one JSON object per line")] = "human"


_NAMES_DOC = "names of the {} to enable (entry points in {})"


class ConfigFile(FrozenSchema, frozen=True, kw_only=True):
    """The whole ``streamer.toml``. Tables ``[plugin.NAME]`` / ``[observer.NAME]`` are each
    plugin's own, validated by the plugin's schema."""

    cloud: Annotated[CloudConfig | None, Doc("how to reach the cloud")] = None
    streaming: Annotated[StreamingConfig, Doc("cadence and retries")] = msgspec.field(
        default_factory=StreamingConfig
    )
    plugins: Annotated[Names, Doc(_NAMES_DOC.format("listener plugins", "streamer.listeners"))] = ()
    observers: Annotated[
        Names, Doc(_NAMES_DOC.format("observers", "streamer.observers / streamer.hooks"))
    ] = ()
    hooks: Annotated[Names, Doc("deprecated spelling of observers")] = ()
    plugin: Annotated[dict[str, Any], Doc("[plugin.NAME]: each listener plugin's table")] = (
        msgspec.field(default_factory=dict)
    )
    observer: Annotated[dict[str, Any], Doc("[observer.NAME]: each observer's table")] = (
        msgspec.field(default_factory=dict)
    )
    hook: Annotated[dict[str, Any], Doc("deprecated spelling of observer")] = msgspec.field(
        default_factory=dict
    )
    metrics: Annotated[MetricsConfig, Doc("the metrics/health endpoint")] = msgspec.field(
        default_factory=MetricsConfig
    )
    log: Annotated[LogConfig, Doc("logging")] = msgspec.field(default_factory=LogConfig)


def _both_spellings(
    observers: object, hooks: object, observer: object, hook: object
) -> list[tuple[str, str]]:
    out = []
    if observers and hooks:
        out.append(
            (
                "hooks",
                "expected observers or its deprecated spelling hooks, got both; "
                "move the names to observers",
            )
        )
    if observer and hook:
        out.append(
            (
                "hook",
                "expected [observer.NAME] tables or their deprecated spelling "
                "[hook.NAME], got both; rename the [hook.NAME] tables",
            )
        )
    return out


def _empty_tables() -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file, validated. ``cloud`` is None when the file has no ``[cloud]`` table
    (enough for ``streamer list``; the host calls ``require_cloud()``). ``deprecations`` are
    warnings for spellings still accepted (``hooks``), shown by ``check`` and at start."""

    path: Path
    cloud: CloudConfig | None = None
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    plugins: tuple[str, ...] = ()
    observers: tuple[str, ...] = ()
    plugin_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty_tables)
    observer_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty_tables)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    deprecations: tuple[str, ...] = ()
    # [plugin.<name>] keys the host reads (PLUGIN_STREAMING_KEYS), validated, per plugin
    plugin_streaming: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty_tables)

    def stream_settings(self, name: str) -> StreamSettings:
        """Plugin ``name``'s safe-sync settings: ``[streaming]``, overridden by its table."""
        base = self.streaming.settings()
        overrides = self.plugin_streaming.get(name)
        return dataclasses.replace(base, **overrides) if overrides else base

    @property
    def hooks(self) -> tuple[str, ...]:
        """Deprecated name of ``observers``."""
        return self.observers

    def plugin_table(self, name: str) -> dict[str, Any]:
        """A fresh copy of ``[plugin.<name>]`` for the plugin's factory (``{}`` when absent)."""
        return copy.deepcopy(dict(self.plugin_tables.get(name, {})))

    def observer_table(self, name: str) -> dict[str, Any]:
        """A fresh copy of ``[observer.<name>]`` (``{}`` when absent)."""
        return copy.deepcopy(dict(self.observer_tables.get(name, {})))

    hook_table = observer_table

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


def parse_config(data: Mapping[str, Any], path: Path) -> Config:
    """Validate a decoded document. Pure: touches no files (relative paths in it are resolved
    against ``path``'s directory, which need not exist). ``ConfigError`` lists every problem."""
    path = Path(path)
    problems: list[FieldProblem] = []
    doc: ConfigFile | None = None
    try:
        doc = validate(ConfigFile, data)
    except ConfigProblems as exc:
        problems += exc.problems
    raw: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
    # Checked on the raw document, so that it is reported whatever else is wrong.
    spellings = [raw.get(k) for k in ("observers", "hooks", "observer", "hook")]
    problems += (FieldProblem(k, m) for k, m in _both_spellings(*spellings))
    plugins = _raw_names(raw.get("plugins"))
    names_key = "hooks" if "hooks" in raw and "observers" not in raw else "observers"
    observers = _raw_names(raw.get(names_key))
    plugin_tables, plugin_streaming = _split_plugin_tables(
        _sub_tables(raw, "plugin", plugins, "plugins", problems), problems
    )
    table_key = "hook" if "hook" in raw and "observer" not in raw else "observer"
    observer_tables = _sub_tables(raw, table_key, observers, names_key, problems)
    if problems or doc is None:
        raise ConfigError(
            path, "", "", problems=problems, plugins=plugins, plugin_tables=plugin_tables
        )
    deprecations = []
    if doc.hooks:
        deprecations.append(
            f"{path}: hooks: deprecated key; write observers = {list(doc.hooks)!r} instead"
        )
    if doc.hook:
        names = ", ".join(f"[hook.{n}]" for n in doc.hook)
        deprecations.append(f"{path}: hook: deprecated tables {names}; rename them [observer.NAME]")
    return Config(
        path=path,
        cloud=doc.cloud.resolved(path.parent) if doc.cloud is not None else None,
        streaming=doc.streaming,
        plugins=plugins,
        observers=observers,
        plugin_tables=plugin_tables,
        observer_tables=observer_tables,
        metrics=doc.metrics,
        log=doc.log,
        deprecations=tuple(deprecations),
        plugin_streaming=plugin_streaming,
    )


def _split_plugin_tables(
    tables: Mapping[str, Mapping[str, Any]], problems: list[FieldProblem]
) -> tuple[Mapping[str, Mapping[str, Any]], Mapping[str, Mapping[str, Any]]]:
    """Take the host's keys (PLUGIN_STREAMING_KEYS) out of each ``[plugin.<name>]`` table:
    (the tables the factories get, the overrides, validated as the ``[streaming]`` keys of
    the same names are)."""
    own: dict[str, Mapping[str, Any]] = {}
    host: dict[str, Mapping[str, Any]] = {}
    for name, table in tables.items():
        ours = {k: table[k] for k in PLUGIN_STREAMING_KEYS if k in table}
        if not ours:
            own[name] = table
            continue
        own[name] = MappingProxyType({k: x for k, x in table.items() if k not in ours})
        try:
            read = validate(StreamingConfig, ours, where=_join("plugin", name)).settings()
        except ConfigProblems as exc:
            problems += exc.problems
            continue
        host[name] = MappingProxyType({k: getattr(read, k) for k in ours})
    return MappingProxyType(own), MappingProxyType(host)


def _raw_names(value: object) -> tuple[str, ...]:
    """The usable names of a ``plugins`` / ``observers`` value, whatever else is wrong with it
    (its problems are the schema's to report)."""
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(v for v in value if isinstance(v, str) and v.strip()))


def _sub_tables(
    top: Mapping[str, Any],
    key: str,
    enabled: tuple[str, ...],
    list_key: str,
    problems: list[FieldProblem],
) -> Mapping[str, Mapping[str, Any]]:
    """``[key.<name>]`` tables of enabled names; a problem for every other one."""
    raw = top.get(key)
    if not isinstance(raw, Mapping):
        return MappingProxyType({})  # absent, or the schema reports it
    out: dict[str, Mapping[str, Any]] = {}
    for name, table in raw.items():
        sub = _join(key, name)
        if name not in enabled:
            problems.append(
                FieldProblem(
                    sub,
                    f"table [{sub}] but {name!r} is not enabled in {list_key} = "
                    f"{list(enabled)!r}" + _typo_hint(key, name, enabled, list_key, raw),
                )
            )
        elif not isinstance(table, Mapping):
            problems.append(FieldProblem(sub, f"expected a table, got {show_value(table)}"))
        else:
            out[name] = MappingProxyType(copy.deepcopy(dict(table)))
    return MappingProxyType(out)


def _join(prefix: str, name: object) -> str:
    text = str(name)
    # Quote keys that would make the dotted path ambiguous, as TOML itself would.
    if not text or not all(c.isalnum() or c in "_-" for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{prefix}.{text}" if prefix else text


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
