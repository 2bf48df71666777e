"""The host end to end: real plugin distributions on disk (found through their entry points),
`streamer check` / `list` / `run` as subprocesses, a real reference server on loopback,
SIGTERM shutdown and SIGHUP reload."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamer.server.reference import ReferenceServer
from streamer.server.sources import MemorySource
from tests import helpers
from tests.helpers import RunningHost, run_cli, seen, streamer_env
from tests.plugin_fixtures import make_dist

SINK_MODULE = """
import json, pathlib, time

pathlib.Path({marker!r}).write_text("imported")


class Sink:
    def __init__(self, name, out):
        self.name = name
        self.out = pathlib.Path(out)

    def get_extra_args(self):
        return None

    def update(self, batch):
        line = {{"stream": self.name, "keys": sorted(u.key for u in batch.updates),
                 "resync": batch.resync}}
        with self.out.open("a") as f:
            f.write(json.dumps(line) + "\\n")
        return True

    def report_error(self, error):
        return {answer}

    def close(self):
        time.sleep(self.close_delay)
        pathlib.Path(str(self.out) + ".closed." + self.name).write_text("closed")


def factory(config):
    sinks = [Sink(s, config["out"]) for s in config["streams"]]
    for sink in sinks:
        sink.close_delay = config.get("close_delay", 0)
    return sinks


class Stuck(Sink):
    def update(self, batch):
        pathlib.Path(str(self.out) + ".stuck").write_text("in update")
        time.sleep(3600)
        return True

    def close(self):
        pathlib.Path(str(self.out) + ".closed.stuck").write_text("closed")


def stuck_factory(config):
    return [Stuck(s, config["out"]) for s in config["streams"]]
"""

BROKEN_MODULE = "import definitely_not_installed_module_xyz\n"


def sink_source(marker: Path, *, quits: bool = False) -> str:
    return SINK_MODULE.format(marker=str(marker), answer="error" if quits else "None")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A directory of real distributions: alpha, beta (same stream name as alpha's 'shared'),
    gamma (never enabled, writes a marker if imported), broken (import fails), quitter, stuck
    (its update() never returns)."""
    site = tmp_path / "site"
    markers = tmp_path / "markers"
    markers.mkdir()
    for dist, module, factory, extra in (
        ("plug-alpha", "plug_alpha", "factory", {}),
        ("plug-beta", "plug_beta", "factory", {}),
        ("plug-gamma", "plug_gamma", "factory", {}),
        ("plug-quitter", "plug_quitter", "factory", {"quits": True}),
        ("plug-stuck", "plug_stuck", "stuck_factory", {}),
    ):
        make_dist(
            site,
            dist,
            entry_points={dist.removeprefix("plug-"): f"{module}:{factory}"},
            modules={module: sink_source(markers / module, **extra)},
        )
    make_dist(
        site,
        "plug-broken",
        entry_points={"broken": "plug_broken:factory"},
        modules={"plug_broken": BROKEN_MODULE},
    )
    return site


def write_config(
    path: Path,
    target: str,
    plugins: dict[str, list[str]],
    out: Path,
    extra: dict[str, dict[str, object]] | None = None,
) -> Path:
    """Each plugin streams ``plugins[name]`` to ``out`` (+ ``extra[name]``); 3 s shutdown."""
    tables = {
        name: {"streams": streams, "out": str(out), **(extra or {}).get(name, {})}
        for name, streams in plugins.items()
    }
    return helpers.write_config(path, target, tables, streaming={"shutdown_timeout": 3.0})


# -- check / list ------------------------------------------------------------------------------


def test_check_ok_enables_by_name_and_imports_only_enabled(site: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "s.toml", "127.0.0.1:1", {"alpha": ["a1", "a2"]}, tmp_path / "o")
    code, out = run_cli("check", "--config", str(cfg), env=streamer_env(site))
    assert code == 0, out
    assert "OK" in out
    assert "plug-alpha[alpha] 1.0: streams a1, a2" in out
    assert (tmp_path / "markers" / "plug_alpha").exists()
    assert not (tmp_path / "markers" / "plug_gamma").exists()  # installed, not enabled
    assert not (tmp_path / "markers" / "plug_beta").exists()


