"""``streamer new-plugin NAME``: write a ready-to-test plugin package.

The package has a src layout, the entry point in the ``streamer.listeners`` group, a config
schema, a sync listener that mirrors its stream in memory, tests that use the pytest kit against
a real local Streamer server, and a README. ``pip install -e "DIR[test]" && pytest`` passes in a
fresh virtualenv as written.
"""

from __future__ import annotations

import keyword
import os
import re
from pathlib import Path

from streamer.base.errors import StreamerError

__all__ = ["ScaffoldError", "new_plugin", "plugin_files"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class ScaffoldError(StreamerError):
    """The name is not usable or the target directory is not empty."""


def plugin_files(name: str) -> dict[str, str]:
    """Relative path -> text of every file of the package for entry-point name ``name``."""
    pkg = f"streamer_{name}"
    dist = f"streamer-{name.replace('_', '-')}"
    cls = "".join(part.capitalize() for part in name.split("_")) + "Listener"
    schema = cls.removesuffix("Listener") + "Config"
    names = sorted([cls, schema, "create_listeners"])
    sorted_all = "[" + ", ".join(f'"{n}"' for n in names) + "]"
    imports = ", ".join(names)
    return {
        "pyproject.toml": f'''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A streamer listener plugin: {name}"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["streamer>=0.2.0.dev0"]

[project.optional-dependencies]
test = ["streamer[test]"]

# streamer.toml enables the plugin by this name: plugins = ["{name}"]
[project.entry-points."streamer.listeners"]
{name} = "{pkg}:create_listeners"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
{pkg} = ["py.typed"]

[tool.pytest.ini_options]
asyncio_default_fixture_loop_scope = "function"
''',
        f"src/{pkg}/__init__.py": f'''"""{dist}: a streamer listener plugin.

``create_listeners`` is the entry point: streamer validates the ``[plugin.{name}]`` table
against :class:`{schema}` (``streamer describe {name}`` prints it) and calls the factory with
the result. The factory must not touch the disk or the network: ``streamer check`` calls it.
"""

from __future__ import annotations

import logging
from typing import Annotated

from streamer import Doc, PluginConfig, StreamNames, config_schema
from streamer.wire import DataUpdateBatch

__all__ = {sorted_all}

log = logging.getLogger("streamer.plugin.{name}")


class {schema}(PluginConfig):
    """Mirrors each stream in memory (replace this with your sink)."""

    streams: StreamNames
    max_keys: Annotated[int, Doc("the most keys a stream may hold", ge=1)] = 100_000


class {cls}:
    """One stream's listener. Sync methods run in a thread of their own, so blocking I/O is
    fine here; make a batch's effect atomic (all of it or none) in a real sink."""

    def __init__(self, name: str, config: {schema}) -> None:
        self.name = name
        self.max_keys = config.max_keys
        self.data: dict[str, bytes] = {{}}

    def get_extra_args(self) -> None:
        # A sink that persists data sends a digest here (see streamer.sink.mirror).
        return None

    def update(self, batch: DataUpdateBatch) -> bool:
        data = {{}} if batch.resync else dict(self.data)
        for u in batch.updates:
            if u.value:
                data[u.key] = u.value
            else:
                data.pop(u.key, None)  # an empty value deletes the key
        if len(data) > self.max_keys:
            n = len(data)
            raise ValueError(f"{{self.name}}: {{n}} keys, max_keys is {{self.max_keys}}")
        self.data = data  # the whole batch, or (on error) none of it
        log.debug("stream %s: %d keys", self.name, len(data))
        return True

    def report_error(self, error: BaseException) -> BaseException | None:
        # The host already logs connection errors once per attempt: say only what is yours.
        return None  # None: keep streaming (with backoff); return the error to stop

    def close(self) -> None:
        """Release what the listener holds (files, connections)."""


@config_schema({schema})
def create_listeners(config: {schema}) -> list[{cls}]:
    """Entry point ``{name}``: one listener per name in ``streams``."""
    return [{cls}(stream, config) for stream in config.streams]
''',
        f"src/{pkg}/py.typed": "",
        f"tests/test_{name}.py": f'''\
"""Tests against a real local Streamer server, with streamer's pytest kit."""

from __future__ import annotations

import asyncio

import pytest
from streamer import ConfigProblems
from streamer.host.schema import validate
from streamer.testing import ScriptedServer, run_listener
from streamer.wire import DataUpdate, DataUpdateBatch

from {pkg} import {imports}


async def test_mirrors_a_stream(streamer_server: ScriptedServer) -> None:
    (listener,) = create_listeners({{"streams": ["subscribers"]}})

    async def cloud() -> None:
        call = await streamer_server.next_call("subscribers")
        await call.push({{"alice": b"1", "bob": b"2"}}, resync=True)
        await call.push({{"bob": b""}})  # an empty value deletes a key
        await call.push({{"carol": b"3"}})

    driver = asyncio.create_task(cloud())
    error = await run_listener(
        listener, streamer_server.address, until=lambda: "carol" in listener.data
    )
    await driver
    assert error is None
    assert listener.data == {{"alice": b"1", "carol": b"3"}}
    assert streamer_server.requests[0].stream_name == "subscribers"


def test_config_problems_name_the_key() -> None:
    with pytest.raises(ConfigProblems) as info:
        bad = {{"streams": [], "max_keys": 0, "colour": 1}}
        validate({schema}, bad, where="plugin.{name}")
    text = str(info.value)
    assert "plugin.{name}.colour: unknown key" in text
    assert "plugin.{name}.streams: expected an array of length >= 1" in text
    assert "plugin.{name}.max_keys: expected an integer >= 1" in text


def test_a_batch_past_max_keys_changes_nothing() -> None:
    (listener,) = create_listeners({{"streams": ["s"], "max_keys": 1}})
    first = DataUpdateBatch(updates=[DataUpdate(key="a", value=b"1")], resync=True)
    second = DataUpdateBatch(updates=[DataUpdate(key="b", value=b"2")])
    listener.update(first)
    with pytest.raises(ValueError, match="max_keys"):
        listener.update(second)
    assert listener.data == {{"a": b"1"}}
    assert isinstance(listener, {cls})


def test_entry_point_is_installed() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="streamer.listeners") if e.name == "{name}"]
    assert ep.load() is create_listeners
''',
        "README.md": f"""# {dist}

A streamer listener plugin, written by `streamer new-plugin {name}`.

```sh
pip install -e ".[test]"     # the plugin, streamer and the pytest kit
pytest                       # tests against a real local Streamer server
streamer describe {name}      # the [plugin.{name}] table, from the schema
streamer config sample {name} > streamer.toml && streamer check --config streamer.toml
```

Enable it in `streamer.toml` with `plugins = ["{name}"]` and a `[plugin.{name}]` table.
""",
    }


def new_plugin(name: str, directory: Path | None = None) -> Path:
    """Write the package for ``name`` into ``directory`` (default ``./streamer-NAME``), which
    must not exist or be empty. Files are written 0644, directories 0755: this is source code."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"{name!r} is not a usable plugin name: lower-case letters, digits and '_', "
            "starting with a letter, at most 40 characters"
        )
    target = directory or Path.cwd() / f"streamer-{name.replace('_', '-')}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(f"{target} exists and is not an empty directory; nothing written")
    for rel, text in plugin_files(name).items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
    return target
