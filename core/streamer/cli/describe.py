"""``streamer describe PLUGIN`` and ``streamer config sample [PLUGIN...]``: a plugin's
configuration, documented from the schema it declares (see :mod:`streamer.host.schema`)."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass

from streamer.base.errors import StreamerError
from streamer.cli.tables import table
from streamer.host.plugins import LISTENERS_GROUP, Plugin, Problem, find_plugins, import_plugin
from streamer.host.schema import PluginConfig, StreamNames, describe_schema, sample_table, schema_of

__all__ = ["DescribeError", "Described", "describe", "find_schema", "format_description", "sample"]


class DescribeError(StreamerError):
    """A plugin name that is not installed, or whose factory cannot be imported."""


@dataclass(frozen=True, slots=True)
class Described:
    plugin: Plugin
    summary: str
    schema: type[PluginConfig] | None


def _summary(plugin: Plugin) -> str:
    import importlib_metadata

    try:
        meta = importlib_metadata.distribution(plugin.dist).metadata
    except importlib_metadata.PackageNotFoundError:
        return ""
    return str(meta.get("Summary") or "")


def find_schema(name: str, group: str = LISTENERS_GROUP) -> Described:
    """Import the plugin ``name`` (enabled or not) and read the schema of its factory."""
    plugins = {p.name: p for p in find_plugins(group)}
    plugin = plugins.get(name)
    if plugin is None:
        have = ", ".join(sorted(plugins)) or "none"
        raise DescribeError(
            f"{name}: not installed in entry-point group {group!r} (installed: {have})"
        )
    factory = import_plugin(plugin)
    if isinstance(factory, Problem):
        raise DescribeError(str(factory))
    return Described(plugin, _summary(plugin), schema_of(factory))


def describe(name: str) -> str:
    return format_description(find_schema(name))


def format_description(d: Described) -> str:
    p = d.plugin
    lines = [f"{p.name}: {p.dist} {p.version} (factory {p.value})"]
    if d.summary:
        lines.append(f"  {d.summary}")
    if d.schema is None:
        lines.append(
            f"{p.display} declares no config schema: its factory reads [plugin.{p.name}] itself; "
            "see the plugin's documentation"
        )
        return "\n".join(lines)
    doc = (d.schema.__doc__ or "").strip().split("\n\n")[0]
    if doc and not doc.startswith(("Base class", f"{d.schema.__name__}(")):
        lines.append(f"  {' '.join(doc.split())}")
    fields = describe_schema(d.schema)
    hints = typing.get_type_hints(d.schema, include_extras=True)
    if any(hints.get(f.key) is StreamNames for f in fields):
        lines.append("streams: one listener per name in `streams`")
    lines.append("")
    lines.append(f"[plugin.{p.name}]")
    rows = [("KEY", "TYPE", "DEFAULT", "DOC")]
    for f in fields:
        doc_text = f.doc + (f" ({f.bounds})" if f.bounds else "")
        rows.append((f.key, f.type, "required" if f.required else f.default, doc_text))
    lines += table(rows, free_last=True)
    return "\n".join(lines)


def sample(names: Sequence[str], *, target: str = "127.0.0.1:50051") -> str:
    """A commented streamer.toml enabling ``names`` (every installed plugin with a schema when
    empty) that ``streamer check`` accepts as it is."""
    if not names:
        found = sorted(find_plugins(LISTENERS_GROUP), key=lambda p: p.name)
        described = [find_schema(p.name) for p in found]
        described = [d for d in described if d.schema is not None]
    else:
        described = [find_schema(n) for n in dict.fromkeys(names)]
        missing = [d.plugin.display for d in described if d.schema is None]
        if missing:
            raise DescribeError(
                f"{', '.join(missing)}: declares no config schema; no sample can be written"
            )
    enabled = [d.plugin.name for d in described]
    out = [
        "# streamer.toml - written by `streamer config sample`; `streamer check` accepts it.",
        "# Every key: docs/config.md. Plugins enabled here, by entry-point name:",
        "plugins = [" + ", ".join(f'"{n}"' for n in enabled) + "]",
        "",
        "[cloud]",
        "# The cloud's Streamer service (host:port). Plaintext is allowed to loopback only;",
        "# for a remote cloud set root_ca (and client_cert/client_key for mTLS).",
        f'target = "{target}"',
    ]
    used: set[str] = set()
    for d in described:
        assert d.schema is not None
        overrides = {}
        hints = typing.get_type_hints(d.schema, include_extras=True)
        for f in describe_schema(d.schema):
            if f.required and (hints.get(f.key) is StreamNames or f.key == "streams"):
                # Each stream may have one listener only: keep the sample's names distinct.
                names_ = _unique_streams(f.example, d.plugin.name, used)
                overrides[f.key] = "[" + ", ".join(f'"{n}"' for n in names_) + "]"
        out += [
            "",
            f"# {d.plugin.display} {d.plugin.version}" + (f": {d.summary}" if d.summary else ""),
        ]
        out.append(f"[plugin.{d.plugin.name}]")
        out += sample_table(d.schema, overrides=overrides)
    return "\n".join(out) + "\n"


def _unique_streams(example: str, plugin: str, used: set[str]) -> list[str]:
    import json

    try:
        names = [str(n) for n in json.loads(example)]
    except ValueError:
        names = ["example"]
    out = []
    for n in names:
        candidate = n if n not in used else f"{n}-{plugin}"
        while candidate in used:
            candidate += "-1"
        used.add(candidate)
        out.append(candidate)
    return out
