"""streamer.toml: parsing, validation messages, search order, and a fuzz test."""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.client.connection import is_loopback

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib
from streamer.host.config import (
    CloudConfig,
    Config,
    ConfigError,
    ConfigFile,
    LogConfig,
    MetricsConfig,
    StreamingConfig,
    StreamSettings,
    config_from_text,
    find_config,
    load_config,
    parse_config,
    split_address,
)

P = Path("streamer.toml")


def cfg(text: str, path: Path = P) -> Config:
    return config_from_text(textwrap.dedent(text), path)


def error(text: str, path: Path = P) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        cfg(text, path)
    return info.value


# --- happy paths ------------------------------------------------------------------------------


def test_empty_file_gives_defaults() -> None:
    config = cfg("")
    assert config.cloud is None
    assert config.streaming == StreamingConfig()
    assert config.streaming.backoff_max == config.streaming.interval == 20.0
    assert config.plugins == () and config.hooks == ()
    assert config.metrics.address is None
    assert (config.log.level, config.log.format) == ("INFO", "human")
    with pytest.raises(ConfigError, match=r"streamer.toml: cloud: missing table"):
        config.require_cloud()


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "streamer.toml"
    config = cfg(
        """
        plugins = ["files", "redis"]
        hooks = ["prometheus"]

        [cloud]
        target = "cloud.example.com:443"
        root_ca = "certs/ca.pem"
        client_cert = "/abs/gw.crt"
        client_key = "certs/gw.key"
        authority = "streamer-cloud.example.com"
        gateway_id = "gw1"
        max_receive_message_mb = 128
        keepalive_time_s = 60
        keepalive_timeout_s = 5.5
        max_streams_per_connection = 50

        [streaming]
        interval = 30
        backoff_initial = 0.5
        backoff_multiplier = 2
        backoff_jitter = 0
        backoff_max = 15
        shutdown_timeout = 0

        [plugin.files]
        dir = "/var/lib/streamer"
        nested = { a = [1, 2] }

        [hook.prometheus]

        [metrics]
        address = "127.0.0.1:9464"

        [log]
        level = "debug"
        format = "json"
        """,
        path,
    )
    cloud = config.require_cloud()
    assert cloud == CloudConfig(
        target="cloud.example.com:443",
        root_ca=path.parent / "certs/ca.pem",
        client_cert=Path("/abs/gw.crt"),
        client_key=path.parent / "certs/gw.key",
        authority="streamer-cloud.example.com",
        gateway_id="gw1",
        max_receive_message_mb=128,
        keepalive_time_s=60.0,
        keepalive_timeout_s=5.5,
        max_streams_per_connection=50,
    )
    assert cloud.use_tls and cloud.max_receive_message_bytes == 128 * 1024 * 1024
    assert config.streaming == StreamingConfig(30.0, 0.5, 2.0, 0.0, 15.0, 0.0)
    assert isinstance(config.streaming.interval, float)
    assert config.plugins == ("files", "redis") and config.hooks == ("prometheus",)
    assert config.plugin_table("files") == {"dir": "/var/lib/streamer", "nested": {"a": [1, 2]}}
    assert config.plugin_table("redis") == {}
    assert config.hook_table("prometheus") == {}
    assert config.metrics.address == "127.0.0.1:9464"
    assert config.log.level == "DEBUG" and config.log.format == "json"


def test_plugin_table_is_a_fresh_dict_each_time() -> None:
    config = cfg('plugins = ["f"]\n[plugin.f]\nx = { y = 1 }\n')
    table = config.plugin_table("f")
    table["x"]["y"] = 2
    assert config.plugin_table("f") == {"x": {"y": 1}}
    assert type(table) is dict


