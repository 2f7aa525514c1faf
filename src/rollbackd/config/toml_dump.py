"""Write plain data back as TOML, so `check-config` prints a resolved config that loads again unchanged.

Only what rollbackd's config holds: tables, arrays of tables, strings, numbers, booleans, lists of scalars and
small inline tables. ``None`` values are left out (TOML has no null; absent means default).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def dumps(data: Mapping[str, Any]) -> str:
    """Return ``data`` as TOML text."""
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {key: value for key, value in data.items() if not _is_table(value) and not _is_table_array(value)}
    for key, value in scalars.items():
        if value is not None:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in data.items():
        if _is_table(value):
            lines.extend(["", f"[{'.'.join(_key(part) for part in [*path, key])}]"])
            _table(value, [*path, key], lines)
        elif _is_table_array(value):
            for item in value:
                lines.extend(["", f"[[{'.'.join(_key(part) for part in [*path, key])}]]"])
                _table(item, [*path, key], lines)


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) and any(isinstance(inner, Mapping | list) for inner in value.values())


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_key(key)} = {_value(item)}" for key, item in value.items() if item is not None)
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
