"""Secrets print as ``***`` wherever config is echoed, and ``streamer check`` warns about every
downgrade it can see, naming the key (issue 19). The CLI runs in a subprocess against the real,
installed first-party plugins."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Annotated

import pytest

from streamer.base.redact import redact, redact_text
from streamer.host.logsetup import configure_logging
from streamer.host.schema import ConfigProblems, Doc, PluginConfig, Rule, StreamNames, validate
from tests.helpers import run_cli, streamer_env, write_config

SECRET = "hunter2-s3cr3t"


def env() -> dict[str, str]:
    return streamer_env(XDG_CONFIG_HOME="/nonexistent")


def cfg(tmp_path: Path, plugins: dict[str, dict[str, object]], **cloud: object) -> Path:
    return write_config(tmp_path / "s.toml", str(cloud.pop("target", "127.0.0.1:1")), plugins,
                        cloud or None)  # fmt: skip


# -- redaction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"redis://user:{SECRET}@db.example:6379/0",
        f"redis:/:{SECRET}@10.0.0.5:6379/0",  # one slash too few: not a parsable URL
        f"rediss://:{SECRET}@10.0.0.5",
        f"https://h/x?token={SECRET}&a=1",
        f"{{'password': '{SECRET}'}}",
        f'{{"api_token": "{SECRET}"}}',
        f"secret={SECRET}",
    ],
)
def test_redact_text_hides_passwords(text: str) -> None:
    shown = redact_text(text)
    assert SECRET not in shown and "***" in shown


def test_redact_keeps_what_is_not_secret() -> None:
    for text in ("10.0.0.1:50051", "unix:///run/redis.sock", "stream secret-stream: failed"):
        assert redact_text(text) == text
    assert redact({"url": f"redis://:{SECRET}@h", "auth_token": SECRET, "n": 3}) == {
        "url": "redis://:***@h",
        "auth_token": "***",
        "n": 3,
    }


class _SecretConfig(PluginConfig):
    password: str = ""
    api_token: Annotated[str, Rule("a token of 40 characters", lambda t: len(t) == 40)] = ""
    url: Annotated[str, Rule("a redis:// URL", lambda u: u.startswith("redis://"))] = ""


@pytest.mark.parametrize(
    ("table", "shown"),
    [
        ({"password": 7}, "password: expected a string, got '***' (str)"),
        ({"api_token": SECRET}, "api_token: expected a token of 40 characters, got '***' (str)"),
        ({"api_token": 7}, "api_token: expected a token of 40 characters, got '***' (str)"),
        ({"url": f"redis:/:{SECRET}@h"}, "url: expected a redis:// URL, got 'redis:/:***@h'"),
    ],
)
def test_config_errors_never_echo_a_secret(table: dict[str, object], shown: str) -> None:
    with pytest.raises(ValueError) as info:
        validate(_SecretConfig, table)
    assert SECRET not in str(info.value) and str(info.value).startswith(shown)


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_log_lines_are_redacted(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("INFO", fmt, out)
    try:
        logging.getLogger("streamer.test").warning("cannot reach redis://:%s@h:6379", SECRET)
        try:
            raise ValueError(f"bad url redis:/:{SECRET}@h")
        except ValueError:
            logging.getLogger("streamer.test").exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    text = out.getvalue()
    assert SECRET not in text and text.count("***") >= 2, text


def test_unparsable_redis_url_is_not_leaked_by_check_or_list(tmp_path: Path) -> None:
    path = cfg(tmp_path, {"redis": {"streams": ["s"], "url": f"redis:/:{SECRET}@10.0.0.5:6379/0"}})
    for args in (["check"], ["list"], ["list", "--json"], ["run"]):
        code, out = run_cli(*args, "--config", str(path), env=env())
        assert code == (0 if args[0] == "list" else 2), (args, out)
        assert SECRET not in out, (args, out)
        assert "redis:/:***@10.0.0.5" in out, (args, out)
        if args == ["list", "--json"]:
            (row,) = [r for r in json.loads(out) if r["name"] == "redis"]
            assert row["status"] == "error"


# -- remote redis:// needs an opt-in ----------------------------------------------------------


def test_remote_plaintext_redis_needs_insecure(tmp_path: Path) -> None:
    url = f"redis://:{SECRET}@10.0.0.5:6379/0"
    code, out = run_cli("check", "--config", str(cfg(tmp_path, {"redis": {"streams": ["s"],
                        "url": url}})), env=env())  # fmt: skip
    assert code == 2, out
    assert "insecure" in out and "rediss://" in out and SECRET not in out

    code, out = run_cli("check", "--config", str(cfg(tmp_path, {"redis": {"streams": ["s"],
                        "url": url, "insecure": True}})), env=env())  # fmt: skip
    assert code == 0, out
    assert "warning: plugin.redis.url: plaintext redis://" in out and SECRET not in out

    for ok in (f"rediss://:{SECRET}@10.0.0.5:6380/0", "redis://127.0.0.1:6379/0"):
        code, out = run_cli("check", "--config", str(cfg(tmp_path, {"redis": {"streams": ["s"],
                            "url": ok}})), env=env())  # fmt: skip
        assert code == 0 and "warning" not in out, out


# -- streamer check warns about downgrades ----------------------------------------------------


def test_check_warns_plaintext_to_remote_cloud(tmp_path: Path) -> None:
    path = cfg(tmp_path, {"log": {"streams": ["s"]}}, target="10.1.2.3:9443", insecure=True)
    code, out = run_cli("check", "--config", str(path), env=env())
    assert code == 0, out
    assert "warning: cloud.insecure: plaintext to non-loopback cloud '10.1.2.3:9443'" in out


def test_check_is_quiet_when_nothing_is_downgraded(tmp_path: Path) -> None:
    private = tmp_path / "mirror"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    path = cfg(tmp_path, {"files": {"streams": ["s"], "dir": str(private)}})
    code, out = run_cli("check", "--config", str(path), env=env())
    assert code == 0 and "warning" not in out, out


def test_check_warns_mirror_readable_by_others(tmp_path: Path) -> None:
    shared = tmp_path / "mirror"
    shared.mkdir()
    os.chmod(shared, 0o755)
    db = tmp_path / "m.sqlite"
    db.write_bytes(b"")
    os.chmod(db, 0o644)
    path = cfg(
        tmp_path,
        {
            "files": {"streams": ["f"], "dir": str(shared)},
            "sqlite": {"streams": ["q"], "path": str(db)},
        },
    )
    code, out = run_cli("check", "--config", str(path), env=env())
    assert code == 0, out
    assert f"warning: plugin.files.dir: directory {str(shared)!r} is readable by other" in out
    assert f"warning: plugin.sqlite.path: file {str(db)!r} is readable by other" in out


def test_check_warns_tls_verification_off(tmp_path: Path) -> None:
    from streamer.host.config import load_config
    from streamer.host.downgrades import downgrades

    path = cfg(tmp_path, {"x": {"streams": ["s"], "verify": False,
                                "url": "rediss://h:6380/0?ssl_cert_reqs=none"}})  # fmt: skip
    found = downgrades(load_config(path))
    assert any(w.startswith("plugin.x.verify = false: TLS verification is off") for w in found)
    assert any(w.startswith("plugin.x.url: ssl_cert_reqs=none") for w in found)


def test_check_json_lists_the_warnings(tmp_path: Path) -> None:
    path = cfg(tmp_path, {"log": {"streams": ["s"]}}, target="10.1.2.3:9443", insecure=True)
    code, out = run_cli("check", "--json", "--config", str(path), env=env())
    assert code == 0, out
    doc = json.loads(out)
    assert doc["ok"] is True
    assert [w.split(":")[0] for w in doc["warnings"]] == ["cloud.insecure"]


class _Auth(PluginConfig):
    streams: StreamNames
    auth_token: Annotated[str, Doc("the token", min_length=40)]


def test_schema_errors_never_echo_a_secret_named_field() -> None:
    with pytest.raises(ConfigProblems) as info:
        validate(_Auth, {"streams": ["s"], "auth_token": SECRET}, where="plugin.x")
    text = "\n".join(str(p) for p in info.value.problems)
    assert "plugin.x.auth_token" in text and SECRET not in text and "***" in text


def test_run_logs_the_downgrades_it_starts_with(tmp_path: Path) -> None:
    # A plugin that is not installed stops the host at load, after the downgrades are logged.
    path = cfg(tmp_path, {"nosuchplugin": {"streams": ["s"]}}, target="10.1.2.3:9443",
               insecure=True)  # fmt: skip
    code, out = run_cli("run", "--config", str(path), env=env())
    assert code == 2, out
    assert "WARNING streamer.host.host: security downgrade: cloud.insecure: plaintext" in out