def test_control_proxy() -> None:
    cloud = cfg('[cloud]\ncontrol_proxy = "/etc/magma/control_proxy.yml"\n').require_cloud()
    assert cloud.control_proxy == Path("/etc/magma/control_proxy.yml") and cloud.target is None
    # Magma's override file is laid over it by default, as on a real gateway.
    assert cloud.control_proxy_override == Path("/var/opt/magma/configs/control_proxy.yml")
    cloud = cfg(
        '[cloud]\ncontrol_proxy = "/etc/magma/control_proxy.yml"\n'
        'control_proxy_override = "/srv/override.yml"\n'
    ).require_cloud()
    assert cloud.control_proxy_override == Path("/srv/override.yml")
    assert cfg("[cloud]\ntarget = 'h:1'\n").require_cloud().control_proxy_override is None


def test_targets_become_one_address_list_target() -> None:
    cloud = cfg(
        '[cloud]\ntargets = ["10.0.0.1:7443", "10.0.0.2:7443"]\nauthority = "streamer.example"\n'
    ).require_cloud()
    assert cloud.targets == ("10.0.0.1:7443", "10.0.0.2:7443")
    assert cloud.target == "ipv4:10.0.0.1:7443,10.0.0.2:7443"
    assert cloud.use_tls  # not loopback, nothing says otherwise
    v6 = cfg('[cloud]\ntargets = ["[::1]:1", "[::1]:2"]\n').require_cloud()
    assert v6.target == "ipv6:[::1]:1,[::1]:2" and not v6.use_tls  # every address is loopback
    # One loopback address among remote ones does not make the list loopback.
    mixed = cfg('[cloud]\ntargets = ["127.0.0.1:1", "10.0.0.2:2"]\ninsecure = true\n')
    assert not is_loopback(mixed.require_cloud().target or "")
    # A single address is allowed, and its own IP is the name checked (no authority needed).
    one = cfg('[cloud]\ntargets = ["10.0.0.1:7443"]\n').require_cloud()
    assert one.target == "ipv4:10.0.0.1:7443" and one.use_tls


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("targets = ['10.0.0.1:1']\ntarget = 'h:1'", "cloud.targets", "got both target and"),
        ("targets = ['10.0.0.1:1']\ncontrol_proxy = 'c.yml'", "cloud.control_proxy", "both"),
        ("targets = []", "cloud.targets", "non-empty array"),
        ("targets = '10.0.0.1:1'", "cloud.targets", "array of IP:port"),
        ("targets = [1]", "cloud.targets[0]", "got 1 (integer)"),
        ("targets = ['10.0.0.1:1', 'cloud.example:1']", "cloud.targets[1]", "IP literals"),
        ("targets = ['10.0.0.1:0']", "cloud.targets[0]", "from 1 to 65535"),
        ("targets = ['::1:80']", "cloud.targets[0]", "IPv6 in brackets"),
        ("targets = ['10.0.0.1:1', '10.0.0.1:1']", "cloud.targets[1]", "once"),
        ("targets = ['10.0.0.1:1', '[::1]:1']", "cloud.targets", "one family"),
        # TLS to several replicas: one name is checked for all of them, so it must be given.
        ("targets = ['10.0.0.1:1', '10.0.0.2:1']", "cloud.authority", "every replica"),
        ("targets = ['127.0.0.1:1', '127.0.0.2:1']\nroot_ca = 'ca'", "cloud.authority", "name"),
    ],
)
def test_targets_errors(text: str, key: str, fragment: str) -> None:
    e = error("[cloud]\n" + text + "\n")
    assert e.key == key and fragment in e.message, e.message


def test_backoff_max_defaults_to_interval_but_not_below_initial() -> None:
    assert cfg("[streaming]\ninterval = 5\n").streaming.backoff_max == 5.0
    assert cfg("[streaming]\ninterval = 0.1\n").streaming.backoff_max == 1.0


