"""Build real, tiny installed distributions on disk (``.dist-info`` + modules) for plugin tests.

Entry points are then found by importlib_metadata exactly as for a pip-installed package.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import importlib_metadata

from streamer.host.plugins import DistributionLike

GROUP = "streamer.listeners"

# A module that defines a listener class and, on import, writes a marker file (so a test can
# prove whether it was imported).
LISTENER_MODULE = """
import pathlib

pathlib.Path({marker!r}).write_text("imported")


class Listener:
    def __init__(self, name):
        self.name = name

    def get_extra_args(self):
        return None

    def update(self, batch):
        return True

    def report_error(self, error):
        return None


def factory(config):
    return Listener(config.get("stream", {stream!r}))


def many(config):
    return [Listener(n) for n in config.get("streams", {streams!r})]
"""


def listener_module(marker: Path, stream: str = "s", streams: tuple[str, ...] = ()) -> str:
    return LISTENER_MODULE.format(marker=str(marker), stream=stream, streams=list(streams))


def make_dist(
    site: Path,
    dist: str,
    version: str = "1.0",
    entry_points: Mapping[str, str] | None = None,
    modules: Mapping[str, str] | None = None,
    group: str = GROUP,
) -> Path:
    """Write ``<dist>-<version>.dist-info`` (METADATA, entry_points.txt, RECORD) and the given
    top-level modules (name → source) into ``site``. Returns the .dist-info directory."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = [f"[{group}]"] + [f"{n} = {v}" for n, v in (entry_points or {}).items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    record = [f"{info.name}/{f},," for f in ("METADATA", "entry_points.txt", "RECORD")]
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        record.append(f"{module}.py,,")
    (info / "RECORD").write_text("\n".join(record) + "\n", encoding="utf-8")
    return info


def dists(*sites: Path) -> Iterable[DistributionLike]:
    """Only the distributions in ``sites`` (not the test environment's own)."""
    found: Iterable[DistributionLike] = importlib_metadata.distributions(
        path=[str(s) for s in sites]
    )
    return found