def test_check_reports_every_problem_at_once(site: Path, tmp_path: Path) -> None:
    plugins = {"alpah": ["x"], "broken": ["y"], "alpha": ["shared"], "beta": ["shared"]}
    cfg = write_config(tmp_path / "s.toml", "127.0.0.1:1", plugins, tmp_path / "o")
    code, out = run_cli("check", "--config", str(cfg), env=streamer_env(site))
    assert code == 2, out
    assert "alpah: enabled but not installed" in out
    assert "did you mean 'alpha'?" in out
    assert "plug-broken[broken]: cannot import plug_broken:factory" in out
    assert "ModuleNotFoundError" in out
    assert "stream 'shared': claimed by plug-alpha[alpha] and plug-beta[beta]" in out
    assert "3 problems found; nothing was started" in out


def test_same_distribution_twice_on_sys_path_counts_once(site: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "s.toml", "127.0.0.1:1", {"alpha": ["a"]}, tmp_path / "o")
    code, out = run_cli("check", "--config", str(cfg), env=streamer_env(site, site))
    assert code == 0, out


def test_run_refuses_to_start_on_load_problems(site: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "s.toml", "127.0.0.1:1", {"broken": ["y"]}, tmp_path / "o")
    code, out = run_cli("run", "--config", str(cfg), env=streamer_env(site))
    assert code == 2
    assert "not started" in out and "plug-broken[broken]" in out


def test_check_config_error_names_file_and_key(site: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        'plugins = ["alpha"]\n[cloud]\ntarget = "127.0.0.1:1"\n[streaming]\nintervall = 3\n'
    )
    code, out = run_cli("check", "--config", str(cfg), env=streamer_env(site))
    assert code == 2
    assert out.startswith(f"{cfg}: NOT OK\n1 problem found; nothing was started:\n")
    assert "  1. streaming.intervall: unknown key (known: interval, " in out
    assert "did you mean 'interval'?" in out


def test_run_and_check_report_every_problem_of_the_file_at_once(site: Path, tmp_path: Path) -> None:
    """Core sections, the plugin list and the enabled plugins' tables: one numbered report,
    from `check` and from `run` (which refuses to start)."""
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        'plugins = ["log", "nosuch"]\n[cloud]\ntarget = "nocolon"\n'
        "[streaming]\nintervall = 3\nbackoff_jitter = inf\n"
        '[log]\nlevel = "loud"\n[plugin.log]\nstreams = []\n'
    )
    expected = [
        "cloud.target: expected host:port with a port from 1 to 65535, got 'nocolon' (str)",
        "streaming.intervall: unknown key",
        "streaming.backoff_jitter: expected a finite number, got inf (float)",
        "log.level: expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL', got",
        "nosuch: enabled but not installed",
        "streamer-log[log]: plugin.log.streams: expected an array of length >= 1",
    ]
    for command in ("check", "run"):
        code, out = run_cli(command, "--config", str(cfg), env=streamer_env(site))
        assert code == 2, out
        assert f"{len(expected)} problems found; nothing was started:" in out, out
        for i, text in enumerate(expected, 1):
            assert f"  {i}. {text}" in out, (command, out)


def test_list_table_and_json(site: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "s.toml", "127.0.0.1:1", {"alpha": ["a1"]}, tmp_path / "o")
    code, out = run_cli("list", "--config", str(cfg), env=streamer_env(site))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DIST", "VERSION", "ENABLED", "STATUS", "STREAMS"]
    alpha = next(line for line in lines if line.startswith("alpha"))
    assert alpha.split() == ["alpha", "plug-alpha", "1.0", "yes", "ok", "a1"]
    gamma = next(line for line in lines if line.startswith("gamma"))
    assert gamma.split()[3:5] == ["no", "disabled"]
    code, out = run_cli("list", "--config", str(cfg), "--json", env=streamer_env(site))
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["alpha"]["streams"] == ["a1"] and rows["alpha"]["status"] == "ok"
    assert not (tmp_path / "markers" / "plug_gamma").exists()