@pytest.mark.parametrize(
    ("target", "insecure", "files", "tls"),
    [
        ("127.0.0.1:50051", False, False, False),
        ("localhost:50051", False, False, False),
        ("[::1]:50051", False, False, False),
        ("cloud.example.com:443", False, False, True),
        ("cloud.example.com:443", True, False, False),
        ("127.0.0.1:50051", False, True, True),
    ],
)
def test_use_tls(target: str, insecure: bool, files: bool, tls: bool) -> None:
    text = f'[cloud]\ntarget = "{target}"\ninsecure = {str(insecure).lower()}\n'
    if files:
        text += 'root_ca = "ca.pem"\n'
    assert cfg(text).require_cloud().use_tls is tls


def test_address_helpers() -> None:
    assert split_address("h:1") == ("h", 1)
    assert split_address("[::1]:80") == ("::1", 80)
    for bad in ("h", ":1", "h:", "h:x", "::1:80", "[::1:80", "[zz]:80", "a b:1", "h:123456"):
        assert split_address(bad) is None, bad
    assert is_loopback("127.1.2.3:1") and not is_loopback("10.0.0.1:1")


# --- errors -----------------------------------------------------------------------------------


def test_message_format_for_a_wrong_value() -> None:
    e = error('[streaming]\ninterval = "abc"\n')
    assert str(e) == "streamer.toml: streaming.interval: expected a number > 0, got 'abc' (str)"
    assert e.key == "streaming.interval" and e.path == P


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[streaming]\ninterval = true", "streaming.interval", "got True (boolean)"),
        ("[streaming]\ninterval = -1", "streaming.interval", "expected a number > 0.0, got -1"),
        ("[streaming]\ninterval = 0", "streaming.interval", "expected a number > 0.0, got 0"),
        ("[streaming]\ninterval = nan", "streaming.interval", "finite"),
        ("[streaming]\ninterval = inf", "streaming.interval", "finite"),
        ("[streaming]\ninterval = 1e300", "streaming.interval", "expected a number <= 92233"),
        ("[streaming]\nbackoff_jitter = 1", "streaming.backoff_jitter", "expected a number < 1.0"),
        ("[streaming]\nbackoff_jitter = -0.1", "streaming.backoff_jitter", "a number >= 0.0"),
        ("[streaming]\nbackoff_multiplier = 0.5", "streaming.backoff_multiplier", ">= 1"),
        ("[streaming]\nbackoff_initial = 5\nbackoff_max = 2", "streaming.backoff_max", ">="),
        ("[streaming]\nshutdown_timeout = -1", "streaming.shutdown_timeout", ">= 0"),
        ("[streaming]\nintervall = 3", "streaming.intervall", "did you mean 'interval'?"),
        ("streaming = 3", "streaming", "expected a table, got 3 (integer)"),
        (
            "[clod]\ntarget = 'h:1'",
            "clod",
            "unknown key (known: cloud, streaming, plugins, observers, hooks, plugin, observer, "
            "hook, metrics, log); did you mean 'cloud'?",
        ),
        ("[cloud]\ngateway_id = 'x'", "cloud", "got none"),
        ("[cloud]\ntarget = 'h:1'\ncontrol_proxy = 'c.yml'", "cloud.control_proxy", "both"),
        ("[cloud]\ncontrol_proxy = 'c.yml'\nroot_ca = 'ca'", "cloud.root_ca", "control_proxy"),
        (
            "[cloud]\ntarget = 'h:1'\ncontrol_proxy_override = 'o.yml'",
            "cloud.control_proxy_override",
            "only allowed with control_proxy",
        ),
        (
            "[cloud]\ncontrol_proxy = 'c.yml'\ncontrol_proxy_override = ''",
            "cloud.control_proxy_override",
            "file path",
        ),
        ("[cloud]\ntarget = 'nocolon'", "cloud.target", "host:port"),
        ("[cloud]\ntarget = 'h:0'", "cloud.target", "from 1 to 65535"),
        ("[cloud]\ntarget = 'h:70000'", "cloud.target", "from 1 to 65535"),
        ("[cloud]\ntarget = 5", "cloud.target", "got 5 (integer)"),
        ("[cloud]\ntarget = 'h:1'\ninsecure = 'yes'", "cloud.insecure", "true or false"),
        ("[cloud]\ntarget = 'h:1'\nclient_cert = 'c'", "cloud.client_key", "client_cert is set"),
        ("[cloud]\ntarget = 'h:1'\nclient_key = 'k'", "cloud.client_cert", "client_key is set"),
        ("[cloud]\ntarget = 'h:1'\ninsecure = true\nroot_ca = 'x'", "cloud.insecure", "false"),
        ("[cloud]\ntarget = 'h:1'\nroot_ca = ''", "cloud.root_ca", "file path"),
        ("[cloud]\ntarget = 'h:1'\nauthority = ''", "cloud.authority", "non-empty"),
        ("[cloud]\ntarget = 'h:1'\ngateway_id = 1", "cloud.gateway_id", "a string"),
        (
            "[cloud]\ntarget = 'h:1'\nmax_receive_message_mb = 1.5",
            "cloud.max_receive_message_mb",
            "integer",
        ),
        (
            "[cloud]\ntarget = 'h:1'\nmax_receive_message_mb = 4096",
            "cloud.max_receive_message_mb",
            "expected an integer <= 2047, got 4096",
        ),
        (
            "[cloud]\ntarget = 'h:1'\nmax_streams_per_connection = false",
            "cloud.max_streams_per_connection",
            "(boolean)",
        ),
        (
            "[cloud]\ntarget = 'h:1'\nkeepalive_time_s = 1e7",
            "cloud.keepalive_time_s",
            "<= 2147483.647",
        ),
        ("plugins = 'files'", "plugins", "expected an array, got 'files' (str)"),
        ("plugins = ['a', 1]", "plugins[1]", "expected a string, got 1 (integer)"),
        ("plugins = [' ']", "plugins[0]", "expected a string that is not blank, got ' ' (str)"),
        ("plugins = ['a', 'a']", "plugins[1]", "once"),
        ("hooks = ['']", "hooks[0]", "expected a string of length >= 1, got '' (str)"),
        (
            "plugins = ['files']\n[plugin.fils]\nx = 1",
            "plugin.fils",
            "table [plugin.fils] but 'fils' is not enabled in plugins = ['files']; "
            "if 'files' is misspelt, write plugins = ['fils']; "
            "if this table is, rename it [plugin.files]",
        ),
        (  # the list is the typo: the hint must not tell to rename the right table to it
            "plugins = ['sqlit', 'log']\n[plugin.sqlite]\nx = 1",
            "plugin.sqlite",
            "if 'sqlit' is misspelt, write plugins = ['sqlite', 'log']",
        ),
        (
            "plugins = ['files']\n[plugin.files]\n[plugin.fils]",
            "plugin.fils",
            "[plugin.files] exists too: remove or merge this one",
        ),
        ("[plugin.x]", "plugin.x", "not enabled"),
        ("hooks = ['h']\n[hook.h]\n[hook.z]", "hook.z", "not enabled in hooks"),
        ("plugins = ['x']\nplugin = 3", "plugin", "expected a table, got 3 (integer)"),
        ("plugins = ['x']\nplugin = { x = 3 }", "plugin.x", "expected a table"),
        ("plugins = ['x']\n[plugin.'a.b'.c]", 'plugin."a.b"', "not enabled"),
        ("[metrics]\naddress = 9464", "metrics.address", "host:port"),
        ("[metrics]\nadress = 'h:1'", "metrics.adress", "did you mean 'address'?"),
        ("[log]\nlevel = 'verbose'", "log.level", "one of 'DEBUG'"),
        ("[log]\nlevel = 'WARN'", "log.level", "did you mean 'WARNING'?"),
        ("[log]\nformat = 'JSON'", "log.format", "'human', 'json'"),
    ],
)
def test_errors_name_the_key(text: str, key: str, fragment: str) -> None:
    e = error(text)
    assert e.key == key
    assert str(e).startswith(f"streamer.toml: {key}: ")
    assert fragment in str(e)


