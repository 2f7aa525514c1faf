"""The daemon measuring itself (runtime/self_load.py): which failures are its own, when it counts as overloaded,
and how it sheds load. Driven by an injected monotonic clock and a fresh registry; the executor and probes are
real (threads, a probe object run through observe())."""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import CollectorRegistry

from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes.base import observe
from rollbackd.runtime.self_load import STRETCH_ORDER, MeasuredExecutor, SampleRing, SelfLoad


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_load(clock: Clock) -> tuple[SelfLoad, Metrics]:
    metrics = Metrics(CollectorRegistry())
    load = SelfLoad(metrics, clock=clock, cpu=lambda: 0.0, lag_bound=0.25, calm_after=5.0, stretch_step=10.0)
    return load, metrics


def lag_for(load: SelfLoad, clock: Clock, seconds: float, lag: float) -> None:
    """Heartbeats every 0.5 s for ``seconds``, each ``lag`` late."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now += 0.5
        load.note_lag(clock.now, lag)
        load.update(clock.now)


def test_a_run_that_started_late_or_overlapped_a_lag_is_judged_the_daemons_own() -> None:
    clock = Clock()
    load, _ = make_load(clock)
    since = clock.now
    assert load.judge(0.0, since) == ""
    assert "started 0.60s late" in load.judge(0.6, since)
    lag_for(load, clock, 1.0, 0.7)
    assert "lagged 0.70s" in load.judge(0.0, since)
    # A lag before the run began says nothing about this run.
    assert load.judge(0.0, clock.now + 0.1) == ""


def test_overload_holds_until_the_lag_has_stayed_under_the_bound_for_calm_after() -> None:
    clock = Clock()
    load, metrics = make_load(clock)
    lag_for(load, clock, 2.0, 0.01)
    assert load.holding() == "" and metrics.registry.get_sample_value("rollbackd_overloaded") == 0
    lag_for(load, clock, 1.0, 0.6)
    assert load.holding().startswith("overloaded: holding decisions")
    assert metrics.registry.get_sample_value("rollbackd_overloaded") == 1
    assert metrics.registry.get_sample_value("rollbackd_loop_lag_seconds") == 0.6
    lag_for(load, clock, 4.0, 0.01)  # under the bound, but not yet for calm_after (and the window still holds 0.6)
    assert load.overloaded
    lag_for(load, clock, 4.0, 0.01)
    assert not load.overloaded and load.holding() == ""
    assert metrics.registry.get_sample_value("rollbackd_overloaded") == 0


def test_lasting_overload_stretches_integrity_first_and_health_last_then_gives_the_intervals_back() -> None:
    clock = Clock()
    load, metrics = make_load(clock)
    for probe, interval in (("integrity", 60.0), ("health", 1.0)):
        load.register("vbrpg", probe, interval)

    def interval(probe: str) -> float | None:
        return metrics.registry.get_sample_value(
            "rollbackd_probe_interval_seconds", {"service": "vbrpg", "probe": probe}
        )

    assert (interval("integrity"), interval("health")) == (60.0, 1.0)
    assert (
        metrics.registry.get_sample_value("rollbackd_probe_inconclusive_total", {"service": "vbrpg", "probe": "health"})
        == 0
    )
    lag_for(load, clock, 5.0, 0.6)
    assert load.stretch("integrity") == 1.0  # a lag that does not last sheds nothing
    lag_for(load, clock, 6.0, 0.6)
    assert (load.stretch("integrity"), load.stretch("rows"), load.stretch("health")) == (4.0, 1.0, 1.0)
    assert interval("integrity") == 240.0
    lag_for(load, clock, 10.0 * (len(STRETCH_ORDER) - 1), 0.6)
    assert load.stretch("health") == 4.0 and interval("health") == 4.0
    lag_for(load, clock, 20.0, 0.0)  # calm after 5 s, then one probe back per step, the last stretched first
    assert load.stretch("health") == 1.0 and load.stretch("integrity") == 4.0
    lag_for(load, clock, 10.0 * len(STRETCH_ORDER), 0.0)
    assert load.level == 0 and interval("integrity") == 60.0


def test_staleness_counts_from_the_last_completed_run_against_the_interval() -> None:
    clock = Clock()
    load, metrics = make_load(clock)
    load.register("vbrpg", "health", 1.0)
    clock.now += 0.5
    load.ran("vbrpg", "health")
    clock.now += 3.5
    load.update(clock.now)
    assert (
        metrics.registry.get_sample_value("rollbackd_probe_staleness_seconds", {"service": "vbrpg", "probe": "health"})
        == 2.5
    )


def test_work_queued_for_a_worker_thread_is_the_daemons_delay_too() -> None:
    clock = Clock()
    load, metrics = make_load(clock)
    executor = MeasuredExecutor(clock, max_workers=1)
    load.executor = executor
    release = threading.Event()
    try:
        busy = executor.submit(release.wait, 10)
        queued = executor.submit(lambda: "done")
        assert executor.depth() >= 1
        clock.now += 1.0
        assert executor.oldest_wait() >= 0.99
        assert "lagged 1.00s" in load.judge(0.0, clock.now - 2.0)
        load.update(clock.now)
        assert metrics.registry.get_sample_value("rollbackd_worker_queue_depth") >= 1
        release.set()
        assert busy.result(timeout=10) is True and queued.result(timeout=10) == "done"
        assert executor.depth() == 0
    finally:
        release.set()
        executor.shutdown(wait=True)


def test_only_waits_of_jobs_started_since_the_run_began_count_against_it() -> None:
    """A job that waited 2 s for a thread long ago does not make a later run inconclusive; one that waited
    after the run began does."""
    clock = Clock()
    load, _metrics = make_load(clock)
    executor = MeasuredExecutor(clock, max_workers=1)
    load.executor = executor
    try:
        release = threading.Event()
        busy = executor.submit(release.wait, 10)
        late = executor.submit(lambda: "late")
        clock.now += 2.0
        release.set()
        assert busy.result(timeout=10) is True and late.result(timeout=10) == "late"
        clock.now += 10.0
        run_began = clock.now
        assert executor.submit(lambda: "quick").result(timeout=10) == "quick"
        assert executor.worst_wait_since(run_began) == 0.0
        assert load.judge(0.0, run_began) == ""
        assert executor.worst_wait_since(run_began - 11.0) >= 1.99  # the slow one, seen from before it began
        assert "lagged 2.00s" in load.judge(0.0, run_began - 11.0)
    finally:
        executor.shutdown(wait=True)


class FailingProbe:
    """A probe at the boundary: it reports what the test says, as a real probe's run() would."""

    name = "health"
    service = "vbrpg"
    interval = 1.0
    timeout = 1.0

    def __init__(self, ok: bool, reason: str) -> None:
        self.ok, self.reason = ok, reason

    async def run(self) -> Observation:
        return Observation(self.service, self.name, self.ok, self.reason)

    def export(self, metrics: Metrics, observation: Observation) -> None:
        return None