# -- run ---------------------------------------------------------------------------------------


class Running(RunningHost):
    """The host, its config file and the file its sink plugins write (``out``)."""

    cfg: Path
    out: Path

    def seen(self, stream: str, key: str) -> bool:
        return seen(self.out, stream, key)


# `streamer run` answers in a child process: poll every 50 ms for up to 15 s.
eventually = functools.partial(helpers.eventually, timeout=15.0, interval=0.05)


@pytest.fixture
async def cloud() -> AsyncIterator[tuple[ReferenceServer, MemorySource]]:
    source = MemorySource({s: {"k0": b"v0"} for s in ("a1", "a2", "b1", "q1")})
    server = ReferenceServer(source, "push")
    await server.start()
    yield server, source
    await server.stop(0)


async def start_host(
    site: Path,
    tmp_path: Path,
    server: ReferenceServer,
    plugins: dict[str, list[str]],
    extra: dict[str, dict[str, object]] | None = None,
) -> Running:
    """`streamer run` with ``plugins`` from ``site``, streaming from ``server``."""
    out = tmp_path / "out.jsonl"
    cfg = write_config(tmp_path / "s.toml", server.address, plugins, out, extra)
    host = await Running.start(cfg, tmp_path / "host.log", env=streamer_env(site))
    host.cfg, host.out = cfg, out
    return host


async def test_sigterm_stops_cleanly_and_closes_listeners(
    site: Path, tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource]
) -> None:
    server, source = cloud
    host = await start_host(site, tmp_path, server, {"alpha": ["a1", "a2"]})
    await eventually(lambda: host.seen("a1", "k0") and host.seen("a2", "k0"), "snapshots")
    source.set("a1", "k1", b"v1")
    await eventually(lambda: host.seen("a1", "k1"), "pushed change")
    host.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(host.proc.wait(), 10) == 0, host.logtext()
    for stream in ("a1", "a2"):
        assert Path(f"{host.out}.closed.{stream}").exists()
    assert "shutting down" in host.logtext()


async def test_sighup_reload_applies_difference(
    site: Path, tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource]
) -> None:
    server, source = cloud
    host = await start_host(site, tmp_path, server, {"alpha": ["a1"], "beta": ["b1"]})
    cfg, out = host.cfg, host.out
    try:
        await eventually(lambda: host.seen("a1", "k0") and host.seen("b1", "k0"), "snapshots")
        calls_a1 = sum(r.stream_name == "a1" for r in server.requests)

        # Good reload: drop beta, add quitter's stream; alpha is unchanged and must not restart.
        write_config(cfg, server.address, {"alpha": ["a1"], "quitter": ["q1"]}, out)
        host.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: host.seen("q1", "k0"), "new plugin streaming")
        await eventually(lambda: Path(f"{out}.closed.b1").exists(), "removed plugin closed")
        assert "reload applied" in host.logtext()
        source.set("a1", "k2", b"v2")
        await eventually(lambda: host.seen("a1", "k2"), "unchanged stream still live")
        assert sum(r.stream_name == "a1" for r in server.requests) == calls_a1
        assert not Path(f"{out}.closed.a1").exists()

        # Bad reload (unknown plugin): rejected, the running set keeps going.
        write_config(cfg, server.address, {"alpha": ["a1"], "nosuch": ["z"]}, out)
        host.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "reload rejected" in host.logtext(), "rejection logged")
        assert "nosuch" in host.logtext()
        # Bad reload (TOML syntax error): rejected too.
        cfg.write_text("plugins = [\n")
        host.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: host.logtext().count("reload rejected") >= 2, "2nd rejection")
        assert "invalid TOML" in host.logtext()
        # Bad reload (nothing enabled): rejected rather than stopping everything.
        write_config(cfg, server.address, {}, out)
        host.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: host.logtext().count("reload rejected") >= 3, "3rd rejection")
        assert "plugins is empty" in host.logtext()
        source.set("q1", "k3", b"v3")
        source.set("a1", "k3", b"v3")
        await eventually(lambda: host.seen("q1", "k3") and host.seen("a1", "k3"), "still live")
        assert host.proc.returncode is None
    finally:
        assert await host.stop() == 0, host.logtext()