def test_metrics_allows_port_zero() -> None:
    assert cfg("[metrics]\naddress = '127.0.0.1:0'").metrics.address == "127.0.0.1:0"


def test_syntax_error_has_line_and_column() -> None:
    e = error('plugins = ["a"]\n[cloud\n')
    assert e.key == ""
    assert re.search(r"^streamer.toml: invalid TOML: .*line 2, column \d+", str(e))
    assert e.__cause__ is not None


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"x = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)


def test_load_config_resolves_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "streamer.toml"
    path.write_text('[cloud]\ntarget = "h:1"\nroot_ca = "ca.pem"\n')
    config = load_config(path)
    assert config.path == path
    assert config.require_cloud().root_ca == tmp_path / "ca.pem"


def test_parse_config_is_pure() -> None:
    data = {"streaming": {"interval": 3}, "plugins": ["a"], "plugin": {"a": {"k": [1]}}}
    config = parse_config(data, Path("/nowhere/streamer.toml"))
    assert config.streaming.interval == 3.0
    data["plugin"]["a"]["k"].append(2)  # type: ignore[index]
    assert config.plugin_table("a") == {"k": [1]}


# --- search order -----------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("cwd", "xdg", "home", "etc", "flag", "env")}
    for p in out.values():
        p.mkdir()
    return out


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def test_search_order(places: dict[str, Path]) -> None:
    env = {"XDG_CONFIG_HOME": str(places["xdg"]), "HOME": str(places["home"])}

    def find(cli: str | None = None, **extra: str) -> Path | None:
        return find_config(cli, {**env, **extra}, cwd=places["cwd"], system_dir=places["etc"])

    assert find() is None
    etc = _touch(places["etc"] / "streamer.toml")
    assert find() == etc
    home = _touch(places["home"] / ".config" / "streamer" / "streamer.toml")
    assert (
        find_config(
            None, {"HOME": str(places["home"])}, cwd=places["cwd"], system_dir=places["etc"]
        )
        == home
    )
    assert find(XDG_CONFIG_HOME="relative/ignored") == home
    xdg = _touch(places["xdg"] / "streamer" / "streamer.toml")
    assert find() == xdg
    cwd = _touch(places["cwd"] / "streamer.toml")
    assert find() == cwd
    from_env = _touch(places["env"] / "s.toml")
    assert find(STREAMER_CONFIG=str(from_env)) == from_env
    assert find(STREAMER_CONFIG="") == cwd
    flag = _touch(places["flag"] / "s.toml")
    assert find(str(flag), STREAMER_CONFIG=str(from_env)) == flag


