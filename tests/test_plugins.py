"""Plugin discovery and loading against real .dist-info directories on sys.path."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.cli.tables import format_plugins
from streamer.host.plugins import (
    LoadedPlugin,
    Plugin,
    Problem,
    build,
    check_stream_names,
    find_plugins,
    format_problems,
    load,
    load_factories,
    load_plugins,
    plugin_rows,
    rows_to_json,
    select,
)

try:  # tests/ as a package (rootdir on sys.path) or as a plain directory (pytest's prepend)
    from tests.plugin_fixtures import GROUP, dists, listener_module, make_dist
except ModuleNotFoundError:
    from plugin_fixtures import GROUP, dists, listener_module, make_dist  # type: ignore[no-redef]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory on sys.path; modules imported from it are forgotten afterwards."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    before = set(sys.modules)
    yield path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(path) in str(
            sys.modules[name].__file__
        ):
            del sys.modules[name]


def _plugin(name: str = "p", dist: str = "d", value: str = "m:f", version: str = "1") -> Plugin:
    return Plugin(name, dist, version, value, GROUP)


class _L:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_extra_args(self) -> None:
        return None

    def update(self, batch: object) -> bool:
        return True

    def report_error(self, error: BaseException) -> BaseException | None:
        return None


# --- find -------------------------------------------------------------------------------------


def test_find_reads_entry_points_without_importing(site: Path, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    make_dist(
        site,
        "files-plugin",
        "2.0",
        {"files": "sp_files:factory"},
        {"sp_files": listener_module(marker)},
    )
    plugins = find_plugins(GROUP, dists(site))
    assert plugins == (Plugin("files", "files-plugin", "2.0", "sp_files:factory", GROUP),)
    assert plugins[0].display == "files-plugin[files]"
    assert not marker.exists()


def test_find_ignores_other_groups(site: Path) -> None:
    make_dist(site, "hooky", "1", {"audit": "x:y"}, group="streamer.hooks")
    assert find_plugins(GROUP, dists(site)) == ()
    assert [p.name for p in find_plugins("streamer.hooks", dists(site))] == ["audit"]


def test_same_distribution_twice_on_path_counts_once(tmp_path: Path) -> None:
    for where in ("a", "b"):
        make_dist(tmp_path / where, "My_Plugin", "1.0", {"mine": "m:f"})
    # Different spelling of the same distribution name (PEP 503) is still one distribution.
    make_dist(tmp_path / "c", "my-plugin", "1.0", {"mine": "m:f"})
    plugins = find_plugins(GROUP, dists(tmp_path / "a", tmp_path / "b", tmp_path / "c"))
    assert len(plugins) == 1
    selected, problems = select(plugins, ["mine"])
    assert len(selected) == 1 and problems == ()


def test_order_is_deterministic(tmp_path: Path) -> None:
    make_dist(tmp_path / "a", "zeta", "1", {"b": "m:f", "a": "m:g"})
    make_dist(tmp_path / "b", "alpha", "1", {"b": "m:f", "c": "m:g"})
    forward = find_plugins(GROUP, dists(tmp_path / "a", tmp_path / "b"))
    backward = find_plugins(GROUP, dists(tmp_path / "b", tmp_path / "a"))
    assert forward == backward
    assert [(p.name, p.dist) for p in forward] == [
        ("a", "zeta"),
        ("b", "alpha"),
        ("b", "zeta"),
        ("c", "alpha"),
    ]


def test_broken_distributions_are_skipped(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "good", "1", {"good": "m:f"})
    empty = make_dist(site, "no-metadata", "1", {"a": "m:f"})
    (empty / "METADATA").write_text("")
    no_version = make_dist(site, "no-version", "1", {"nv": "m:f"})
    (no_version / "METADATA").write_text("Metadata-Version: 2.1\nName: no-version\n")
    plugins = find_plugins(GROUP, dists(site))
    assert [(p.name, p.version) for p in plugins] == [("good", "1"), ("nv", "")]


def test_default_discovery_uses_sys_path(site: Path) -> None:
    make_dist(site, "on-path-dist", "1", {"on_path_plugin_xyz": "m:f"})
    assert "on_path_plugin_xyz" in {p.name for p in find_plugins(GROUP)}


# --- select -----------------------------------------------------------------------------------


def test_unknown_name_lists_installed_and_suggests() -> None:
    plugins = (_plugin("files"), _plugin("redis"))
    selected, problems = select(plugins, ["fiels"])
    assert selected == ()
    (problem,) = problems
    assert problem.subject == "fiels"
    assert "installed: files, redis" in problem.message
    assert "did you mean 'files'?" in problem.message
    assert "streamer.listeners" in problem.message


def test_unknown_name_with_nothing_installed() -> None:
    _, (problem,) = select((), ["files"])
    assert "installed: none" in problem.message and "did you mean" not in problem.message


def test_two_distributions_claiming_one_name(tmp_path: Path) -> None:
    make_dist(tmp_path / "a", "dist-a", "1", {"x": "ma:f"})
    make_dist(tmp_path / "b", "dist-b", "1", {"x": "mb:f"})
    selected, problems = select(find_plugins(GROUP, dists(tmp_path / "a", tmp_path / "b")), ["x"])
    assert selected == ()
    (problem,) = problems
    assert "dist-a[x]" in str(problem) and "dist-b[x]" in str(problem)
    assert {p.dist for p in problem.plugins} == {"dist-a", "dist-b"}


def test_conflict_on_a_disabled_name_is_not_a_problem() -> None:
    plugins = (_plugin("x", "a"), _plugin("x", "b"), _plugin("y", "c"))
    selected, problems = select(plugins, ["y"])
    assert [p.name for p in selected] == ["y"] and problems == ()


def test_two_versions_of_one_distribution() -> None:
    _, (problem,) = select((_plugin("x", "d", version="1"), _plugin("x", "d", version="2")), ["x"])
    assert "two versions" in problem.message
    assert "d 1[x]" in problem.message and "d 2[x]" in problem.message


def test_select_keeps_enabled_order() -> None:
    plugins = (_plugin("a"), _plugin("b"), _plugin("c"))
    selected, _ = select(plugins, ["c", "a", "c"])
    assert [p.name for p in selected] == ["c", "a"]


# --- load -------------------------------------------------------------------------------------


def test_enable_by_name_loads_and_passes_table(site: Path, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    make_dist(
        site,
        "files-plugin",
        "1",
        {"files": "lp_files:factory"},
        {"lp_files": listener_module(marker)},
    )
    result = load_plugins(GROUP, ["files"], {"files": {"stream": "subscriberdb"}}, dists(site))
    assert result.ok, format_problems(result.problems)
    assert marker.exists()
    ((plugin, listener),) = result.listeners
    assert plugin.display == "files-plugin[files]"
    assert listener.name == "subscriberdb"


def test_no_table_means_empty_dict() -> None:
    seen: list[object] = []

    def factory(config: dict[str, object]) -> _L:
        seen.append(config)
        return _L("s")

    assert isinstance(build(_plugin(), factory, None), LoadedPlugin)
    assert seen == [{}]


def test_factory_gets_a_copy_of_the_table() -> None:
    table = {"nested": {"k": 1}}

    def factory(config: dict[str, dict[str, int]]) -> _L:
        config["nested"]["k"] = 2
        return _L("s")

    build(_plugin(), factory, table)
    assert table == {"nested": {"k": 1}}


def test_not_enabled_is_not_imported(site: Path, tmp_path: Path) -> None:
    on, off = tmp_path / "on", tmp_path / "off"
    make_dist(site, "on-dist", "1", {"on": "ni_on:factory"}, {"ni_on": listener_module(on, "a")})
    make_dist(
        site, "off-dist", "1", {"off": "ni_off:factory"}, {"ni_off": listener_module(off, "b")}
    )
    result = load_plugins(GROUP, ["on"], {}, dists(site))
    assert result.ok
    assert on.exists()
    assert not off.exists()
    assert "ni_off" not in sys.modules


def test_import_error_names_plugin_and_exception(site: Path) -> None:
    make_dist(
        site,
        "broken-dist",
        "1",
        {"broken": "ie_broken:factory"},
        {"ie_broken": "import no_such_module_xyz\n"},
    )
    (problem,) = load_plugins(GROUP, ["broken"], {}, dists(site)).problems
    assert problem.subject == "broken-dist[broken]"
    assert "ModuleNotFoundError" in problem.message and "no_such_module_xyz" in problem.message
    assert isinstance(problem.exception, ModuleNotFoundError)
    assert "ie_broken.py:1" in problem.message


def test_missing_attribute_is_an_import_problem(site: Path) -> None:
    make_dist(site, "attr-dist", "1", {"a": "ma_mod:nope"}, {"ma_mod": "x = 1\n"})
    (problem,) = load_plugins(GROUP, ["a"], {}, dists(site)).problems
    assert "attr-dist[a]" in str(problem) and "AttributeError" in problem.message


def test_sys_exit_at_import_is_a_problem(site: Path) -> None:
    make_dist(site, "exit-dist", "1", {"e": "se_mod:f"}, {"se_mod": "raise SystemExit(3)\n"})
    (problem,) = load_plugins(GROUP, ["e"], {}, dists(site)).problems
    assert isinstance(problem.exception, SystemExit)


def test_factory_error(site: Path) -> None:
    source = "def factory(config):\n    raise ValueError('dir is required')\n"
    make_dist(site, "fe-dist", "1", {"fe": "fe_mod:factory"}, {"fe_mod": source})
    (problem,) = load_plugins(GROUP, ["fe"], {}, dists(site)).problems
    assert str(problem).startswith("fe-dist[fe]: factory raised ValueError: dir is required")
    assert isinstance(problem.exception, ValueError)


def test_invalid_listener_object(site: Path) -> None:
    source = """
    class Half:
        name = ""
        def update(self, batch):
            return True
    def factory(config):
        return Half()
    """
    make_dist(site, "half-dist", "1", {"half": "il_mod:factory"}, {"il_mod": source})
    (problem,) = load_plugins(GROUP, ["half"], {}, dists(site)).problems
    assert problem.subject == "half-dist[half]"
    assert "Half" in problem.message
    assert "'name' must be a non-empty str" in problem.message
    assert "missing method get_extra_args()" in problem.message


def test_listener_whose_attributes_raise() -> None:
    class Angry:
        @property
        def name(self) -> str:
            raise RuntimeError("no name yet")

    problem = build(_plugin(), lambda c: [Angry()], None)
    assert isinstance(problem, Problem)
    assert "cannot be inspected: RuntimeError: no name yet" in problem.message


def test_not_callable_factory() -> None:
    problem = build(_plugin(), 42, None)
    assert isinstance(problem, Problem) and "expected a callable factory" in problem.message


def test_async_factory_is_rejected() -> None:
    async def factory(config: dict[str, object]) -> _L:
        return _L("s")

    problem = build(_plugin(), factory, None)
    assert isinstance(problem, Problem) and "synchronous" in problem.message


def test_factory_returning_several_listeners(site: Path, tmp_path: Path) -> None:
    make_dist(
        site, "many-dist", "1", {"many": "fm_mod:many"}, {"fm_mod": listener_module(tmp_path / "m")}
    )
    result = load_plugins(GROUP, ["many"], {"many": {"streams": ["a", "b", "c"]}}, dists(site))
    assert result.ok
    assert [listener.name for _, listener in result.listeners] == ["a", "b", "c"]
    assert result.loaded[0].stream_names == ("a", "b", "c")


def test_generator_factory_and_errors_while_iterating() -> None:
    def good(config: dict[str, object]) -> Iterator[_L]:
        yield _L("a")
        yield _L("b")

    def bad(config: dict[str, object]) -> Iterator[_L]:
        yield _L("a")
        raise RuntimeError("boom")

    loaded = build(_plugin(), good, None)
    assert isinstance(loaded, LoadedPlugin) and loaded.stream_names == ("a", "b")
    problem = build(_plugin(), bad, None)
    assert isinstance(problem, Problem) and "RuntimeError: boom" in problem.message


def test_empty_and_mixed_iterables() -> None:
    empty = build(_plugin(), lambda c: [], None)
    assert isinstance(empty, Problem) and "no listeners" in empty.message
    mixed = build(_plugin(), lambda c: [_L("a"), object()], None)
    assert isinstance(mixed, Problem) and "listener #2 (object)" in mixed.message
    text = build(_plugin(), lambda c: "abc", None)
    assert isinstance(text, Problem) and "returned str" in text.message


def test_load_single_plugin_function(site: Path, tmp_path: Path) -> None:
    make_dist(
        site,
        "one",
        "1",
        {"one": "lo_mod:factory"},
        {"lo_mod": listener_module(tmp_path / "m", "x")},
    )
    (plugin,) = find_plugins(GROUP, dists(site))
    loaded = load(plugin, None)
    assert isinstance(loaded, LoadedPlugin) and loaded.stream_names == ("x",)


# --- stream names -----------------------------------------------------------------------------


def test_duplicate_stream_across_distributions(site: Path, tmp_path: Path) -> None:
    make_dist(
        site,
        "dist-a",
        "1",
        {"pa": "ds_a:factory"},
        {"ds_a": listener_module(tmp_path / "a", "subscriberdb")},
    )
    make_dist(
        site,
        "dist-b",
        "1",
        {"pb": "ds_b:factory"},
        {"ds_b": listener_module(tmp_path / "b", "subscriberdb")},
    )
    result = load_plugins(GROUP, ["pa", "pb"], {}, dists(site))
    (problem,) = result.problems
    text = str(problem)
    assert "dist-a[pa]" in text and "dist-b[pb]" in text and "'subscriberdb'" in text
    assert not result.ok


def test_duplicate_stream_within_one_plugin() -> None:
    loaded = LoadedPlugin(_plugin("p", "d"), (_L("s"), _L("s")))
    (problem,) = check_stream_names([loaded])
    assert "d[p] and d[p]" in str(problem) and "'s'" in str(problem)
    assert problem.plugins == (loaded.plugin,)


def test_stream_check_is_not_fooled_by_order() -> None:
    # stevedore's groupby over an unsorted list misses non-adjacent duplicates.
    loaded = [
        LoadedPlugin(_plugin("a", "d1"), (_L("x"),)),
        LoadedPlugin(_plugin("b", "d2"), (_L("y"),)),
        LoadedPlugin(_plugin("c", "d3"), (_L("x"),)),
    ]
    (problem,) = check_stream_names(loaded)
    assert "d1[a] and d3[c]" in str(problem)


# --- everything at once -----------------------------------------------------------------------


def test_all_problems_reported_together(site: Path, tmp_path: Path) -> None:
    make_dist(
        site,
        "good",
        "1",
        {"good": "at_good:factory"},
        {"at_good": listener_module(tmp_path / "g", "dup")},
    )
    make_dist(
        site,
        "dup-dist",
        "1",
        {"dup": "at_dup:factory"},
        {"at_dup": listener_module(tmp_path / "d", "dup")},
    )
    make_dist(
        site,
        "broken",
        "1",
        {"broken": "at_broken:factory"},
        {"at_broken": "raise ImportError('nope')\n"},
    )
    make_dist(
        site,
        "bad-factory",
        "1",
        {"bad": "at_bad:factory"},
        {"at_bad": "def factory(config):\n    raise KeyError('dir')\n"},
    )
    make_dist(site, "claim-1", "1", {"twice": "m:f"})
    make_dist(site, "claim-2", "1", {"twice": "m:f"})
    enabled = ["good", "dup", "broken", "bad", "twice", "gods"]
    result = load_plugins(GROUP, enabled, {}, dists(site))
    subjects = [p.subject for p in result.problems]
    assert subjects == [
        "twice",
        "gods",
        "broken[broken]",
        "bad-factory[bad]",
        "stream 'dup'",
    ]
    assert [lp.plugin.name for lp in result.loaded] == ["good", "dup"]
    report = format_problems(result.problems)
    assert report.startswith("5 plugin problems:")
    assert "did you mean 'good'?" in report


def test_format_problems_empty() -> None:
    assert format_problems(()) == "no plugin problems"


def test_load_factories_in_memory() -> None:
    result = load_factories({"a": lambda c: _L("s"), "b": lambda c: [_L("s"), _L("t")]})
    assert [p.subject for p in result.problems] == ["stream 's'"]
    assert "in-memory[a] and in-memory[b]" in str(result.problems[0])


# --- listing ----------------------------------------------------------------------------------


def test_plugin_rows_table_and_json(site: Path, tmp_path: Path) -> None:
    make_dist(
        site,
        "files-plugin",
        "1.2",
        {"files": "pr_files:many"},
        {"pr_files": listener_module(tmp_path / "f", streams=("a", "b"))},
    )
    make_dist(
        site,
        "redis-plugin",
        "0.3",
        {"redis": "pr_redis:factory"},
        {"pr_redis": listener_module(tmp_path / "r")},
    )
    make_dist(
        site,
        "broken",
        "1",
        {"broken": "pr_broken:factory"},
        {"pr_broken": "raise ImportError('nope')\n"},
    )
    plugins = find_plugins(GROUP, dists(site))
    enabled = ["files", "broken", "ghost"]
    unloaded = plugin_rows(plugins, enabled)
    assert [(r.name, r.status) for r in unloaded] == [
        ("broken", "not loaded"),
        ("files", "not loaded"),
        ("redis", "disabled"),
        ("ghost", "missing"),
    ]
    result = load_plugins(GROUP, enabled, {}, dists(site))
    rows = plugin_rows(plugins, enabled, result)
    by_name = {r.name: r for r in rows}
    assert by_name["files"].status == "ok" and by_name["files"].streams == ("a", "b")
    assert by_name["files"].dist == "files-plugin" and by_name["files"].version == "1.2"
    assert by_name["broken"].status == "error" and "ImportError" in by_name["broken"].problems[0]
    assert by_name["redis"].status == "disabled" and not by_name["redis"].enabled
    assert by_name["ghost"].status == "missing" and "not installed" in by_name["ghost"].problems[0]

    table = format_plugins(rows).splitlines()
    assert table[0].split() == ["NAME", "DIST", "VERSION", "ENABLED", "STATUS", "STREAMS"]
    assert any(
        line.split()[:6] == ["files", "files-plugin", "1.2", "yes", "ok", "a,"] for line in table
    )
    assert any(line.startswith("    ! broken[broken]") for line in table)

    data = json.loads(rows_to_json(rows))
    assert data[1] == {
        "name": "files",
        "dist": "files-plugin",
        "version": "1.2",
        "enabled": True,
        "status": "ok",
        "streams": ["a", "b"],
        "problems": [],
    }
    assert data[3]["dist"] is None


def test_modules_do_not_import_grpc() -> None:
    code = (
        "import streamer.host.plugins, streamer.host.config, sys; "
        "assert 'grpc' not in sys.modules, 'grpc imported'; "
        "assert 'google.protobuf' not in sys.modules, 'protobuf imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