async def test_exits_nonzero_when_every_listener_stopped_itself(
    site: Path, tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource]
) -> None:
    server, _ = cloud
    # The quitter's report_error returns the error: an unknown stream makes the server answer
    # UNAVAILABLE ("stream 'nope' does not exist"), so the listener stops itself.
    host = await start_host(site, tmp_path, server, {"quitter": ["nope"]})
    code = await asyncio.wait_for(host.proc.wait(), 15)
    assert code == 1, host.logtext()
    assert "every stream was stopped by its listener" in host.logtext()
    assert "nope (quitter)" in host.logtext()
    assert "does not exist" in host.logtext()


async def test_sigterm_with_a_stuck_update_exits_within_the_shutdown_timeout(
    site: Path, tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource]
) -> None:
    server, _ = cloud
    host = await start_host(site, tmp_path, server, {"stuck": ["a1"], "alpha": ["a2"]})
    out = host.out
    await eventually(lambda: Path(f"{out}.stuck").exists() and host.seen("a2", "k0"), "streams")
    started = time.monotonic()
    host.proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(host.proc.wait(), 20)
    elapsed = time.monotonic() - started
    assert code == 0, host.logtext()
    assert elapsed < 15, elapsed  # bounded: shutdown_timeout is 3 s; the rest is slack for CI
    log = host.logtext()
    assert "plug-stuck[stuck]: stream a1 did not stop within 3.0 s" in log
    assert Path(f"{out}.closed.a2").exists()  # the healthy plugin was closed normally
    assert not Path(f"{out}.closed.stuck").exists()  # never close() under a running update


async def test_closes_run_concurrently_and_sighup_during_shutdown_is_ignored(
    site: Path, tmp_path: Path, cloud: tuple[ReferenceServer, MemorySource]
) -> None:
    """Three close() calls of 2 s each fit the 3 s shutdown_timeout only when run together;
    a SIGHUP arriving meanwhile must not kill the process (its default action)."""
    server, _ = cloud
    streams = ["a1", "a2", "b1"]
    host = await start_host(
        site, tmp_path, server, {"alpha": streams}, {"alpha": {"close_delay": 2}}
    )
    await eventually(lambda: all(host.seen(s, "k0") for s in streams), "snapshots")
    host.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    host.proc.send_signal(signal.SIGHUP)
    code = await asyncio.wait_for(host.proc.wait(), 20)
    assert code == 0, host.logtext()
    assert "SIGHUP ignored: shutting down" in host.logtext()
    for stream in streams:
        assert Path(f"{host.out}.closed.{stream}").exists(), host.logtext()


async def test_stopping_a_plugin_whose_streams_never_began(
    site: Path,
    tmp_path: Path,
    cloud: tuple[ReferenceServer, MemorySource],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reload can stop a plugin whose stream tasks were created but have not run yet:
    remove_listener cannot reach them, so they must be cancelled, and closed normally."""
    from streamer.client.client import Client
    from streamer.client.registry import StaticRegistry
    from streamer.host.config import load_config
    from streamer.host.host import Host
    from streamer.host.plugins import LISTENERS_GROUP, load_plugins
    from tests.plugin_fixtures import dists

    server, _ = cloud
    out = tmp_path / "out.jsonl"
    cfg = write_config(tmp_path / "s.toml", server.address, {"alpha": ["a1"]}, out)
    monkeypatch.syspath_prepend(str(site))
    host = Host(load_config(cfg))
    host.client = Client(StaticRegistry(server.address))
    result = load_plugins(
        LISTENERS_GROUP,
        ["alpha"],
        {"alpha": {"streams": ["a1"], "out": str(out)}},
        list(dists(site)),
    )
    (lp,) = result.loaded
    host._start(lp, {})
    await host._stop_plugin("alpha")  # before the event loop ran the new task
    assert Path(f"{out}.closed.a1").exists()
    assert "did not stop within" not in caplog.text
    assert not out.exists()  # nothing was streamed
    await host.client.close()
