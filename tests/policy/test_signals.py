from __future__ import annotations

from rollbackd.policy.signals import consecutive_failures, error_ratio, failing_for, percentile, sustained, within
from tests.policy.observations import observe


def history(*oks: bool, start: float = 100.0, step: float = 1.0) -> list:
    return [observe("health", start + index * step, ok) for index, ok in enumerate(oks)]


def test_consecutive_failures_and_duration() -> None:
    observations = history(True, False, True, False, False, False)
    assert consecutive_failures(observations) == 3
    assert failing_for(observations, now=106.0) == 3.0
    assert failing_for(history(False, True), now=200.0) == 0.0


def test_sustained_needs_duration_and_two_observations() -> None:
    failing = lambda observation: not observation.ok  # noqa: E731
    assert sustained(history(True, False), failing, now=101.5, duration=0) is None  # one sample is not a trend
    assert sustained(history(True, False, False), failing, now=102.0, duration=0) == 101.0
    assert sustained(history(True, False, False), failing, now=102.0, duration=5) is None
    assert sustained(history(True, False, False), failing, now=106.0, duration=5) == 101.0


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.95) is None
    assert percentile([0.1] * 19 + [9.0], 0.95) == 0.1
    assert percentile([0.1] * 18 + [9.0, 9.0], 0.95) == 9.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_window_and_error_ratio() -> None:
    observations = history(True, False, True, False, start=0, step=10)
    assert [o.started_at for o in within(observations, now=30, seconds=15)] == [20, 30]
    assert error_ratio(observations) == 0.5
