"""The command line's own conveniences: version, help with defaults, log level names, and the
read-only commands keeping working when the config file has become invalid."""

from __future__ import annotations

import os
import re
from importlib.metadata import version
from pathlib import Path

import pytest

import streamer
from streamer.cli.main import build_parser
from streamer.host.config import LOG_LEVELS
from tests.helpers import run_cli


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "STREAMER_CONFIG"}


def test_version() -> None:
    code, out = run_cli("--version", env=_env())
    assert code == 0
    assert out.strip() == f"streamer {version('streamer')}"
    # the package's own constant is the installed distribution's version, not a second one
    assert streamer.__version__ == version("streamer")


def _help(command: str) -> str:
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    text: str = sub.format_help()
    return " ".join(text.split())  # undo argparse's line wrapping


@pytest.mark.parametrize("command", ["run", "check", "list", "tap", "status", "top", "serve"])
def test_every_option_has_help(command: str) -> None:
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    for action in sub._actions:
        if action.help is not None and action.help != "==SUPPRESS==":
            assert action.help.strip(), (command, action.option_strings)
        else:
            assert action.option_strings in (["--demo-interval"], ["--demo-duration"]), (
                command,
                action.option_strings,
            )


def test_help_shows_defaults() -> None:
    serve = _help("serve")
    assert "host:port to listen on (default: 127.0.0.1:50051)" in serve
    assert "how streams are served (default: poll)" in serve
    assert "(default: INFO)" in serve and "(default: human)" in serve
    assert "(default: None)" not in serve and "(default: False)" not in serve
    assert "seconds to wait for the host (default: 5.0)" in _help("status")
    assert "(default: the config's [log] level)" in _help("run")


@pytest.mark.parametrize("level", ["debug", "Warning", "CRITICAL"])
def test_log_levels_the_config_accepts_work_on_the_command_line(level: str) -> None:
    args = build_parser().parse_args(["serve", "data", "--log-level", level])
    assert args.log_level == level.upper() and args.log_level in LOG_LEVELS


def test_list_works_when_the_config_is_invalid(tmp_path: Path) -> None:
    cfg = tmp_path / "streamer.toml"
    cfg.write_text('plugins = ["log"]\n[cloud]\ntarget = "127.0.0.1:1"\nbogus = 1\n')
    code, out = run_cli("list", "--config", str(cfg), env=_env())
    assert code == 0, out
    assert f"{cfg}: cloud.bogus: unknown key" in out
    assert "listing installed plugins" in out
    row = next(line for line in out.splitlines() if line.startswith("log "))
    assert re.search(r"\byes\b", row) and "not loaded" in row


def test_check_reports_config_errors_in_the_numbered_format(tmp_path: Path) -> None:
    cfg = tmp_path / "streamer.toml"
    cfg.write_text('plugins = ["sqlit"]\n[cloud]\ntarget = "127.0.0.1:1"\n[plugin.sqlite]\n')
    code, out = run_cli("check", "--config", str(cfg), env=_env())
    assert code == 2
    assert out.splitlines()[:4] == [
        f"{cfg}: NOT OK",
        "2 problems found; nothing was started:",
        "  1. plugin.sqlite: table [plugin.sqlite] but 'sqlite' is not enabled in plugins = "
        "['sqlit']; if 'sqlit' is misspelt, write plugins = ['sqlite']; "
        "if this table is, rename it [plugin.sqlit]",
        "  2. sqlit: enabled but not installed in entry-point group 'streamer.listeners' "
        "(installed: files, hello, log, redis, sqlite); did you mean 'sqlite'?",
    ]


def test_check_json(tmp_path: Path) -> None:
    import json

    cfg = tmp_path / "streamer.toml"
    cfg.write_text(
        'plugins = ["log"]\n[cloud]\ntarget = "127.0.0.1:1"\n[plugin.log]\nstreams=["a"]\n'
    )
    code, out = run_cli("check", "--config", str(cfg), "--json", env=_env())
    assert code == 0, out
    doc = json.loads(out)
    assert doc["ok"] is True and doc["problems"] == [] and doc["config"] == str(cfg)
    (plugin,) = doc["plugins"]
    assert plugin["name"] == "log" and plugin["dist"] == "streamer-log"
    assert plugin["streams"] == ["a"]

    cfg.write_text('plugins = ["log", "nope"]\n[cloud]\ntarget = "127.0.0.1:1"\n[plugin.log]\n')
    code, out = run_cli("check", "--config", str(cfg), "--json", env=_env())
    assert code == 2
    doc = json.loads(out)
    assert doc["ok"] is False
    subjects = [p["subject"] for p in doc["problems"]]
    assert "nope" in subjects
    assert any(p["message"].startswith("plugin.log.streams: missing") for p in doc["problems"])
