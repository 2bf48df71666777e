"""Observer hooks: pluggy specs, isolation of failing observers, entry-point observers."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamer import Backoff, StaticRegistry, new_streamer_client
from streamer.client.events import Decision, StreamState
from streamer.host.checks import load_hooks, load_observers
from streamer.host.config import config_from_text
from streamer.host.observers import LoggingObserver, PluggyObserver, hookimpl, make_plugin_manager
from streamer.host.plugins import find_observers
from streamer.testing import ScriptedServer
from streamer.wire import DataUpdate, DataUpdateBatch
from tests.helpers import run_cli, streamer_env
from tests.listeners import Recorder, RecordingSleep
from tests.plugin_fixtures import dists, make_dist

# Every test runs a sync listener in its own thread and an async one on the event loop.
pytestmark = pytest.mark.usefixtures("listener_path")


class Collector:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def streamer_stream_started(self, stream: str) -> None:
        self.events.append(("started", stream))

    @hookimpl
    def streamer_update_done(self, duration: float, verdict: bool | None) -> None:
        # Implementations may take any subset of the arguments.
        self.events.append(("update_done", verdict))

    @hookimpl
    def streamer_error_reported(self, error: BaseException, decision: Decision) -> None:
        self.events.append(("error", (type(error).__name__, decision)))

    @hookimpl
    def streamer_stream_stopped(self, stream: str, error: BaseException | None) -> None:
        self.events.append(("stopped", error))


class Exploding:
    @hookimpl
    def streamer_stream_started(self, stream: str) -> None:
        raise RuntimeError("observer bug")

    @hookimpl
    def streamer_update_done(self) -> None:
        raise RuntimeError("observer bug")


async def test_failing_observer_is_logged_and_others_still_see_events(
    streamer_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    pm = make_plugin_manager()
    collector = Collector()
    pm.register(Exploding(), "exploding")
    pm.register(collector, "collector")
    client = new_streamer_client(
        StaticRegistry(streamer_server.address),
        observer=PluggyObserver(pm),
        sleep=RecordingSleep(),
        backoff=Backoff(jitter=0.0),
    )
    listener = Recorder(verdicts=[True, ValueError("bad")])
    task = asyncio.create_task(client.stream(listener))
    call = await streamer_server.next_call()
    await call.push(DataUpdateBatch(updates=[DataUpdate(key="a", value=b"1")]))
    await call.push(DataUpdateBatch(updates=[DataUpdate(key="b", value=b"2")]))
    await streamer_server.next_call()
    client.remove_listener(listener)
    await task
    await client.close()
    assert collector.events == [
        ("started", "s1"),
        ("update_done", True),
        ("update_done", None),
        ("error", ("ValueError", Decision.CONTINUE)),
        ("stopped", None),
    ]
    assert "observer 'exploding' failed in streamer_stream_started (stream 's1')" in caplog.text
    assert "observer 'exploding' failed in streamer_update_done" in caplog.text


def test_logging_observer_one_info_line_per_meaningful_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    obs = LoggingObserver({"s": "files"})
    batch = DataUpdateBatch(updates=[DataUpdate(key="secret-key", value=b"secret-value")])
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):  # a poll stream's normal cycle
            obs.streamer_state_changed("s", StreamState.CONNECTING)
            obs.streamer_state_changed("s", StreamState.STREAMING)
            obs.streamer_batch_received("s", batch)
            obs.streamer_state_changed("s", StreamState.WAITING)
        obs.streamer_error_reported("s", ConnectionError("down"), Decision.CONTINUE, "call failed")
        obs.streamer_state_changed("s", StreamState.STREAMING)
        obs.streamer_stream_stopped("s", None)
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.getMessage() for r in info] == [
        "stream s: streaming",
        "stream s: ConnectionError: down; listener decided to continue",
        "stream s: streaming",
        "stream s: stopped",
    ]
    assert {r.name for r in info} == {"streamer.plugin.files"}
    assert "secret-value" not in caplog.text  # values never logged, not even at DEBUG


def hook_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str, **classes: str
) -> Path:
    """A site on sys.path with one distribution (``module`` with ``_`` as ``-``) whose
    ``streamer.hooks`` entry points name ``classes`` of ``module`` (not imported yet)."""
    site = tmp_path / "site"
    make_dist(
        site,
        module.replace("_", "-"),
        entry_points={name: f"{module}:{cls}" for name, cls in classes.items()},
        modules={module: source},
        group="streamer.hooks",
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, module, raising=False)
    return site


OBSERVER_MODULE = """
from streamer.host.observers import hookimpl

SEEN = []


class Audit:
    def __init__(self, config):
        self.prefix = config.get("prefix", "")

    @hookimpl
    def streamer_stream_started(self, stream):
        SEEN.append(self.prefix + stream)
