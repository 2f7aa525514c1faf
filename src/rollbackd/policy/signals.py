"""Rolling windows over a probe's observations: plain functions of the observation list and "now".

No state, no clock of their own: the caller passes ``now``, so tests replay any history exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from rollbackd.observation import Observation, runs_since


def consecutive_failures(observations: Sequence[Observation]) -> int:
    """How many of the newest observations failed in a row."""
    count = 0
    for observation in reversed(observations):
        if observation.ok:
            break
        count += 1
    return count


def failing_since(observations: Sequence[Observation]) -> float | None:
    """When the current run of failures began (its first observation's start), or None if the last one was ok."""
    since = None
    for observation in reversed(observations):
        if observation.ok:
            break
        since = observation.started_at
    return since


def failing_for(observations: Sequence[Observation], now: float) -> float:
    """Seconds the probe has been failing without an ok in between (0 when the newest observation is ok)."""
    since = failing_since(observations)
    return 0.0 if since is None else max(0.0, now - since)


Predicate = Callable[[Observation], bool]


def streak(observations: Sequence[Observation], predicate: Predicate) -> tuple[int, float | None]:
    """Like consecutive_failures/failing_since for any condition: (length, start) of the newest matching run."""
    return newest_streak(reversed(observations), predicate)


def newest_streak(newest_first: Iterable[Observation], predicate: Predicate) -> tuple[int, float | None]:
    """``streak`` of observations given newest first (a merge of two probes' runs, walked only as far as needed)."""
    count = 0
    since = None
    for observation in newest_first:
        if not predicate(observation):
            break
        count += 1
        since = observation.started_at
    return count, since


def within(observations: Sequence[Observation], now: float, seconds: float) -> Sequence[Observation]:
    """The observations that started in the last ``seconds`` (by bisection in a window of the log)."""
    return runs_since(observations, now - seconds)


def percentile(values: Sequence[float], quantile: float) -> float | None:
    """Nearest-rank percentile (``quantile`` in 0..1) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[rank - 1]


def error_ratio(observations: Sequence[Observation]) -> float:
    if not observations:
        return 0.0
    return sum(1 for observation in observations if not observation.ok) / len(observations)


def sustained(
    observations: Sequence[Observation], predicate: Predicate, now: float, duration: float, minimum: int = 2
) -> float | None:
    """If the newest run matching ``predicate`` has lasted ``duration`` seconds and ``minimum`` observations, return
    when it began; else None. Two observations at least, so one bad sample never counts as a trend."""
    return sustained_newest_first(reversed(observations), predicate, now, duration, minimum)


def sustained_newest_first(
    newest_first: Iterable[Observation], predicate: Predicate, now: float, duration: float, minimum: int = 2
) -> float | None:
    """``sustained`` of observations given newest first."""
    count, since = newest_streak(newest_first, predicate)
    if since is None or count < minimum or now - since < duration:
        return None
    return since
