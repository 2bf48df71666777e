"""Declared plugin configuration: a typed schema, validated before anything starts.

A plugin declares its ``[plugin.<name>]`` table as a :class:`PluginConfig` subclass next to its
factory: one annotated field per key, with its type, default, bounds and a one-line doc::

    from typing import Annotated
    from streamer.host.schema import Doc, PluginConfig, StreamNames, config_schema

    class KvConfig(PluginConfig):
        streams: StreamNames
        path: Annotated[str, Doc("the database file", examples=["/var/lib/kv.db"])]
        batch: Annotated[int, Doc("rows per transaction", ge=1)] = 500

    @config_schema(KvConfig)
    def create_listeners(config: KvConfig) -> list[KvListener]: ...

msgspec does the type and bound checks (strict: no string-to-number guessing, unknown keys
refused); this module walks the table key by key so that *every* problem is reported at once,
in the project's wording (``plugin.kv.batch: expected an integer >= 1, got 0 (integer)``), with
"did you mean" for misspelt keys and choices. ``streamer check``, ``streamer describe`` and
``streamer config sample`` read the same schema.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import msgspec
from msgspec import Meta

from streamer.base.errors import StreamerError
from streamer.base.redact import MASK, is_secret_key, redact_text

__all__ = [
    "UNIQUE",
    "Before",
    "ConfigProblems",
    "ConfigSchema",
    "Doc",
    "FieldDoc",
    "FieldProblem",
    "FrozenSchema",
    "Names",
    "PluginConfig",
    "Rule",
    "StreamNames",
    "config_schema",
    "describe_schema",
    "sample_table",
    "schema_of",
    "show_value",
    "toml_value",
    "validate",
]

C = TypeVar("C", bound="ConfigSchema | FrozenSchema")
F = TypeVar("F", bound=Callable[..., Any])


def Doc(description: str, **constraints: Any) -> Meta:
    """``Meta(description=..., **constraints)``: the one-line doc of a field, and its bounds
    (``ge``, ``le``, ``gt``, ``lt``, ``min_length``, ``max_length``, ``pattern``) and
    ``examples`` (the first is what ``streamer config sample`` writes for a required key)."""
    return Meta(description=description, **constraints)


@dataclass(frozen=True, slots=True)
class Rule:
    """A check of one field's converted value beyond its type and bounds, put in the field's
    ``Annotated[...]``: ``ok(value)`` is false for a wrong value, and ``expected`` says what
    was expected (``"host:port with a port from 1 to 65535"``), for a wrong type too."""

    expected: str
    ok: Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Before:
    """A normalization of the raw value before it is checked (``str.upper`` for log levels),
    put in the field's ``Annotated[...]``; applied to strings only."""

    normalize: Callable[[str], str]


class _Unique:
    """Marker: the items of an array must be distinct."""


UNIQUE = _Unique()


class ConfigSchema(msgspec.Struct, forbid_unknown_fields=True):
    """Base class of every declared configuration table: core sections and plugins alike.

    Fields are the table's keys. A field whose type is itself a ``ConfigSchema`` is a sub-table,
    validated with its own key path. Override :meth:`check` for rules that span fields or need
    more than a type (it runs only when every field of this table is valid on its own).
    """

    def check(self) -> Iterable[tuple[str, str]]:
        """Problems as ``(key, message)`` pairs (``""`` = the table itself); none by default."""
        return ()


class PluginConfig(ConfigSchema, kw_only=True):
    """Base class of a plugin's config schema (keyword-only fields)."""


