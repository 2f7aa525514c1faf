"""The in-memory observation log: windows by start time, bounded, whatever order the wall clock gave them."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace

import pytest

from rollbackd import observation
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


def test_a_window_handed_out_stays_as_it_was_while_the_log_moves_on() -> None:
    """The policy holds a view across awaits while new runs arrive and old ones are dropped: its windows are
    views of the log's storage, so the log never changes what they hold."""
    log = ObservationLog(max_per_probe=20, max_age=1000.0)
    for at in range(10):
        log.append(observed(float(at)))
    log.append(Observation("vbrpg", "health", ok=False, reason="timeout", started_at=9.5, inconclusive="lagged"))
    window = log.window("vbrpg", "health", since=5.0)
    assert [run.started_at for run in window.conclusive] == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert [run.started_at for run in window.inconclusive] == [9.5]
    for at in range(10, 100):  # far past max_per_probe: the oldest runs are dropped, the storage compacted
        log.append(observed(float(at)))
    assert [run.started_at for run in window.conclusive] == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert [run.started_at for run in window.conclusive[-2:]] == [8.0, 9.0]
    assert [run.started_at for run in reversed(window.conclusive)] == [9.0, 8.0, 7.0, 6.0, 5.0]
    assert len(log.recent("vbrpg", "health")) == 20
    assert list(log.window("vbrpg", "health", since=0.0).inconclusive) == []  # dropped in its turn
    assert log.latest("vbrpg", "health") == observed(99.0)


def test_a_run_that_repeats_the_one_before_shares_its_mappings_and_reads_the_same() -> None:
    """Most runs repeat the last one (same status, same counts): the log keeps one copy of equal mappings."""
    log = ObservationLog(max_per_probe=100, max_age=1000.0)
    first = Observation("vbrpg", "rows", True, values={"players:rows": 40.0}, detail={"counts": {"players": 40}})
    again = Observation("vbrpg", "rows", True, values={"players:rows": 40.0}, detail={"counts": {"players": 40}})
    changed = Observation("vbrpg", "rows", True, values={"players:rows": 41.0}, detail={"counts": {"players": 40}})
    for at, run in enumerate((first, again, changed)):
        log.append(replace(run, started_at=float(at)))
    kept = log.recent("vbrpg", "rows")
    assert kept == [replace(run, started_at=float(at)) for at, run in enumerate((first, again, changed))]
    assert kept[1].values is kept[0].values and kept[1].detail is kept[0].detail
    assert kept[2].values is not kept[1].values and kept[2].detail is kept[1].detail


def latency_values(base: float) -> dict[str, float]:
    """What a latency run of two paths reports (probes/latency.py): 7 values per path and 5 summaries."""
    values = {}
    for offset, path in enumerate(("/api/rooms", "/health")):
        for index, key in enumerate(("latency", "p50", "p95", "p99", "error_ratio", "samples", "sum")):
            values[f"{path}:{key}"] = base + offset + index / 100
    values.update({key: base + index for index, key in enumerate(("p50", "p95", "p99", "error_ratio", "latency"))})
    return values


