"""The config's validator (config/validation.py) is the one pydantic would build: the same core schema for every
class, and on a corpus of good and bad configs the same results, the same errors and the same dump.

pydantic's ``TypeAdapter`` is the reference: when a pydantic release changes how it builds a schema (a Path, a
discriminated union, a dataclass), these tests say where ours now differs.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from rollbackd.config import model
from rollbackd.config.validation import VALIDATORS, dumped, schema_of
from tests.config.test_model_without_pydantic import RICH_CONFIG

ROOT = Path(__file__).resolve().parents[2]
CLASSES = sorted(
    (
        value
        for value in vars(model).values()
        if isinstance(value, type) and issubclass(value, model._Model) and dataclasses.is_dataclass(value)
    ),
    key=lambda cls: cls.__name__,
)
# pydantic's closures, by the names of the functions of ours that do the same
PYDANTIC_FUNCTIONS = {
    "GenerateSchema._path_schema.<locals>.path_validator": "_path_validator",
    "GenerateSchema._path_schema.<locals>.ser_path": "_dumped_path",
}
# Values that every key is tried with: wrong types, empty, negative, a duration, tables and arrays where a
# scalar belongs and the other way round.
BAD_VALUES: tuple[Any, ...] = ("", "x", "5s", "0s", 0, -1, 1.5, True, [], {}, [1], {"a": 1}, ["/x"])


def comparable(schema: Any) -> Any:
    """``schema`` with what may differ and means nothing left out: refs (every schema here is inline), JSON
    schema metadata, and each function named by what it is rather than by its identity."""
    if isinstance(schema, dict):
        return {key: comparable(value) for key, value in schema.items() if key not in ("ref", "metadata")}
    if isinstance(schema, list):
        return [comparable(value) for value in schema]
    if callable(schema) and not isinstance(schema, type):
        name = getattr(schema, "__qualname__", repr(schema))
        return PYDANTIC_FUNCTIONS.get(name, name)
    return schema


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_each_config_class_gets_the_schema_pydantic_builds(cls: type) -> None:
    assert comparable(schema_of(cls)) == comparable(TypeAdapter(cls).core_schema)


def raw_configs() -> dict[str, dict[str, Any]]:
    files = {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "config").glob("*.toml"))}
    files["rich"] = RICH_CONFIG
    return {name: tomllib.loads(text) for name, text in files.items()}


def mutations(raw: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every leaf replaced by each of BAD_VALUES, every key removed, an unknown key in every table."""

    def walk(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        yield path
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, (*path, index))

    def changed(path: tuple[Any, ...], change: Any) -> Any:
        data = copy.deepcopy(raw)
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        change(parent, path[-1])
        return data

    for path in walk(raw, ()):
        if not path:
            continue
        for bad in BAD_VALUES:
            yield f"{path} = {bad!r}", changed(path, lambda parent, key, bad=bad: parent.__setitem__(key, bad))
        if isinstance(path[-1], str):
            yield f"{path} removed", changed(path, lambda parent, key: parent.pop(key))
        node = changed(path, lambda parent, key: None)
        for step in path:
            node = node[step]
        if isinstance(node, dict):
            yield f"{path}.bogus added", changed(path, lambda parent, key: parent[key].__setitem__("bogus", 1))


def outcome(validate: Any, data: Any) -> Any:
    """What validating ``data`` gives: the dumped config, or each error as plain data (an exception in a
    ``value_error``'s context as its text)."""
    try:
        config = validate(data)
    except ValidationError as error:
        return [
            (item["type"], item["loc"], item["msg"], repr(item["input"]), repr(item.get("ctx", {}).get("error", "")))
            for item in error.errors(include_url=False)
        ]
    return dict(dumped(model.Config, config))


def test_good_and_bad_configs_validate_as_pydantic_validates_them() -> None:
    reference = TypeAdapter(model.Config)
    ours = VALIDATORS.validator(model.Config)
    compared = 0
    failed = 0
    for name, raw in raw_configs().items():
        for what, data in [("as written", raw), *mutations(raw)]:
            expected = outcome(reference.validate_python, data)
            assert outcome(ours.validate_python, data) == expected, f"{name}: {what}"
            compared += 1
            failed += isinstance(expected, list)
    assert compared > 1000 and failed > compared // 2  # the corpus is mostly bad configs, and large


def test_the_dump_is_pydantics(tmp_path: Path) -> None:
    config = model.parse_config(RICH_CONFIG, tmp_path / "rollbackd.toml")
    expected = TypeAdapter(model.Config).dump_python(config, mode="json", by_alias=True)
    assert model.dump_config(config) == expected
    assert expected["service"][0]["probes"]["schema"]["every"] == "3s"  # aliases and durations, as the file has them


@dataclasses.dataclass(frozen=True, kw_only=True)  # as the config's classes are
class _Untagged:
    either: int | str = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Optional:
    maybe: int | None = None


def test_an_untagged_union_is_refused_and_an_optional_is_pydantics() -> None:
    # pydantic's smart-mode union has rules of its own that no config field needs: a new field must be tagged
    with pytest.raises(TypeError, match="untagged union"):
        schema_of(_Untagged)
    assert comparable(schema_of(_Optional)) == comparable(TypeAdapter(_Optional).core_schema)
