"""One exception root: every error class streamer defines derives from StreamerError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import streamer
from streamer import StreamerError


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(streamer.__path__, "streamer."):
        if info.name.endswith("__main__") or "streamer_pb2" in info.name:
            continue
        names.append(info.name)
    return names


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional extra (asyncpg, prometheus-client) is missing
            pytest.skip(f"{name}: {exc}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_error_streamer_defines_derives_from_streamer_error() -> None:
    classes = _error_classes()
    assert len(classes) >= 10  # the walk found the package's errors, not nothing
    strays = [
        f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, StreamerError)
    ]
    assert strays == []


def test_errors_keep_their_own_base_and_context(tmp_path: object) -> None:
    from streamer.host.config import ConfigError
    from streamer.host.schema import ConfigProblems
    from streamer.server.sources import UnknownStreamError

    assert issubclass(ConfigProblems, ValueError)
    assert issubclass(UnknownStreamError, LookupError)
    err = ConfigError("/etc/streamer.toml", "cloud.address", "must be host:port")
    assert isinstance(err, StreamerError)
    assert err.context() == {"path": "/etc/streamer.toml", "key": "cloud.address"}
    missing = UnknownStreamError("subs")
    assert missing.context() == {"stream": "subs"}
