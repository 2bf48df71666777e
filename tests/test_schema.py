"""Plugin config schemas: every problem at once, in the project's words; docs and samples from
the same declaration; the plugin pipeline validates before any factory runs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest

from streamer.host.config import config_from_text
from streamer.host.plugins import format_problems, load_factories
from streamer.host.schema import (
    ConfigProblems,
    Doc,
    PluginConfig,
    StreamNames,
    config_schema,
    describe_schema,
    sample_table,
    schema_of,
    validate,
)
from tests.helpers import run_cli, streamer_env
from tests.plugin_fixtures import listener_module, make_dist


class KvConfig(PluginConfig):
    """A key-value sink."""

    streams: StreamNames
    path: Annotated[str, Doc("the database file", examples=["/var/lib/kv.db"])]
    batch: Annotated[int, Doc("rows per transaction", ge=1, le=10_000)] = 500
    mode: Annotated[Literal["fast", "safe"], Doc("durability")] = "safe"
    ratio: Annotated[float, Doc("fill ratio", ge=0)] = 0.5
    tags: Annotated[tuple[str, ...], Doc("labels")] = ()

    def check(self) -> Iterable[tuple[str, str]]:
        if self.mode == "fast" and self.batch > 1000:
            yield "batch", f"expected at most 1000 with mode = 'fast', got {self.batch}"


def problems(table: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigProblems) as info:
        validate(KvConfig, table, where="plugin.kv")
    return [str(p) for p in info.value.problems]


def test_valid_table_gives_the_typed_instance() -> None:
    cfg = validate(KvConfig, {"streams": ["a", "b"], "path": "/x", "ratio": 1, "tags": ["t"]})
    assert cfg == KvConfig(streams=("a", "b"), path="/x", ratio=1.0, tags=("t",))
    assert isinstance(cfg.ratio, float) and cfg.batch == 500 and cfg.mode == "safe"


def test_every_problem_at_once_with_key_paths() -> None:
    found = problems(
        {"streams": ["a", 3, "a"], "pth": "/x", "batch": 0, "mode": "fats", "ratio": float("inf")}
    )
    assert found == [
        "plugin.kv.pth: unknown key (known: streams, path, batch, mode, ratio, tags); "
        "did you mean 'path'?",
        "plugin.kv.streams[1]: expected a string, got 3 (integer)",
        "plugin.kv.path: missing: the database file",
        "plugin.kv.batch: expected an integer >= 1, got 0 (integer)",
        "plugin.kv.mode: expected one of 'fast', 'safe', got 'fats' (str); did you mean 'fast'?",
        "plugin.kv.ratio: expected a finite number, got inf (float)",
    ]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"streams": []}, "plugin.kv.streams: expected an array of length >= 1, got [] (array)"),
        ({"streams": "a"}, "plugin.kv.streams: expected an array, got 'a' (str)"),
        ({"streams": ["a", "a"]}, "plugin.kv.streams[1]: expected each name once, got 'a' again"),
        ({"streams": ["a\nb"]}, "plugin.kv.streams[0]: expected a string without control"),
        ({"streams": [""]}, "plugin.kv.streams[0]: expected a string of length >= 1"),
        ({"batch": "3"}, "plugin.kv.batch: expected an integer >= 1, got '3' (str)"),
        ({"batch": True}, "plugin.kv.batch: expected an integer >= 1, got True (boolean)"),
        ({"batch": 10_001}, "plugin.kv.batch: expected an integer <= 10000, got 10001"),
        ({"ratio": float("nan")}, "plugin.kv.ratio: expected a finite number, got nan (float)"),
        ({"tags": ["x", 1]}, "plugin.kv.tags[1]: expected a string, got 1 (integer)"),
        ({"mode": "fast", "batch": 5000}, "plugin.kv.batch: expected at most 1000 with mode"),
    ],
)
def test_problem_wording(table: dict[str, Any], expected: str) -> None:
    full = {"streams": ["a"], "path": "/x", **table}
    found = problems(full)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_not_a_table() -> None:
    assert problems(3) == ["plugin.kv: expected a table, got 3 (integer)"]  # type: ignore[arg-type]


def test_config_schema_on_a_function_and_a_class() -> None:
    calls: list[KvConfig] = []

    @config_schema(KvConfig)
    def factory(config: KvConfig) -> list[str]:
        calls.append(config)
        return list(config.streams)

    assert schema_of(factory) is KvConfig
    assert factory({"streams": ["s"], "path": "/x"}) == ["s"]
    with pytest.raises(ConfigProblems, match="path: missing"):
        factory({"streams": ["s"]})
    assert len(calls) == 1

    @config_schema(KvConfig)
    class Listener:
        def __init__(self, config: KvConfig) -> None:
            self.config = config

    assert schema_of(Listener) is KvConfig
    assert Listener({"streams": ["s"], "path": "/y"}).config.path == "/y"  # type: ignore[arg-type]
    assert schema_of(lambda table: table) is None


def test_pipeline_lists_each_key_and_never_calls_a_factory_with_a_bad_table() -> None:
    called: list[object] = []

    @config_schema(KvConfig)
    def kv(config: KvConfig) -> object:
        called.append(config)
        raise AssertionError("not reached")

    result = load_factories({"kv": kv}, {"kv": {"streams": [], "batch": -1}})
    assert called == []
    report = format_problems(result.problems)
    assert report.splitlines() == [
        "3 plugin problems:",
        "  1. in-memory[kv]: plugin.kv.streams: expected an array of length >= 1, got [] (array)",
        "  2. in-memory[kv]: plugin.kv.path: missing: the database file",
        "  3. in-memory[kv]: plugin.kv.batch: expected an integer >= 1, got -1 (integer)",
    ]


def test_docs_and_sample_come_from_the_schema() -> None:
    docs = {f.key: f for f in describe_schema(KvConfig)}
    assert list(docs) == ["streams", "path", "batch", "mode", "ratio", "tags"]
    assert docs["batch"].type == "integer" and docs["batch"].bounds == ">= 1, <= 10000"
    assert docs["batch"].default == "500" and not docs["batch"].required
    assert docs["path"].required and docs["path"].example == '"/var/lib/kv.db"'
    assert docs["mode"].type == 'one of "fast", "safe"' and docs["mode"].default == '"safe"'
    lines = sample_table(KvConfig)
    assert "# the database file (string; required)" in lines
    assert 'path = "/var/lib/kv.db"' in lines and "# batch = 500" in lines
    # The sample, as TOML, is a valid table.
    text = "plugins = ['kv']\n[cloud]\ntarget = '127.0.0.1:1'\n[plugin.kv]\n" + "\n".join(lines)
    table = config_from_text(text, Path("sample.toml")).plugin_table("kv")
    assert validate(KvConfig, table).path == "/var/lib/kv.db"


# -- the commands ---------------------------------------------------------------------------


def test_describe_a_first_party_plugin() -> None:
    code, out = run_cli("describe", "log", env=streamer_env())
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("log: streamer-log ")
    assert "streams: one listener per name in `streams`" in lines
    assert "[plugin.log]" in lines
    row = next(x for x in lines if x.startswith("max_keys "))
    assert row.split()[:3] == ["max_keys", "integer", "10"] and "(>= 0)" in row


def test_describe_unknown_plugin_and_one_without_schema(tmp_path: Path) -> None:
    code, out = run_cli("describe", "lgo", env=streamer_env())
    assert code == 2 and "lgo: not installed" in out and "log" in out
    site = tmp_path / "site"
    make_dist(site, "plug-raw", entry_points={"raw": "plug_raw:factory"},
              modules={"plug_raw": listener_module(tmp_path / "marker")})  # fmt: skip
    code, out = run_cli("describe", "raw", env=streamer_env(site))
    assert code == 0 and "declares no config schema" in out, out
    for name in ("files", "sqlite", "redis", "log", "hello"):  # every first-party plugin has one
        code, out = run_cli("describe", name, env=streamer_env())
        assert code == 0 and "declares no config schema" not in out, out


@pytest.mark.parametrize(
    "plugins",
    [["log"], ["hello"], ["files"], ["sqlite"], ["redis"], ["files", "sqlite", "redis", "log"], []],
)
def test_config_sample_is_accepted_by_check(tmp_path: Path, plugins: list[str]) -> None:
    code, out = run_cli("config", "sample", *plugins, env=streamer_env())
    assert code == 0, out
    path = tmp_path / "streamer.toml"
    path.write_text(out)
    code, report = run_cli("check", "--config", str(path), env=streamer_env())
    assert code == 0, out + report
    assert f"{path}: OK" in report


def test_new_plugin_writes_a_lint_clean_package_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "kv"
    code, out = run_cli("new-plugin", "kv", "--dir", str(target), env=streamer_env())
    assert code == 0, out
    assert (target / "src" / "streamer_kv" / "__init__.py").is_file()
    assert (target / "tests" / "test_kv.py").is_file()
    assert 'kv = "streamer_kv:create_listeners"' in (target / "pyproject.toml").read_text()
    ruff = Path(sys.executable).with_name("ruff")
    if ruff.exists():  # the generated code passes ruff's defaults, as a new project runs them
        for args in (["check", "--isolated", "--no-cache"], ["format", "--isolated", "--check"]):
            proc = subprocess.run(
                [str(ruff), *args, "src", "tests"], cwd=target, capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
    code, out = run_cli("new-plugin", "kv", "--dir", str(target), env=streamer_env())
    assert code == 2 and "exists and is not an empty directory" in out
    for bad in ("Kv", "1kv", "k-v", "class"):
        code, out = run_cli("new-plugin", bad, "--dir", str(tmp_path / "x"), env=streamer_env())
        assert code == 2 and "not a usable plugin name" in out, bad
    assert not (tmp_path / "x").exists()