def held_by_a_log(runs: int) -> tuple[ObservationLog, int]:
    """A log of ``runs`` latency runs, and the bytes it holds for them (each run's dict made and handed over)."""
    log = ObservationLog(max_per_probe=500, max_age=10_000.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for at in range(runs):
            log.append(Observation("vbrpg", "latency", True, values=latency_values(at / 1000), started_at=float(at)))
        return log, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_kept_run_with_many_values_reads_as_the_probe_gave_them_in_less_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log, held = held_by_a_log(300)
    with monkeypatch.context() as plain:
        plain.setattr(observation, "COMPACT_FROM", 10**6)
        _, held_as_dicts = held_by_a_log(300)
    assert held < held_as_dicts * 0.6
    given = [latency_values(at / 1000) for at in range(300)]
    kept = log.recent("vbrpg", "latency")
    assert [run.values for run in kept] == given
    assert given == [run.values for run in kept]
    assert list(kept[7].values) == list(given[7]) and list(kept[7].values.items()) == list(given[7].items())
    assert kept[7].values.get("/health:p95") == given[7]["/health:p95"] and "p99" in kept[7].values
    assert kept[7].values.get("/nowhere:p95") is None
    assert kept[7].as_dict()["values"] == given[7]
    assert json.dumps(kept[7].as_dict()["values"]) == json.dumps(given[7])


def test_values_that_are_not_all_floats_are_kept_as_given() -> None:
    log = ObservationLog()
    values: dict[str, float] = {**latency_values(1.0), "samples": 3}
    log.append(Observation("vbrpg", "latency", True, values=values, started_at=1.0))
    kept = log.latest("vbrpg", "latency")
    assert kept is not None and kept.values is values
    assert json.dumps(kept.as_dict()["values"]) == json.dumps(values)


def varied_runs(count: int) -> list[Observation]:
    """Runs as the probes make them, varied from one to the next in every way the log keeps apart: values that
    repeat, numbers that change (a latency), ints and bools among floats, other keys, no values, a failure with its
    own detail, inconclusive runs."""
    runs = []
    for index in range(count):
        at = 1000.0 + index
        kind = index % 11
        values: dict[str, float] = {"status_code": 200.0, "latency": 0.001 * (index % 4)}
        detail: dict[str, object] = {"url": "http://127.0.0.1:8000/health"}
        ok, reason, inconclusive = True, "", ""
        if kind == 3:
            values = {"status_code": 200, "latency": 0.001 * ((index - 1) % 4)}  # equal to the last run, but an int
        elif kind == 5:
            values = {}
            ok, reason, detail = False, "timeout", {"error": f"timed out after {index} s"}
        elif kind == 7:
            values = {"latency": 0.001 * ((index - 1) % 4), "status_code": 200.0}  # the last run's, in another order
        elif kind == 8:
            values = {"status_code": 503.0, "latency": 0.01, "up": True}  # type: ignore[dict-item]  # a bool
        elif kind == 9:
            inconclusive = "the daemon lagged 2.1 s"
        runs.append(Observation("vbrpg", "health", ok, reason, values, detail, at, 0.001 * index, inconclusive))
    return runs


def test_runs_read_back_as_they_were_appended_each_value_of_its_own_type() -> None:
    log = ObservationLog(max_per_probe=1000, max_age=10_000.0)
    runs = varied_runs(300)
    for run in runs:
        log.append(run)
    kept = log.recent("vbrpg", "health")
    assert kept == runs
    for run, given in zip(kept, runs, strict=True):
        assert [(key, type(value)) for key, value in run.values.items()] == [  # in order, each of its type
            (key, type(value)) for key, value in given.values.items()
        ]
        assert json.dumps(run.as_dict()) == json.dumps(given.as_dict())
    window = log.window("vbrpg", "health", since=0.0)
    assert list(window.conclusive) == [run for run in runs if not run.inconclusive]
    assert list(reversed(window.inconclusive)) == [run for run in reversed(runs) if run.inconclusive]
    assert [window.conclusive[index] for index in range(-3, 0)] == [run for run in runs if not run.inconclusive][-3:]


def test_a_run_that_differs_from_the_one_before_only_in_its_numbers_keeps_its_own() -> None:
    """The log keeps such a run as the one before's shape and its own numbers: it must not read as that one."""
    log = ObservationLog(max_per_probe=100, max_age=1000.0)
    for at, latency in enumerate((0.1, 0.2, 0.2, 0.1, 0.3)):
        log.append(
            Observation(
                "vbrpg", "health", True, values={"latency": latency, "status_code": 200.0}, started_at=float(at)
            )
        )
    assert [run.values["latency"] for run in log.recent("vbrpg", "health")] == [0.1, 0.2, 0.2, 0.1, 0.3]
    assert [run.started_at for run in log.recent("vbrpg", "health")] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert log.latest("vbrpg", "health") == Observation(
        "vbrpg", "health", True, values={"latency": 0.3, "status_code": 200.0}, started_at=4.0
    )


def test_windows_handed_out_stay_as_they_were_through_appends_and_compactions() -> None:
    """Windows taken along the way (each a view of the columns as they were) read the same runs after the log has
    appended far past its bounds, dropped their runs and moved its columns to new arrays many times."""
    log = ObservationLog(max_per_probe=40, max_age=10_000.0)
    runs = varied_runs(600)
    taken = []
    for index, run in enumerate(runs):
        log.append(run)
        if index % 37 == 0:
            window = log.window("vbrpg", "health", since=run.started_at - 30.0)
            taken.append((window, list(window.conclusive), list(window.inconclusive)))
    assert len(log.recent("vbrpg", "health")) == 40
    for window, conclusive, inconclusive in taken:
        assert list(window.conclusive) == conclusive and list(window.inconclusive) == inconclusive
        assert list(reversed(window.conclusive)) == conclusive[::-1]
        assert list(window.conclusive.since(conclusive[-1].started_at)) == conclusive[-1:]
    assert log.recent("vbrpg", "health") == runs[-40:]


def test_a_run_that_repeats_the_one_before_but_for_its_times_costs_a_few_dozen_bytes() -> None:
    """The lock probe's runs every second repeat each other: the log keeps their times and a reference each."""
    log = ObservationLog(max_per_probe=5000, max_age=100_000.0)
    values = {"held": 0.0, "held_seconds": 0.0, "wal_size_bytes": 4e6, "hot_journal": 0.0}
    detail = {"method": "proc_locks", "journal_mode": "wal", "holders": [], "wal_readers": []}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for at in range(2000):
            log.append(Observation("vbrpg", "sqlite_lock", True, "", dict(values), dict(detail), float(at), 0.002))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held / 2000 < 64
    assert log.recent("vbrpg", "sqlite_lock")[1234] == Observation(
        "vbrpg", "sqlite_lock", True, "", values, detail, 1234.0, 0.002
    )