"""


def test_observers_from_entry_points_enabled_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = hook_site(
        tmp_path, monkeypatch, "audit_hook", OBSERVER_MODULE, audit="Audit", other="Missing"
    )
    config = config_from_text(
        'hooks = ["audit"]\n[hook.audit]\nprefix = "x-"\n', tmp_path / "streamer.toml"
    )
    loaded, problems = load_hooks(config, list(dists(site)))
    assert problems == []
    ((plugin, obs),) = loaded
    assert plugin.display == "audit-hook[audit]"
    pm = make_plugin_manager()
    pm.register(obs)
    PluggyObserver(pm).stream_started("s1")
    assert obs.prefix == "x-"
    import audit_hook  # type: ignore[import-not-found]

    assert audit_hook.SEEN == ["x-s1"]

    bad = config_from_text('hooks = ["other", "audi"]\n', tmp_path / "streamer.toml")
    _, problems = load_hooks(bad, list(dists(site)))
    text = "\n".join(str(p) for p in problems)
    assert "audi: enabled but not installed" in text and "did you mean 'audit'" in text
    assert "audit-hook[other]: cannot import audit_hook:Missing" in text


def test_observers_group_and_key_and_a_plugin_in_both_groups_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`streamer.observers` entry points enabled with `observers` / `[observer.NAME]`; a
    distribution that declares the same name in both groups (to support old and new hosts)
    is one observer, not a conflict."""
    site = tmp_path / "site"
    for group in ("streamer.observers", "streamer.hooks"):
        make_dist(
            site / group,
            "audit-both",
            entry_points={"audit": "audit_both:Audit"},
            modules={"audit_both": OBSERVER_MODULE},
            group=group,
        )
    make_dist(site / "new", "only-new", entry_points={"fresh": "audit_both:Audit"},
              group="streamer.observers")  # fmt: skip
    monkeypatch.syspath_prepend(str(site / "streamer.hooks"))
    monkeypatch.delitem(sys.modules, "audit_both", raising=False)
    everything = list(dists(site / "streamer.observers", site / "streamer.hooks", site / "new"))
    found = find_observers(everything)
    assert [(p.name, p.dist, p.group) for p in found] == [
        ("audit", "audit-both", "streamer.observers"),
        ("fresh", "only-new", "streamer.observers"),
    ]
    config = config_from_text(
        'observers = ["audit", "fresh"]\n[observer.audit]\nprefix = "y-"\n',
        tmp_path / "streamer.toml",
    )
    loaded, problems = load_observers(config, everything)
    assert problems == []
    assert [(p.name, obs.prefix) for p, obs in loaded] == [("audit", "y-"), ("fresh", "")]


TYPO_MODULE = """
from streamer.host.observers import hookimpl


class Typo:
    def __init__(self, config):
        pass

    @hookimpl
    def streamer_stream_stoped(self, stream):
        pass


class ExtraArg:
    def __init__(self, config):
        pass

    @hookimpl
    def streamer_stream_started(self, stream, colour):
        pass
"""


def test_observer_with_unknown_hook_or_argument_is_a_load_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = hook_site(tmp_path, monkeypatch, "typo_hook", TYPO_MODULE, typo="Typo", extra="ExtraArg")
    config = config_from_text('hooks = ["typo", "extra"]\n', tmp_path / "streamer.toml")
    loaded, problems = load_hooks(config, list(dists(site)))
    assert loaded == []
    text = "\n".join(str(p) for p in problems)
    assert "typo-hook[typo]: not a valid observer" in text
    assert "streamer_stream_stoped" in text
    assert "typo-hook[extra]: not a valid observer" in text
    assert "colour" in text


def test_describe_error_keeps_the_receive_limit_advice() -> None:
    import grpc

    from streamer.client.stream import StreamRpcError
    from streamer.host.observers import describe_error

    err = StreamRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        details="Received message larger than max (5012 vs. 1000)",
        stream="s1",
    )
    text = describe_error(err)
    assert text.startswith("RPC failed: RESOURCE_EXHAUSTED: Received message larger than max")
    assert "receive limit of 1000 bytes" in text and "max_receive_message_mb" in text


def test_deprecated_hooks_key_warns_in_check_and_at_start(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "audit-old", entry_points={"audit": "audit_old:Audit"},
              modules={"audit_old": OBSERVER_MODULE}, group="streamer.hooks")  # fmt: skip
    cfg = tmp_path / "streamer.toml"
    body = '[cloud]\ntarget = "127.0.0.1:1"\n[plugin.log]\nstreams = ["s"]\n'
    cfg.write_text('plugins = ["log"]\nhooks = ["audit"]\n' + body)
    code, out = run_cli("check", "--config", str(cfg), env=streamer_env(site))
    assert code == 0, out
    assert f"warning: {cfg}: hooks: deprecated key; write observers = ['audit'] instead" in out
    assert "observer audit-old[audit]" in out
    code, out = run_cli("check", "--config", str(cfg), "--json", env=streamer_env(site))
    assert "hooks: deprecated key" in out
    # At start: the same warning in the log, then the host runs until it is stopped.
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "run", "--config", str(cfg)],
        env=streamer_env(site),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "hooks: deprecated key; write observers = ['audit'] instead" in first, first
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    cfg.write_text('plugins = ["log"]\nobservers = ["audit"]\nhooks = ["audit"]\n' + body)
    code, out = run_cli("run", "--config", str(cfg), env=streamer_env(site))
    assert (
        code == 2 and "hooks: expected observers or its deprecated spelling hooks, got both" in out
    )
