"""Observations as plain data: the policy is a function of them, so tests write histories down directly."""

from __future__ import annotations

from typing import Any

from rollbackd.observation import Observation


def observe(probe: str, at: float, ok: bool = True, reason: str = "", **detail: Any) -> Observation:
    values = detail.pop("values", {})
    return Observation("vbrpg", probe, ok, reason, values, detail, started_at=at, duration=0.01)
