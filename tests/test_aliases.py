"""Plugins written against 0.1 still import: the old module paths resolve to the new homes,
with a DeprecationWarning that names the new one (in a fresh interpreter, so nothing is cached)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamer.base.aliases import MOVED


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_a_0_1_module_path_is_its_new_module_with_a_warning(old: str, new: str) -> None:
    code = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        "assert old is new, (old, new)\n"
        "texts = [str(w.message) for w in seen if w.category is DeprecationWarning]\n"
        f"assert any({new!r} in t and {old!r} in t for t in texts), texts\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_0_1_public_names_still_import() -> None:
    code = (
        "import warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from streamer import (Listener, Client, new_streamer_client, STREAMING_INTERVAL,\n"
        "    DuplicateStreamError, StaticRegistry, Backoff, StreamObserver)\n"
        "from streamer.proto import DataUpdate, DataUpdateBatch, StreamRequest\n"
        "from streamer.sinks import MirrorListener\n"
        "from streamer.hooks import hookimpl, HookSpecs\n"
        "from streamer.client import Client as C\n"
        "from streamer.server import ReferenceServer, MemorySource\n"
        "from streamer.cli import main\n"
        "assert C is Client\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
