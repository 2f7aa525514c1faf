"""The in-memory observation log: windows by start time, bounded, whatever order the wall clock gave them."""

from __future__ import annotations

from rollbackd.observation import Observation, ObservationLog


def observed(at: float, probe: str = "health") -> Observation:
    return Observation("vbrpg", probe, ok=True, started_at=at)


def test_recent_returns_the_runs_started_at_or_after_since_oldest_first() -> None:
    log = ObservationLog(max_per_probe=100, max_age=1000.0)
    for at in (10.0, 11.0, 12.0, 12.0, 13.0):
        log.append(observed(at))
    log.append(observed(12.5, probe="latency"))
    assert [entry.started_at for entry in log.recent("vbrpg", "health", since=12.0)] == [12.0, 12.0, 13.0]
    assert [entry.started_at for entry in log.recent("vbrpg", "health", since=11.5)] == [12.0, 12.0, 13.0]
    assert log.recent("vbrpg", "health", since=13.5) == []
    assert len(log.recent("vbrpg", "health")) == 5
    assert log.recent("vbrpg", "rows", since=0.0) == []


def test_after_the_wall_clock_steps_back_every_run_at_or_after_since_is_still_found() -> None:
    """Runs are in start order unless the clock stepped back; then the window is filtered run by run, so a run
    from before the step that is still inside the window is not lost."""
    log = ObservationLog(max_per_probe=100, max_age=1000.0)
    for at in (100.0, 101.0, 102.0, 50.0, 51.0, 103.0):
        log.append(observed(at))
    assert [entry.started_at for entry in log.recent("vbrpg", "health", since=101.0)] == [101.0, 102.0, 103.0]
    assert [entry.started_at for entry in log.recent("vbrpg", "health", since=51.0)] == [
        100.0,
        101.0,
        102.0,
        51.0,
        103.0,
    ]
    log.forget("vbrpg")
    log.append(observed(1.0))
    log.append(observed(2.0))
    assert [entry.started_at for entry in log.recent("vbrpg", "health", since=2.0)] == [2.0]