def test_observe_marks_only_failures_the_daemons_lag_could_cause_inconclusive() -> None:
    def lagging(late_by: float, since: float) -> str:
        return "the daemon lagged"

    def calm(late_by: float, since: float) -> str:
        return ""

    async def run(ok: bool, reason: str, judge: object) -> Observation:
        return await observe(FailingProbe(ok, reason), late_by=0.5, judge=judge)  # type: ignore[arg-type]

    assert asyncio.run(run(False, "timeout", lagging)).inconclusive == "the daemon lagged"
    assert asyncio.run(run(False, "timeout", calm)).inconclusive == ""
    assert asyncio.run(run(True, "", lagging)).inconclusive == ""  # a success is still a success
    assert asyncio.run(run(False, "corrupt", lagging)).inconclusive == ""  # a completed check's verdict
    assert asyncio.run(run(False, "timeout", None)).inconclusive == ""


def test_a_latency_measured_while_the_daemon_lagged_is_inconclusive_even_when_it_answered() -> None:
    probe = FailingProbe(True, "")
    probe.name = "latency"
    observation = asyncio.run(observe(probe, judge=lambda late_by, since: "the daemon lagged"))  # type: ignore[arg-type]
    assert observation.ok and observation.inconclusive == "the daemon lagged"


def test_status_shows_the_daemons_own_load_and_the_decisions_it_holds() -> None:
    from rollbackd.cli.status import render

    clock = Clock()
    load, _ = make_load(clock)
    load.register("vbrpg", "health", 1.0)
    lag_for(load, clock, 1.0, 0.6)
    status = {
        "daemon": {"version": "x", "pid": 1, "started_at": 0.0, "self_load": load.describe()},
        "services": {
            "vbrpg": {
                "policy": {
                    "state": "degraded",
                    "reason": "overloaded: holding decisions (health-failing)",
                    "held_while_overloaded": {"health-failing": "restart"},
                },
                "probes": {"health": {"ok": False, "reason": "timeout", "inconclusive": "the daemon lagged"}},
            }
        },
    }
    text = render(status, 10.0)
    assert "self: loop lag 0.600s" in text
    assert "overloaded: holding decisions (the daemon lags 0.60s)" in text
    assert "health FAIL timeout (inconclusive)" in text
    assert "overloaded: holding decisions: rule health-failing would restart" in text


def test_the_wait_ring_keeps_the_newest_samples_newest_first() -> None:
    ring = SampleRing(3)
    assert list(reversed(ring)) == [] and len(ring) == 0
    for at in range(5):
        ring.append((float(at), at / 10))
    assert len(ring) == 3
    assert list(reversed(ring)) == [(4.0, 0.4), (3.0, 0.3), (2.0, 0.2)]
    assert list(ring) == [(2.0, 0.2), (3.0, 0.3), (4.0, 0.4)]
