"""What an answer's body must say beyond its status: a 200 with ``{"status": "degraded"}`` is not healthy.

Shared by the health probe and the verification's health item and smoke steps, so one config spelling
(``expect_json`` as JSON pointer → value, ``expect_body_contains``) means the same thing everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

UNEXPECTED_BODY = "unexpected_body"


class _Missing:
    def __repr__(self) -> str:
        return "nothing"


MISSING: Any = _Missing()


def resolve_pointer(document: Any, pointer: str) -> Any:
    """Given parsed JSON and a pointer, return the value it names, or MISSING."""
    if pointer == "":
        return document
    node = document
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node) and str(int(part)) == part:
            node = node[int(part)]
        else:
            return MISSING
    return node


def _same(actual: Any, expected: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    return bool(actual == expected)


@dataclass(frozen=True)
class BodyExpectations:
    json_values: Mapping[str, Any] = field(default_factory=dict)
    contains: str | None = None

    def __bool__(self) -> bool:
        return bool(self.json_values) or self.contains is not None

    def mismatch(self, body: bytes) -> str:
        """'' when ``body`` meets every expectation, else the first one it fails, said plainly."""
        if self.contains is not None and self.contains.encode("utf-8") not in body:
            return f"body does not contain {self.contains!r}"
        if not self.json_values:
            return ""
        try:
            document = json.loads(body)
        except ValueError:
            return "body is not JSON, expected " + ", ".join(f"{p or '(whole body)'} = {v!r}" for p, v in self.items)
        for pointer, expected in self.items:
            actual = resolve_pointer(document, pointer)
            if actual is MISSING or not _same(actual, expected):
                return f"{pointer or '(whole body)'} is {actual!r}, expected {expected!r}"
        return ""

    @property
    def items(self) -> list[tuple[str, Any]]:
        return sorted(self.json_values.items())
