"""What the repository says about itself is true (issue 11, "Small truths"): the systemd unit's
shutdown default, the documents the code cites, the package data, the architecture document's
backoff claim, a registry's repr, and no public API that nothing uses."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest

import streamer.host.plugins
from streamer.client.client import Client, new_streamer_client
from streamer.client.registry import MagmaRegistry, StaticRegistry
from streamer.host.config import StreamingConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_systemd_unit_states_the_real_shutdown_default() -> None:
    unit = (ROOT / "examples/systemd/streamer.service").read_text()
    (stated,) = re.findall(r"shutdown_timeout \((\d+(?:\.\d+)?) s by default\)", unit)
    assert float(stated) == StreamingConfig().shutdown_timeout


def test_documents_cited_by_the_code_exist() -> None:
    cited = set()
    for source in (ROOT / "core/streamer").rglob("*.py"):
        cited |= {(source, m) for m in re.findall(r"[\w./-]+\.md\b", source.read_text())}
    assert cited  # the check sees something
    missing = [(str(s.relative_to(ROOT)), doc) for s, doc in cited if not (ROOT / doc).exists()]
    assert missing == []


def test_package_data_globs_match_files() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = project["tool"]["setuptools"]["package-data"]["streamer"]
    empty = [glob for glob in data if not list((ROOT / "core/streamer").glob(glob))]
    assert empty == []


def test_architecture_doc_states_the_channel_backoff_the_registry_sets() -> None:
    options = StaticRegistry("127.0.0.1:1", max_reconnect_backoff=20.0).options
    assert options["grpc.max_reconnect_backoff_ms"] == 1000
    assert options["grpc.min_reconnect_backoff_ms"] == 100
    text = " ".join((ROOT / "docs/architecture.md").read_text().split())
    assert "starts at 0.1 s and is capped at 1 s" in text
    assert "reconnect backoff is capped at the same value" not in text


def test_magma_registry_prints_as_itself(tmp_path: Path) -> None:
    yml = tmp_path / "control_proxy.yml"
    yml.write_text(
        "cloud_address: cloud.test\ncloud_port: 443\nlocal_port: 8443\n"
        "proxy_cloud_connections: true\n"
    )
    assert repr(MagmaRegistry(yml)).startswith("MagmaRegistry(")
    assert repr(StaticRegistry("127.0.0.1:1")).startswith("StaticRegistry(")


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (streamer.host.plugins, "PluginLoadError"),
        (streamer.host.plugins.LoadResult, "raise_for_problems"),
    ],
)
def test_unused_public_api_is_gone(owner: object, name: str) -> None:
    assert not hasattr(owner, name)


def test_client_has_one_signature_and_no_executor() -> None:
    assert "executor" not in inspect.signature(Client).parameters
    assert new_streamer_client is Client
