"""Moments as the CLI prints them: ISO 8601 with an offset in JSON, local time with its zone in tables.

The daemon, the state DB and the probes keep epoch seconds (floats); only the command line turns them into text,
here, so every subcommand says a time the same way. JSON gets both: ``"at": "2026-12-01T23:55:46+00:00"`` for
people and tools that read dates, and ``"at_epoch": 1796169346.2`` for scripts that do arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

EPOCH_SUFFIX = "_epoch"
RAW_NUMBERS = frozenset({"values"})  # a probe's values stay numbers (observation.py): seconds, bytes, epochs


def is_moment_key(key: str) -> bool:
    """Whether a JSON key names a point in time (``at``, ``date``, ``start_time``, ``*_at``), not a duration."""
    return key in ("at", "date", "start_time") or key.endswith("_at")


def iso(moment: float) -> str:
    """Given epoch seconds, return ISO 8601 in UTC with its offset, to the second: 2026-12-01T23:55:46+00:00."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def with_iso_times(data: Any) -> Any:
    """Return ``data`` with every moment (epoch seconds, or an ISO string as manifests keep them) as ISO 8601 to
    the second, and the epoch beside it as ``<key>_epoch``. None, other text and a probe's ``values`` are left."""
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            epoch = _epoch_of(value) if isinstance(key, str) and is_moment_key(key) else None
            if key in RAW_NUMBERS:
                out[key] = value
            elif epoch is not None:
                out[key] = iso(epoch)
                out[key + EPOCH_SUFFIX] = epoch
            else:
                out[key] = with_iso_times(value)
        return out
    if isinstance(data, list | tuple):
        return [with_iso_times(item) for item in data]
    return data


def table_time(moment: float, *, utc: bool = False, seconds: bool = False) -> str:
    """A moment for a table: local time with its zone named (``2026-12-01 23:55 CET``), or UTC with ``utc``."""
    spelled = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    if utc:
        return time.strftime(spelled, time.gmtime(moment)) + " UTC"
    local = time.localtime(moment)
    return f"{time.strftime(spelled, local)} {zone_name(local)}"


def clock_time(moment: float, *, utc: bool = False) -> str:
    """The time of day with its zone (``23:55:46 CET``): for moments within the next hours."""
    if utc:
        return time.strftime("%H:%M:%S", time.gmtime(moment)) + " UTC"
    local = time.localtime(moment)
    return f"{time.strftime('%H:%M:%S', local)} {zone_name(local)}"


def zone_name(local: time.struct_time) -> str:
    """The zone's abbreviation (CET, UTC), else its offset (+0530) where the zone has no name."""
    name = local.tm_zone or ""
    if not name or name.lstrip("+-").isdigit():
        return time.strftime("%z", local) or "UTC"
    return name


def _epoch_of(value: object) -> float | None:
    """Epoch seconds of a number, or of an ISO 8601 string with an offset; None for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment.timestamp() if moment.tzinfo is not None else None
    return None
