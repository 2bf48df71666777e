"""The plugin kit works where plugin authors use it: a fresh venv outside this repository.

Inside the repo, the root pyproject sets ``asyncio_mode = "auto"``; a plugin's own checkout does
not, so this test copies ``examples/hello-listener`` to a temporary directory, installs
``streamer[test]`` (built from this checkout, not editable) and the example with its ``test``
extra into a new virtualenv, and runs the example's tests and ``streamer check`` there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output}"
    return output


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST", "STREAMER_"))
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def test_example_plugin_tests_pass_in_a_fresh_venv_outside_the_repo(tmp_path: Path) -> None:
    plugin = tmp_path / "hello-listener"
    shutil.copytree(
        ROOT / "examples" / "hello-listener",
        plugin,
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", ".pytest_cache"),
    )
    venv = tmp_path / "venv"
    env = _clean_env()
    # The interpreter this suite runs on, without its virtualenv's packages.
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv)], tmp_path, env)
    py = str(venv / "bin" / "python")
    _run([py, "-m", "pip", "install", "-q", f"{ROOT}[test]"], tmp_path, env)
    _run([py, "-m", "pip", "install", "-q", "-e", f"{plugin}[test]"], tmp_path, env)

    out = _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider"], plugin, env)
    assert "2 passed" in out, out
    assert "not natively supported" not in out

    config = tmp_path / "streamer.toml"
    config.write_text(
        'plugins = ["hello"]\n\n[cloud]\ntarget = "127.0.0.1:50051"\n\n'
        '[plugin.hello]\nstream = "greetings"\n'
    )
    out = _run([str(venv / "bin" / "streamer"), "check", "--config", str(config)], tmp_path, env)
    assert f"{config}: OK" in out
    assert "hello-listener[hello] 0.1.0: streams greetings" in out


def test_new_plugin_scaffold_passes_its_tests_in_a_fresh_venv(tmp_path: Path) -> None:
    """`streamer new-plugin`, then the README's path: install with the test extra, pytest,
    a sample config that enables it, `streamer check`."""
    venv = tmp_path / "venv"
    env = _clean_env()
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv)], tmp_path, env)
    py = str(venv / "bin" / "python")
    streamer = str(venv / "bin" / "streamer")
    _run([py, "-m", "pip", "install", "-q", f"{ROOT}[test]"], tmp_path, env)
    plugin = tmp_path / "streamer-kv"
    out = _run([streamer, "new-plugin", "kv", "--dir", str(plugin)], tmp_path, env)
    assert f"wrote {plugin}" in out
    _run([py, "-m", "pip", "install", "-q", "-e", f"{plugin}[test]"], tmp_path, env)
    out = _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider"], plugin, env)
    assert "4 passed" in out, out

    sample = _run([streamer, "config", "sample", "kv"], tmp_path, env)
    config = tmp_path / "streamer.toml"
    config.write_text(sample)
    out = _run([streamer, "check", "--config", str(config)], tmp_path, env)
    assert f"{config}: OK" in out and "streamer-kv[kv] 0.1.0: streams example" in out
    out = _run([streamer, "describe", "kv"], tmp_path, env)
    assert "[plugin.kv]" in out and "max_keys" in out