class FrozenSchema(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """:class:`ConfigSchema`, immutable (the core sections of ``streamer.toml``). The engine
    takes either: a struct with forbidden unknown fields and a ``check()`` method."""

    def check(self) -> Iterable[tuple[str, str]]:
        """Problems as ``(key, message)`` pairs (``""`` = the table itself); none by default."""
        return ()


AnySchema = ConfigSchema | FrozenSchema


_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
_NONBLANK = r"\S"
_PATTERN_WORDS = {_PRINTABLE: "without control characters", _NONBLANK: "that is not blank"}
# A list of unique names (plugins, observers), each non-blank and printable.
Names = Annotated[tuple[Annotated[str, Meta(min_length=1, pattern=_NONBLANK)], ...], UNIQUE]
# A non-empty list of unique stream names, each printable and non-empty.
StreamNames = Annotated[
    tuple[Annotated[str, Meta(min_length=1, pattern=_PRINTABLE)], ...],
    Doc("stream names to receive, one listener each", min_length=1, examples=[["example"]]),
    UNIQUE,
]


def show_value(value: object) -> str:
    """``'abc' (str)``: the value and its TOML-ish type, shortened and redacted."""
    kind = {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "str",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)
    text = redact_text(repr(value))
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


_show = show_value


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem with one key of a table; ``key`` is the full dotted key path."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigProblems(StreamerError, ValueError):
    """Every problem found in one plugin table. A ``ValueError``, so a factory that raises it
    is reported like any bad setting; ``streamer check`` lists the problems one by one."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = str(self.problems[0])
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(
                f"  {i}. {p}" for i, p in enumerate(self.problems, 1)
            )
        super().__init__(text)


# -- validation -------------------------------------------------------------------------------


def _join(where: str, key: str) -> str:
    if not key or not all(c.isalnum() or c in "_-" for c in key):
        key = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{where}.{key}" if where else key


def _key_path(where: str, key: str) -> str:
    """``where`` joined with a ``check()`` key: ``""`` (the table), ``name`` or ``name[i]``."""
    if not key:
        return where
    name, bracket, rest = key.partition("[")
    return _join(where, name) + bracket + rest


def _hints(schema: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(schema, include_extras=True)


def validate(schema: type[C], table: Mapping[str, Any], *, where: str = "") -> C:
    """``table`` as an instance of ``schema``, or :class:`ConfigProblems` listing every problem
    (unknown keys with "did you mean", missing required keys, wrong types, values out of
    bounds, non-finite numbers, field rules, sub-tables' problems with their own key paths,
    then the schema's own :meth:`ConfigSchema.check`)."""
    problems, config = _validate(schema, table, where)
    if problems or config is None:
        raise ConfigProblems(problems)
    return config


def _validate(schema: type[C], table: object, where: str) -> tuple[list[FieldProblem], C | None]:
    if not isinstance(table, Mapping):
        return [FieldProblem(where, f"expected a table, got {_show(table)}")], None
    fields, hints = _layout(schema)
    problems: list[FieldProblem] = []
    for key in table:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(fields) or "none"
            problems.append(
                FieldProblem(_join(where, str(key)), f"unknown key (known: {known}){hint}")
            )
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in table:
            if field.required:
                problems.append(FieldProblem(_join(where, name), f"missing: {_doc(field)}"))
            continue
        found, value = _field(where, name, table[name], hints[field.name])
        problems += found
        if not found:
            values[name] = value
    if problems:
        return problems, None
    config = schema(**{fields[k].name: v for k, v in values.items()})
    own = [FieldProblem(_key_path(where, key), msg) for key, msg in config.check()]
    return own, (None if own else config)


_Layout = tuple[dict[str, msgspec.inspect.Field], dict[str, Any]]
_LAYOUTS: dict[type[Any], _Layout] = {}


def _layout(schema: type[Any]) -> _Layout:
    """A schema's fields by key, and its type hints: computed once per schema (inspecting a
    struct evaluates its annotations, which costs far more than validating a table)."""
    found = _LAYOUTS.get(schema)
    if found is None:
        info = msgspec.inspect.type_info(schema)
        assert isinstance(info, msgspec.inspect.StructType)
        found = _LAYOUTS[schema] = ({f.encode_name: f for f in info.fields}, _hints(schema))
    return found


def _field(where: str, name: str, raw: object, hint: Any) -> tuple[list[FieldProblem], Any]:
    """One key's problems (none: the converted value)."""
    key = _join(where, name)
    sub = _sub_schema(hint)
    if sub is not None:
        if not isinstance(raw, Mapping):
            return [FieldProblem(key, f"expected a table, got {_show(raw)}")], None
        return _validate(sub, raw, key)
    extras = _metadata(hint)
    for extra in extras:
        if isinstance(extra, Before) and isinstance(raw, str):
            raw = extra.normalize(raw)
    rule = next((e for e in extras if isinstance(e, Rule)), None)
    finite = f"{rule.expected} (finite)" if rule is not None else "a finite number"
    infinite = [
        FieldProblem(key + path, f"expected {finite}, got {_show(number)}")
        for path, number in _floats(raw)
        if not math.isfinite(number)
    ]
    if infinite:
        return infinite, None
    try:
        value = msgspec.convert(raw, hint, strict=True, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        if rule is not None and _TYPE_MISMATCH.match(str(exc)):
            return [FieldProblem(key, f"expected {rule.expected}, got {_shown(name, raw)}")], None
        return [_problem(where, name, raw, hint, str(exc))], None
    problems: list[FieldProblem] = []
    if UNIQUE in extras:
        seen: set[object] = set()
        for i, item in enumerate(value):
            if item in seen:
                problems.append(
                    FieldProblem(f"{key}[{i}]", f"expected each name once, got {item!r} again")
                )
            seen.add(item)
    for extra in extras:
        if isinstance(extra, Rule) and not extra.ok(value):
            problems.append(
                FieldProblem(key, f"expected {extra.expected}, got {_shown(name, raw)}")
            )
    return problems, value


def _shown(key: str, value: object) -> str:
    """:func:`show_value`, masked for a secret-named key (streamer.base.redact)."""
    return _show(MASK if is_secret_key(key) else value)


def _decode(kind: type, raw: object) -> object:
    """msgspec's hook for types it does not know: file paths (``~`` expanded; a relative path
    stays relative: the config file's directory is not known here)."""
    if kind is Path:
        if not isinstance(raw, str) or not raw.strip() or "\0" in raw:
            raise TypeError("expected a file path")
        path = Path(raw)
        if raw.startswith("~"):
            try:
                path = path.expanduser()
            except RuntimeError as exc:
                raise TypeError(f"expected a file path ({exc})") from exc
        return path
    raise TypeError(f"unsupported type {kind!r}")


def _metadata(hint: Any) -> list[Any]:
    """The ``Annotated`` extras of ``hint``, outermost first."""
    out: list[Any] = []
    while get_origin(hint) is Annotated:
        args = get_args(hint)
        out.extend(args[1:])
        hint = args[0]
    return out


def _sub_schema(hint: Any) -> type[AnySchema] | None:
    """The :class:`ConfigSchema` a field holds (``Cloud`` or ``Cloud | None``), else None."""
    hint = _strip(hint)
    options = get_args(hint) if get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        option = _strip(option)
        if isinstance(option, type) and issubclass(option, (ConfigSchema, FrozenSchema)):
            return option
    return None


def _floats(value: object, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(value, float):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _floats(item, f"{path}[{i}]")
    elif isinstance(value, Mapping):  # a table-valued field (dict[str, float])
        for key, item in value.items():
            yield from _floats(item, f"{path}.{key}")


_NOUNS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "an array",
    "object": "a table",
    "null": "nothing",
}
_TYPE_MISMATCH = re.compile(r"^Expected `([^`]+)`, got `[^`]+`$")
_CONSTRAINT = re.compile(r"^Expected `([^`]+)` (.+)$")
_AT = re.compile(r" - at `\$(.*)`$")


def _at(value: object, path: str) -> object:
    """The part of ``value`` that msgspec's ``$[1].x`` path points at."""
    for index, attr in re.findall(r"\[(\d+)\]|\.(\w+)", path):
        try:
            value = value[int(index)] if index else value[attr]  # type: ignore[index]
        except (LookupError, TypeError):
            return value
    return value


def _noun(name: str) -> str:
    # TOML has no null: "or nothing" would only confuse.
    parts = [part.strip() for part in name.split("|") if part.strip() != "null"]
    return " or ".join(_NOUNS.get(part, part) for part in parts)


def _problem(where: str, key: str, value: object, hint: Any, message: str) -> FieldProblem:
    at = _AT.search(message)
    sub_path = at.group(1) if at else ""
    message = _AT.sub("", message)
    for pattern, words in _PATTERN_WORDS.items():
        message = message.replace(f"matching regex {pattern!r}", words)
    got = _at(value, sub_path)
    if is_secret_key(key) or is_secret_key(sub_path):
        got = MASK  # a secret-named field's value is never echoed (streamer.base.redact)
    choices = _choices(hint)
    if choices is not None:
        expected = "one of " + ", ".join(repr(c) for c in choices)
        close = difflib.get_close_matches(str(got), [str(c) for c in choices], n=1)
        hint_text = f"; did you mean {close[0]!r}?" if close else ""
        text = f"expected {expected}, got {_show(got)}{hint_text}"
    elif m := _TYPE_MISMATCH.match(message):
        text = f"expected {_noun(m.group(1))}{_lower_bounds(hint, sub_path)}, got {_show(got)}"
    elif m := _CONSTRAINT.match(message):
        text = f"expected {_noun(m.group(1))} {m.group(2)}, got {_show(got)}"
    else:
        text = f"{message[:1].lower()}{message[1:]}, got {_show(got)}"
    return FieldProblem(_join(where, key) + sub_path, text)


def _lower_bounds(hint: Any, sub_path: str) -> str:
    """`` > 0``: a scalar field's lower bounds, so a wrong type still says what is expected."""
    if sub_path:
        return ""
    bounds = [
        f" {word} {getattr(m, attr)}"
        for m in _metadata(hint)
        if isinstance(m, Meta)
        for attr, word in (("gt", ">"), ("ge", ">="))
        if getattr(m, attr) is not None
    ]
    return "".join(bounds)


def _strip(hint: Any) -> Any:
    while get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    return hint


def _choices(hint: Any) -> tuple[Any, ...] | None:
    hint = _strip(hint)
    return get_args(hint) if get_origin(hint) is Literal else None


# -- declaring and finding a schema -----------------------------------------------------------


def config_schema(schema: type[C]) -> Callable[[F], F]:
    """Declare ``schema`` for a factory: the host validates the plugin's table with it before
    anything starts, and the factory is called with the validated instance instead of the raw
    table. Works on a function or a class (whose ``__init__`` then receives the instance)."""

    def decorate(factory: F) -> F:
        if isinstance(factory, type):
            cls: Any = factory
            cls.config_schema = schema
            original_init = cls.__init__

            @functools.wraps(original_init)
            def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
                if not isinstance(config, schema):
                    config = validate(schema, config)
                original_init(self, config, *args, **kwargs)

            cls.__init__ = __init__
            return factory

        @functools.wraps(factory)
        def wrapper(config: Any, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(config, schema):
                config = validate(schema, config)
            return factory(config, *args, **kwargs)

        wrapper.config_schema = schema  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def schema_of(factory: object) -> type[PluginConfig] | None:
    """The schema a factory declared with :func:`config_schema` (or a ``config_schema``
    attribute of its own), else None."""
    schema = getattr(factory, "config_schema", None)
    if isinstance(schema, type) and issubclass(schema, PluginConfig):
        return schema
    return None


# -- documentation from the schema --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldDoc:
    key: str
    type: str
    required: bool
    default: str  # TOML text of the default; "" when required
    doc: str
    bounds: str
    example: str  # TOML text written by `config sample` for a required key


def toml_value(value: object) -> str:
    """``value`` as TOML text (strings, numbers, booleans, arrays of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML text for {value!r}")


def _type_name(t: msgspec.inspect.Type) -> str:
    inspect = msgspec.inspect
    if isinstance(t, inspect.Metadata):
        return _type_name(t.type)
    if isinstance(t, (inspect.ListType, inspect.TupleType, inspect.VarTupleType)):
        item = getattr(t, "item_type", None)
        return f"array of {_type_name(item)}s" if item is not None else "array"
    if isinstance(t, inspect.LiteralType):
        return "one of " + ", ".join(toml_value(v) for v in t.values)
    if isinstance(t, inspect.UnionType):
        return " or ".join(_type_name(x) for x in t.types if not isinstance(x, inspect.NoneType))
    if isinstance(t, inspect.CustomType) and t.cls is Path:
        return "file path"
    names = {
        inspect.StrType: "string",
        inspect.IntType: "integer",
        inspect.FloatType: "number",
        inspect.BoolType: "boolean",
    }
    return names.get(type(t), type(t).__name__.removesuffix("Type").lower())


_BOUND_WORDS = (
    ("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"),
    ("min_length", "length >="), ("max_length", "length <="),
)  # fmt: skip


def _bounds(t: msgspec.inspect.Type) -> str:
    if isinstance(t, msgspec.inspect.Metadata):
        return _bounds(t.type)
    parts = [
        f"{word} {getattr(t, attr)}"
        for attr, word in _BOUND_WORDS
        if getattr(t, attr, None) is not None
    ]
    return ", ".join(parts)


def _extra(t: msgspec.inspect.Type) -> dict[str, Any]:
    if isinstance(t, msgspec.inspect.Metadata):
        return {**_extra(t.type), **(t.extra_json_schema or {})}
    return {}


def _doc(field: msgspec.inspect.Field) -> str:
    return str(_extra(field.type).get("description") or "required")


def _placeholder(t: msgspec.inspect.Type) -> object:
    inspect = msgspec.inspect
    if isinstance(t, inspect.Metadata):
        return _placeholder(t.type)
    if isinstance(t, (inspect.ListType, inspect.TupleType, inspect.VarTupleType)):
        return ["example"]
    if isinstance(t, inspect.LiteralType):
        return t.values[0]
    if isinstance(t, inspect.IntType):
        return t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else 0)
    if isinstance(t, inspect.FloatType):
        return float(t.ge) if t.ge is not None else 1.0
    if isinstance(t, inspect.BoolType):
        return False
    return "CHANGE-ME"


def describe_schema(schema: type[AnySchema]) -> list[FieldDoc]:
    """One record per key, in declaration order."""
    info = msgspec.inspect.type_info(schema)
    assert isinstance(info, msgspec.inspect.StructType)
    out = []
    for f in info.fields:
        extra = _extra(f.type)
        examples = extra.get("examples") or []
        if f.required:
            default = ""
        elif f.default_factory is not msgspec.NODEFAULT:
            default = toml_value(f.default_factory())
        elif f.default is None:
            default = "(unset)"
        else:
            default = toml_value(f.default)
        example = toml_value(examples[0] if examples else _placeholder(f.type))
        out.append(
            FieldDoc(
                key=f.encode_name,
                type=_type_name(f.type),
                required=f.required,
                default=default,
                doc=str(extra.get("description") or ""),
                bounds=_bounds(f.type),
                example=example,
            )
        )
    return out


def sample_table(
    schema: type[PluginConfig], *, overrides: Mapping[str, str] | None = None
) -> list[str]:
    """Commented TOML lines for a plugin's table: required keys with an example value that the
    schema accepts (or ``overrides[key]``), optional keys commented out at their default."""
    lines: list[str] = []
    for f in describe_schema(schema):
        what = f.type + (f", {f.bounds}" if f.bounds else "")
        lines.append(f"# {f.doc or f.key} ({what}; {'required' if f.required else 'optional'})")
        if f.required:
            lines.append(f"{f.key} = {(overrides or {}).get(f.key, f.example)}")
        elif f.default == "(unset)":
            lines.append(f"# {f.key} = {f.example}")
        else:
            lines.append(f"# {f.key} = {f.default}")
    return lines
