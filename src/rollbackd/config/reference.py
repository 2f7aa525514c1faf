"""docs/CONFIG.md, generated from the config models: every key with its type, default, unit and description.

Types, defaults and units come from the config's dataclasses and their markers (the one source of what is
valid); the descriptions are kept here, keyed by path, and a test fails when a key has none, a description
names a key that no longer exists, or docs/CONFIG.md differs from what this module renders.

    python -m rollbackd.config.reference > docs/CONFIG.md
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic_core import SchemaSerializer

from rollbackd.config.model import Config, _as_duration, _as_size, field_types, toml_key
from rollbackd.config.reference_text import DESCRIPTIONS, SECTION_NOTES
from rollbackd.config.validation import schema_of
from rollbackd.config.validation_markers import Before, Ge, Gt, Le, Lt, MinLen

HEADER = """\
# rollbackd configuration reference

Generated from the config models by `python -m rollbackd.config.reference > docs/CONFIG.md`; a test fails when
it is stale. One TOML file (`--config PATH`, else `$ROLLBACKD_CONFIG`, else `/etc/rollbackd/rollbackd.toml`);
unknown keys are errors, every problem is reported at once with its line and key path (`rollbackd check-config`).
Durations are strings with a unit (`500ms`, `5s`, `1m`, `1h30m`, `1d`, `1w`); sizes take `B`, `KiB`, `MiB`,
`GiB` (or `KB`, `MB`, `GB`) or a number of bytes. Relative paths resolve against the service's `workdir`;
`workdir` and `daemon.state_dir` against the config file's folder. The shipped, commented example is
`config/rollbackd.toml`.
"""


@dataclass(frozen=True)
class KeyRow:
    """One config key as the reference lists it."""

    section: str  # "[daemon]", "[[service]]", "[service.control] (kind = \"systemd\")"
    path: str  # "daemon.shutdown_timeout": the DESCRIPTIONS key
    key: str
    type: str
    default: str
    unit: str


@dataclass(frozen=True)
class ConfigField:
    """One field of a config class as the reference reads it."""

    field: dataclasses.Field[Any]
    annotation: Any  # the type, its own outer ``Annotated`` markers taken off
    metadata: tuple[Any, ...]  # those markers

    def is_required(self) -> bool:
        return self.field.default is dataclasses.MISSING and self.field.default_factory is dataclasses.MISSING

    def get_default(self) -> Any:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default


def _fields(model: type[Any]) -> Iterator[ConfigField]:
    types_by_name = field_types(model)
    for field in dataclasses.fields(model):
        annotation = types_by_name[field.name]
        if get_origin(annotation) is Annotated:
            yield ConfigField(field, get_args(annotation)[0], annotation.__metadata__)
        else:
            yield ConfigField(field, annotation, ())


def rows() -> list[KeyRow]:
    """Every key of the config, in the classes' order."""
    return list(_walk(Config, "", ""))


def _walk(model: type[Any], path: str, section: str) -> Iterator[KeyRow]:
    leaves: list[KeyRow] = []
    nested: list[Iterator[KeyRow]] = []
    for info in _fields(model):
        key = toml_key(info.field)
        full = f"{path}.{key}" if path else key
        inner, _optional = _unwrap_optional(info.annotation)
        if _is_model(inner):
            nested.append(_walk(inner, full, f"[{full}]"))
        elif get_origin(inner) is list and _is_model(get_args(inner)[0]):
            nested.append(_walk(get_args(inner)[0], full, f"[[{full}]]"))
        elif _union_of_models(inner):
            for variant in get_args(inner):
                kind = next(each.field.default for each in _fields(variant) if each.field.name == "kind")
                kind_text = f'"{kind}"' if isinstance(kind, str) else _literal_values(variant, "kind")
                nested.append(_walk(variant, f"{full}.{kind_text.strip(chr(34))}", f"[{full}] (kind = {kind_text})"))
        else:
            leaves.append(KeyRow(section, full, key, _type_text(info), _default_text(info), _unit_text(info)))
    yield from leaves
    for group in nested:
        yield from group


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _union_of_models(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and all(_is_model(arg) for arg in get_args(annotation))


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) < len(get_args(annotation)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007 - built at run time
    return annotation, False


def _literal_values(model: type[Any], field: str) -> str:
    return " | ".join(f'"{value}"' for value in get_args(field_types(model)[field]))


def _metadata(info: ConfigField) -> list[Any]:
    """The field's constraints and validators, also those inside ``X | None`` and ``list[X]``."""
    found = list(info.metadata)
    stack: list[Any] = [info.annotation]
    while stack:
        annotation = stack.pop()
        if get_origin(annotation) is Annotated:
            found.extend(annotation.__metadata__)
            stack.append(get_args(annotation)[0])
        else:
            stack.extend(get_args(annotation))
    return found


def _kind(info: ConfigField) -> str:
    for item in _metadata(info):
        if isinstance(item, Before) and item.func is _as_duration:
            return "duration"
        if isinstance(item, Before) and item.func is _as_size:
            return "size"
    return ""


def _type_text(info: ConfigField) -> str:
    kind = _kind(info)
    inner, optional = _unwrap_optional(info.annotation)
    text = kind or _annotation_text(inner)
    limits = [_limit_text(item) for item in _metadata(info)]
    limits = [limit for limit in limits if limit]
    if kind or "> 0" in limits:
        limits = [limit for limit in limits if limit != ">= 0"]
    if limits and get_origin(inner) is not list:
        text += f" ({', '.join(dict.fromkeys(limits))})"
    return text


def _annotation_text(annotation: Any) -> str:
    if get_origin(annotation) is Annotated:
        return _annotation_text(get_args(annotation)[0])
    if get_origin(annotation) is Literal:
        return " | ".join(f'"{value}"' for value in get_args(annotation))
    if get_origin(annotation) is list:
        return f"list of {_annotation_text(get_args(annotation)[0])}"
    if get_origin(annotation) is dict:
        key, value = get_args(annotation)
        value_text = "any" if value is Any else _annotation_text(value)
        return f"table of {_annotation_text(key)} → {value_text}"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if annotation in names:
        return names[annotation]
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _limit_text(item: Any) -> str:
    for limit, sign in ((Ge, ">="), (Gt, ">"), (Le, "<="), (Lt, "<")):
        if isinstance(item, limit):
            return f"{sign} {item.value}"
    if isinstance(item, MinLen):
        return f"at least {item.min_length}"
    return ""


def _default_text(info: ConfigField) -> str:
    if info.is_required():
        return "required"
    default = info.get_default()
    if default is None:
        return "unset"
    annotation: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    value = SchemaSerializer(schema_of(annotation)).to_python(default, mode="json")
    return f"`{_toml_value(value)}`"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + "}"
    return str(value)


def _unit_text(info: ConfigField) -> str:
    return {"duration": "seconds, as `5s`, `1h`", "size": "bytes, as `512MiB`"}.get(_kind(info), "")


def render() -> str:
    """Return docs/CONFIG.md's text."""
    lines = [HEADER]
    section = None
    for row in rows():
        if row.section != section:
            section = row.section
            title = section or "top level"
            lines += ["", f"## `{title}`" if section else f"## {title}", ""]
            note = SECTION_NOTES.get(section)
            if note:
                lines += [note, ""]
            lines += ["| key | type | default | unit | description |", "|---|---|---|---|---|"]
        description = DESCRIPTIONS.get(row.path, "").replace("|", "\\|")
        cells = [f"`{row.key}`", row.type.replace("|", "\\|"), row.default.replace("|", "\\|"), row.unit, description]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