def test_explicit_path_must_exist(places: dict[str, Path]) -> None:
    _touch(places["cwd"] / "streamer.toml")
    missing = str(places["flag"] / "missing.toml")
    with pytest.raises(ConfigError, match=r"missing.toml: does not exist \(named by --config\)"):
        find_config(missing, {}, cwd=places["cwd"])
    with pytest.raises(ConfigError, match=r"named by STREAMER_CONFIG"):
        find_config(None, {"STREAMER_CONFIG": missing}, cwd=places["cwd"])
    with pytest.raises(ConfigError, match="is not a file"):
        find_config(str(places["flag"]), {}, cwd=places["cwd"])


# --- fuzz -------------------------------------------------------------------------------------


def _toml_string(text: str) -> str:
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c for c in text
    )
    return f'"{escaped}"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (int, dt.date, dt.time)):
        return value.isoformat() if not isinstance(value, int) else str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(doc: Mapping[str, Any]) -> str:
    """Every value inline (``key = {...}``): enough for a fuzz test, always valid TOML."""
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in doc.items())


_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["127.0.0.1:1", "h:65535", "[::1]:0", "INFO", "json", "a", "", "~/x"]),
    st.dates(),
)
# Values that are often valid, so that many documents load and the checks after a value's own
# (cross-key rules, path resolution) run too.
_plausible = st.one_of(
    st.floats(min_value=0.01, max_value=100),
    st.integers(min_value=1, max_value=100),
    st.sampled_from([False, "127.0.0.1:50051", "ca.pem", "WARNING", "human", 0.5, 1.6]),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _section(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    known = st.dictionaries(st.sampled_from(keys), _plausible | _values, max_size=len(keys))
    unknown: st.SearchStrategy[dict[str, Any]] = st.just({}) | st.dictionaries(
        st.text(max_size=6), _values, max_size=1
    )
    return st.builds(lambda a, b: {**b, **a}, known, unknown)


_names = st.lists(st.sampled_from(["a", "b", "c", "", "a.b"]) | st.text(max_size=4), max_size=3)
_documents = st.fixed_dictionaries(
    {},
    optional={
        "cloud": _section(tuple(CloudConfig.__struct_fields__)),
        "streaming": _section(tuple(StreamingConfig.__struct_fields__)),
        "plugins": _names | _values,
        "hooks": _names | _values,
        "observers": _names | _values,
        "plugin": st.dictionaries(st.sampled_from(["a", "b", "z"]), _values, max_size=2),
        "hook": st.dictionaries(st.sampled_from(["a", "b", "z"]), _values, max_size=2),
        "observer": st.dictionaries(st.sampled_from(["a", "b", "z"]), _values, max_size=2),
        "metrics": _section(("address",)),
        "log": _section(("level", "format")),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_fuzz_documents_load_or_fail_with_a_key_path(doc: dict[str, Any]) -> None:
    text = to_toml(doc)
    try:
        config = config_from_text(text, P)
    except ConfigError as e:
        assert e.problems and e.key == e.problems[0].key
        for problem in e.problems:  # every problem names its key, in one report
            assert problem.key, str(e)
            assert f"{problem.key}: {problem.message}" in str(e)
        assert str(e).startswith(
            f"streamer.toml: {e.key}: " if len(e.problems) == 1 else "streamer.toml: "
        )
    else:
        assert isinstance(config, Config)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_arbitrary_text_only_raises_config_error(text: str) -> None:
    try:
        config_from_text(text, P)
    except ConfigError as e:
        assert str(e).startswith("streamer.toml: ")


# --- safe sync: the guard and staleness ([streaming] and per plugin) ---------------------------


def test_safe_sync_defaults_and_global_keys() -> None:
    assert cfg("").stream_settings("any") == StreamSettings(0.5, 2, None)
    config = cfg(
        """
        [streaming]
        guard_max_delete_fraction = 0.25
        guard_confirmations = 5
        max_staleness = 600
        """
    )
    assert config.stream_settings("any") == StreamSettings(0.25, 5, 600.0)


@pytest.mark.parametrize("off", ["'off'", "'OFF'", "false", "0", "0.0"])
def test_guard_off(off: str) -> None:
    config = cfg(f"[streaming]\nguard_max_delete_fraction = {off}\nmax_staleness = {off}")
    assert config.stream_settings("x").guard_max_delete_fraction == 0.0
    assert config.stream_settings("x").max_staleness is None


def test_plugin_table_overrides_are_the_hosts_not_the_plugins() -> None:
    config = cfg(
        """
        plugins = ["files", "sqlite"]
        [streaming]
        max_staleness = 60
        [plugin.files]
        dir = "/var/mirror"
        guard_max_delete_fraction = "off"
        max_staleness = 5
        [plugin.sqlite]
        path = "/tmp/m.db"
        """
    )
    # The factory never sees the host's keys: a plugin that rejects unknown keys still loads.
    assert config.plugin_table("files") == {"dir": "/var/mirror"}
    assert config.plugin_table("sqlite") == {"path": "/tmp/m.db"}
    assert config.stream_settings("files") == StreamSettings(0.0, 2, 5.0)
    assert config.stream_settings("sqlite") == StreamSettings(0.5, 2, 60.0)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (
            "[streaming]\nguard_max_delete_fraction = 1.5",
            "streaming.guard_max_delete_fraction",
            'a fraction from 0 to 1 or "off", got 1.5 (float)',
        ),
        (
            "[streaming]\nguard_max_delete_fraction = 'half'",
            "streaming.guard_max_delete_fraction",
            "got 'half' (str)",
        ),
        (
            "[streaming]\nguard_max_delete_fraction = true",
            "streaming.guard_max_delete_fraction",
            "got True (boolean)",
        ),
        ("[streaming]\nguard_confirmations = 0", "streaming.guard_confirmations", "1 to 1000"),
        ("[streaming]\nmax_staleness = -5", "streaming.max_staleness", "seconds >= 0"),
        ("[streaming]\nmax_staleness = 'soon'", "streaming.max_staleness", "got 'soon' (str)"),
        (
            "plugins = ['x']\n[plugin.x]\nguard_confirmations = 'two'",
            "plugin.x.guard_confirmations",
            "integer from 1 to 1000",
        ),
        (
            "plugins = ['x']\n[plugin.x]\nmax_staleness = nan",
            "plugin.x.max_staleness",
            "seconds >= 0",
        ),
        ("[metrics]\nremote_release = 'yes'", "metrics.remote_release", "true or false"),
    ],
)
def test_safe_sync_errors_name_the_key(text: str, key: str, fragment: str) -> None:
    e = error(text)
    assert e.key == key and fragment in str(e), str(e)


def test_remote_release_is_off_by_default() -> None:
    assert cfg("").metrics.remote_release is False
    assert cfg("[metrics]\nremote_release = true").metrics.remote_release is True


# --- every problem at once --------------------------------------------------------------------


def test_every_problem_of_the_file_at_once() -> None:
    e = error(
        """
        plugins = ["a", "a"]
        [cloud]
        target = "h:1"
        client_cert = "c.pem"
        keepalive_time_s = nan
        [streaming]
        interval = -1
        backoff_jitter = 1
        [plugin.b]
        [metrics]
        address = "nope"
        [log]
        format = "xml"
        """
    )
    assert [(p.key, p.message.split(",")[0]) for p in e.problems] == [
        ("cloud.keepalive_time_s", "expected a finite number"),
        ("streaming.interval", "expected a number > 0.0"),
        ("streaming.backoff_jitter", "expected a number < 1.0"),
        ("plugins[1]", "expected each name once"),
        ("metrics.address", "expected host:port with a port from 0 to 65535"),
        ("log.format", "expected one of 'human'"),
        ("plugin.b", "table [plugin.b] but 'b' is not enabled in plugins = ['a']"),
    ]
    assert str(e).startswith("streamer.toml: 7 problems:\n  1. cloud.keepalive_time_s: ")
    assert (e.key, e.path) == ("cloud.keepalive_time_s", P)
    # The [cloud] cross-key rules run once its keys are valid on their own.
    e = error('[cloud]\ntarget = "h:1"\nclient_cert = "c.pem"\n[log]\nlevel = 1\n')
    assert [p.key for p in e.problems] == ["cloud.client_key", "log.level"]


def test_inf_and_nan_are_refused_everywhere() -> None:
    for key in ("interval", "backoff_initial", "backoff_multiplier", "backoff_max"):
        for value in ("inf", "-inf", "nan"):
            e = error(f"[streaming]\n{key} = {value}\n")
            assert e.message == f"expected a finite number, got {value.lstrip('+')} (float)"


# --- observers, and their deprecated spelling -----------------------------------------------------


def test_observers_key_and_tables() -> None:
    config = cfg('observers = ["audit"]\n[observer.audit]\nlevel = 3\n')
    assert config.observers == ("audit",) and config.deprecations == ()
    assert config.observer_table("audit") == {"level": 3}
    e = error('observers = ["audit"]\n[observer.audti]\n')
    assert e.key == "observer.audti" and "not enabled in observers = ['audit']" in e.message


def test_hooks_still_work_with_a_warning_naming_the_new_key() -> None:
    config = cfg('hooks = ["audit"]\n[hook.audit]\nlevel = 3\n')
    assert config.observers == ("audit",) and config.hooks == ("audit",)
    assert config.observer_table("audit") == {"level": 3}
    assert config.deprecations == (
        "streamer.toml: hooks: deprecated key; write observers = ['audit'] instead",
        "streamer.toml: hook: deprecated tables [hook.audit]; rename them [observer.NAME]",
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('observers = ["a"]\nhooks = ["b"]\n', "hooks"),
        ('observers = ["a"]\n[observer.a]\n[hook.a]\n', "hook"),
    ],
)
def test_both_spellings_at_once_is_an_error(text: str, key: str) -> None:
    e = error(text)
    assert e.key == key and "got both" in e.message
    # Reported with the file's other problems, not only once they are fixed.
    e = error(text + "[streaming]\ninterval = 0\n")
    assert [p.key for p in e.problems] == ["streaming.interval", key]


# --- docs/config.md is the reference of the structs ---------------------------------------------

_DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
_SECTIONS = {
    "Top level": ConfigFile,
    "`[cloud]`": CloudConfig,
    "`[streaming]`": StreamingConfig,
    "`[metrics]`": MetricsConfig,
    "`[log]`": LogConfig,
}


def _documented() -> dict[str, dict[str, str]]:
    """``{section heading: {key: default cell}}`` from the reference tables."""
    out: dict[str, dict[str, str]] = {}
    section = None
    for line in _DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
            out.setdefault(section, {})
        elif section is not None and (m := re.match(r"^\| `([a-z_]+)` \|([^|]*)\|([^|]*)\|", line)):
            out[section][m.group(1)] = m.group(3).strip()
    return out


@pytest.mark.parametrize("section", list(_SECTIONS))
def test_docs_reference_matches_the_structs(section: str) -> None:
    struct = _SECTIONS[section]
    documented = _documented()[section]
    sub_tables = {"cloud", "streaming", "metrics", "log"}  # documented as their own sections
    declared = [
        f for f in struct.__struct_fields__ if struct is not ConfigFile or f not in sub_tables
    ]
    assert sorted(documented) == sorted(declared)
    defaults = struct() if struct is not CloudConfig else CloudConfig(target="h:1")
    for key, cell in documented.items():
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if literal is None or literal.group(1) == "[]":
            continue  # prose: "system trust store", "`interval` (but at least ...)"
        value = tomllib.loads(f"v = {literal.group(1)}")["v"]
        assert getattr(defaults, key) == value, (section, key, cell)


def test_the_files_defaults_are_the_clients() -> None:
    """Declared once (streamer.client.defaults): a host without a setting behaves like a
    program using the library with its defaults."""
    import inspect

    from streamer.client.backoff import Backoff
    from streamer.client.client import Client
    from streamer.client.guard import GuardPolicy
    from streamer.client.registry import StaticRegistry

    def default(func: Any, name: str) -> Any:
        return inspect.signature(func).parameters[name].default

    streaming, cloud = StreamingConfig(), CloudConfig(target="h:1")
    assert default(Client.__init__, "streaming_interval") == streaming.interval
    assert streaming.max_backoff == streaming.interval  # the backoff cap is one poll period
    assert default(StaticRegistry.__init__, "max_reconnect_backoff") == streaming.interval
    assert Backoff() == Backoff(
        streaming.backoff_initial, streaming.backoff_multiplier, streaming.backoff_jitter
    )
    assert default(Client.__init__, "max_streams_per_channel") == cloud.max_streams_per_connection
    assert default(StaticRegistry.__init__, "keepalive_time") == cloud.keepalive_time_s
    assert default(StaticRegistry.__init__, "keepalive_timeout") == cloud.keepalive_timeout_s
    assert (
        default(StaticRegistry.__init__, "max_receive_message_length")
        == cloud.max_receive_message_bytes
    )
    guard = streaming.settings()
    assert GuardPolicy() == GuardPolicy(guard.guard_max_delete_fraction, guard.guard_confirmations)
    assert StreamSettings() == guard
