"""Helpers shared by the tests that run `streamer` for real: polling until something happens, free
ports, the environment and config file for a `streamer` child process, `streamer run` with its
output in a log file, and reading what the test sink plugins wrote."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "FAST_STREAMING",
    "RunningHost",
    "eventually",
    "free_port",
    "jsonl",
    "run_cli",
    "seen",
    "streamer_env",
    "write_config",
]

_Host = TypeVar("_Host", bound="RunningHost")


async def eventually(
    predicate: Callable[[], object], what: str, timeout: float = 5.0, interval: float = 0.005
) -> None:
    """Poll ``predicate`` every ``interval`` s until it is truthy; AssertionError after
    ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def streamer_env(*pythonpath: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a `streamer` child: no STREAMER_CONFIG, PYTHONPATH set to
    ``pythonpath`` when given, plus ``extra``."""
    env = dict(os.environ)
    env.pop("STREAMER_CONFIG", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.update(extra)
    return env


# [streaming] for tests: sub-second interval and backoff, a short shutdown timeout.
FAST_STREAMING: Mapping[str, object] = {
    "interval": 0.2,
    "backoff_initial": 0.05,
    "backoff_max": 0.2,
    "shutdown_timeout": 2.0,
}


def _values(table: Mapping[str, object]) -> list[str]:
    return [f"{k} = {json.dumps(v)}" for k, v in table.items() if v is not None]


def write_config(
    path: Path,
    target: str,
    plugins: Mapping[str, Mapping[str, object]],
    cloud: Mapping[str, object] | None = None,
    *,
    streaming: Mapping[str, object | None] | None = None,
    tables: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """A streamer.toml: ``[cloud] target`` (+ ``cloud``), ``[streaming]`` (FAST_STREAMING updated
    by ``streaming``; a None value leaves that key out), one table per plugin, then ``tables``
    (e.g. ``{"metrics": {...}}``). Values are written as JSON, which is valid TOML for strings,
    numbers, booleans and lists."""
    lines = [f"plugins = {json.dumps(list(plugins))}", "", "[cloud]"]
    lines += _values({"target": target, **(cloud or {})})
    lines += ["", "[streaming]", *_values({**FAST_STREAMING, **(streaming or {})})]
    for name, table in plugins.items():
        lines += ["", f"[plugin.{name}]", *_values(table)]
    for name, table in (tables or {}).items():
        lines += ["", f"[{name}]", *_values(table)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """``python -m streamer.cli ARGS`` to completion: (exit code, stdout + stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


class RunningHost:
    """`streamer run` in a child process, its stdout and stderr going to ``log``."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def start(
        cls: type[_Host],
        cfg: Path,
        log: Path,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        append: bool = False,
    ) -> _Host:
        """``streamer run --config CFG ARGS``; ``env`` defaults to ``streamer_env()``, ``append``
        adds to ``log`` instead of starting it afresh."""
        with log.open("a" if append else "w") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "streamer.cli", "run", "--config", str(cfg), *args,
                cwd=cwd, env=streamer_env() if env is None else env,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        return cls(proc, log)

    def logtext(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (unless it already exited), then its exit code, waiting up to ``timeout`` s."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a test sink plugin appended to ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def seen(out: Path, stream: str, key: str) -> bool:
    """Whether a test sink wrote a batch of ``stream`` holding ``key`` to ``out``."""
    return any(r["stream"] == stream and key in r["keys"] for r in jsonl(out))
