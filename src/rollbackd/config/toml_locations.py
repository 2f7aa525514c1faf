"""Where a key path (``service[0].backups.keep_last``) sits in a TOML text, so config errors can name a line.

tomllib returns plain dicts without positions; this scanner reads the same text line by line and records the
first line of every table header and every ``key =`` assignment under the key path it creates. It understands
what rollbackd's config uses: ``[table]``, ``[[array.of.tables]]``, dotted keys and inline tables on one line.
It is best effort: a path it cannot place falls back to its longest placed prefix.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_\-\.\" ']+?)\s*=")
_INLINE_KEY = re.compile(r"(?:\{|,)\s*([A-Za-z0-9_\-]+)\s*=")


def _split_dotted(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def key_lines(text: str) -> dict[str, int]:
    """Given a TOML text, return {key path: 1-based line} for headers, assignments and inline-table keys."""
    lines: dict[str, int] = {}
    array_counts: dict[str, int] = {}
    current: str = ""
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if in_multiline:
            if stripped.endswith("]") or stripped.endswith('"""'):
                in_multiline = False
            continue
        if not stripped or stripped.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            current = _header_path(header.group(1) == "[[", _split_dotted(header.group(2)), array_counts)
            lines.setdefault(current, number)
            continue
        assignment = _ASSIGNMENT.match(line)
        if not assignment:
            continue
        path = _join(current, ".".join(_split_dotted(assignment.group(1))))
        lines.setdefault(path, number)
        value = line[assignment.end() :]
        for inline in _INLINE_KEY.finditer(value):
            lines.setdefault(f"{path}.{inline.group(1)}", number)
        if value.strip().startswith("[") and value.count("[") > value.count("]"):
            in_multiline = True
    return lines


def _header_path(is_array: bool, parts: list[str], array_counts: dict[str, int]) -> str:
    """Turn ``[[service.rules]]`` into ``service[2].rules[0]`` using the arrays seen so far."""
    path = ""
    for position, part in enumerate(parts):
        path = _join(path, part)
        last = position == len(parts) - 1
        if last and is_array:
            index = array_counts.get(path, -1) + 1
            array_counts[path] = index
            for stale in [key for key in array_counts if key.startswith(f"{path}[{index - 1}]")]:
                del array_counts[stale]
            path = f"{path}[{index}]"
        elif path in array_counts:
            path = f"{path}[{array_counts[path]}]"
    return path


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def line_of(text: str, key_path: str) -> int | None:
    """Return the line where ``key_path`` (or its longest placed prefix) is written, or None."""
    return line_in(key_lines(text), key_path)


def line_in(lines: dict[str, int], key_path: str) -> int | None:
    """line_of() for many key paths of one text: ``lines`` is its key_lines(), scanned once."""
    candidate = key_path
    while candidate:
        if candidate in lines:
            return lines[candidate]
        cut = max(candidate.rfind("."), candidate.rfind("["))
        candidate = candidate[:cut] if cut > 0 else ""
    return None
