"""Write plain data back as TOML, so `check-config` prints a resolved config that loads again unchanged.

The writing is tomli-w's (the TOML writer kept beside tomllib's reader): the hand-written writer this replaced
escaped text with ``json.dumps``, which writes a character outside the BMP (an emoji in a smoke step's JSON body)
as a surrogate pair, ``"\\ud83c\\udfb2"``, that no TOML reader accepts, so check-config rejected its own output.
``None`` values are left out first (TOML has no null; absent means default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w


def dumps(data: Mapping[str, Any]) -> str:
    """Return ``data`` as TOML text."""
    return tomli_w.dumps(_without_none(data))


def _without_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value if item is not None]
    return value
