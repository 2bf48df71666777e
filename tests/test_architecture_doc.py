"""docs/architecture.md names every module of every sub-package in that sub-package's paragraph.

The 0.1 table missed five modules; the layout is only documentation if it stays complete.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "core" / "streamer"


def _paragraphs() -> dict[str, str]:
    """Sub-package name -> its paragraph (from **`streamer.NAME`** to the next blank line)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    found = {}
    for match in re.finditer(r"^\*\*`streamer\.(\w+)`\*\*(.*?)(?:\n\n|\Z)", text, re.M | re.S):
        found[match.group(1)] = match.group(2)
    return found


def test_every_module_is_named_in_its_sub_packages_paragraph() -> None:
    paragraphs = _paragraphs()
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert packages, "no sub-packages found"
    missing_packages = [p for p in packages if p not in paragraphs]
    assert missing_packages == []
    missing = []
    for package in packages:
        for module in sorted((PACKAGE / package).glob("*.py")):
            name = module.stem
            if name in ("__init__", "__main__") or name.endswith("_pb2"):
                continue
            if f"`{name}`" not in paragraphs[package] and f"`{name}." not in paragraphs[package]:
                missing.append(f"streamer.{package}.{name}")
    assert missing == []
