"""Durations and byte sizes as people write them in a config file ("500ms", "1h30m", "512MiB").

Parsed once at load so the rest of the code only sees seconds (float) and bytes (int).
"""

from __future__ import annotations

import re

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Given "5s", "500ms" or "1h30m", return seconds. Raise ValueError naming the accepted form."""
    compact = text.strip().replace(" ", "")
    position = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not compact or position != len(compact):
        raise ValueError(
            f"{text!r} is not a duration: expected a number with a unit (ms, s, m, h, d, w), "
            "e.g. '500ms', '5s', '1h30m'"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """Return the shortest config spelling of a duration, so printed configs load back unchanged."""
    if seconds == 0:
        return "0s"
    milliseconds = round(seconds * 1000)
    if milliseconds % 1000:
        return f"{milliseconds}ms"
    remaining = milliseconds // 1000
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(text: str) -> int:
    """Given "512MiB", "2GB" or "4096", return bytes. Raise ValueError naming the accepted form."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size: expected a number with an optional unit, e.g. '512MiB', '2GB'")
    unit = (match.group(2) or "b").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def format_size(size: int) -> str:
    """Return a size in the largest binary unit that divides it exactly (config spelling)."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def humanize_age(seconds: float) -> str:
    """Return "3m", "2h", "5d": how long ago, for status lines that must stay one line."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def human_size(size: float) -> str:
    """Return a size for people, in the largest binary unit under 1024 of it: "80.6 MiB", "512 B"."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # not reached: the loop returns at TiB


def human_duration(seconds: float) -> str:
    """Return a duration for people: "12 ms", "1.25 s", "2m5s" (a probe's latency, a step's time)."""
    if seconds <= 0:
        return "0 s"
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    return format_duration(round(seconds))
