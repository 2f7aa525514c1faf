"""The daemon measuring itself: is it the sick one?

A daemon starved of CPU (a noisy neighbour, a backup job, too many services on too small a box) sees its own
probes time out on its own late event loop, and without this module it would restart healthy services for it.
``SelfLoad`` measures the daemon's own delay, from which the rest decides:

- **loop lag**: a heartbeat task sleeps a fixed interval on the monotonic clock and records how late it woke;
- **worker wait**: how long blocking work (SQLite checks, backups) queued for a thread of the loop's default
  executor (``asyncio.to_thread`` goes there) before it started, and how many jobs wait now;
- **probe staleness**: per probe, how long past its interval its last completed run is;
- **CPU**: the daemon's CPU time per second of wall time.

From these it answers three questions: was this probe run taken while the daemon lagged (``judge``: the run's
failure is then *inconclusive*), may the policy act now (``holding``, ``calm``), and how much longer than
configured should each probe wait between runs (``stretch``: load is shed from the expensive, slow-moving checks
first, health last, and given back once the lag is gone).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Reversible
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from rollbackd.metrics import Metrics

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

HEARTBEAT = 0.5  # seconds between heartbeat wake-ups
LAG_BOUND = 0.25  # a delay of the daemon's own past this makes a failed run inconclusive and the daemon overloaded
LAG_WINDOW = 2.0  # seconds of heartbeats the overload test looks back over
CALM_AFTER = 5.0  # seconds the delay must stay under the bound before the daemon counts as calm again
STRETCH_STEP = 10.0  # seconds of lasting overload (or calm) per step of stretching (or restoring) intervals
STRETCH_FACTOR = 4.0  # a stretched probe waits this many times its configured interval, no more
# Which probe gives up its schedule first: the expensive checks of slow-moving facts first, health last.
STRETCH_ORDER = ("integrity", "rows", "schema", "latency", "sqlite_lock", "process", "health")
HISTORY = 120.0  # seconds of lag samples kept (a probe run longer than this is judged on its newest part)
WAITS_KEPT = 4096  # the executor's newest job waits kept (a few minutes' worth at 20 services)


class SampleRing(Reversible[tuple[float, float]]):
    """The newest ``size`` (at, value) samples in two float arrays: 16 bytes a sample where a deque of tuples
    held ~110 (a tuple and two floats), ~450 KiB once the executor's 4096 waits are in."""

    __slots__ = ("_at", "_count", "_next", "_size", "_value")

    def __init__(self, size: int) -> None:
        self._at = array("d", bytes(8 * size))
        self._value = array("d", bytes(8 * size))
        self._size = size
        self._next = 0  # where the next sample goes
        self._count = 0

    def append(self, sample: tuple[float, float]) -> None:
        self._at[self._next], self._value[self._next] = sample
        self._next = (self._next + 1) % self._size
        self._count = min(self._count + 1, self._size)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[tuple[float, float]]:
        """Oldest first."""
        return reversed(list(reversed(self)))

    def __reversed__(self) -> Iterator[tuple[float, float]]:
        """Newest first."""
        for back in range(1, self._count + 1):
            index = (self._next - back) % self._size
            yield self._at[index], self._value[index]


class MeasuredExecutor(ThreadPoolExecutor):
    """The loop's default executor, noting when each job was queued and when a thread picked it up: the time a
    job waited for a thread is the daemon's delay too (a full pool eats a SQLite check's timeout as surely as a
    blocked loop)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_workers: int | None = None) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="rollbackd-worker")
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = itertools.count()
        self._queued: dict[int, float] = {}
        self.waits = SampleRing(WAITS_KEPT)  # (started at, seconds waited)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        token = next(self._tokens)
        with self._lock:
            self._queued[token] = self._clock()

        def started() -> T:
            with self._lock:  # the clock read under the lock: ``waits`` stays in start order (worst_wait_since)
                now = self._clock()
                queued_at = self._queued.pop(token, now)
                self.waits.append((now, now - queued_at))
            return fn(*args, **kwargs)

        return super().submit(started)

    def depth(self) -> int:
        """Jobs waiting for a thread now."""
        with self._lock:
            return len(self._queued)

    def worst_wait_since(self, since: float) -> float:
        """The longest wait of the jobs that started at or after ``since`` (0 when none did). Newest first,
        stopping at the first older one: judging a run must not cost a walk over the last 4096 jobs."""
        with self._lock:
            return _worst_since(self.waits, since)

    def oldest_wait(self) -> float:
        """How long the longest-queued job has waited so far (0 when none waits)."""
        now = self._clock()
        with self._lock:
            return max((now - at for at in self._queued.values()), default=0.0)


@dataclass
class _ProbeClock:
    interval: float
    last_done: float  # monotonic time of the last completed run (registration time before the first)
    gauge: Any = None  # its rollbackd_probe_staleness_seconds child, looked up once
    exported: float | None = None  # the value the gauge holds

    def staleness(self, now: float, stretch: float) -> float:
        return max(0.0, now - self.last_done - self.interval * stretch)


class SelfLoad:
    """The daemon's own load, measured; see the module docstring. ``clock`` is monotonic seconds (the event
    loop's clock), ``cpu`` the process's CPU seconds: both injected so tests drive them."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
        wall: Callable[[], float] = time.time,
        heartbeat: float = HEARTBEAT,
        lag_bound: float = LAG_BOUND,
        calm_after: float = CALM_AFTER,
        stretch_step: float = STRETCH_STEP,
        stretch_factor: float = STRETCH_FACTOR,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.cpu = cpu
        self.wall = wall
        self.calm_at = 0.0  # wall time the last overload ended: timing evidence from before it is stale
        self.heartbeat = heartbeat
        self.lag_bound = lag_bound
        self.calm_after = calm_after
        self.stretch_step = stretch_step
        self.stretch_factor = stretch_factor
        self.executor: MeasuredExecutor | None = None
        self.lags: deque[tuple[float, float]] = deque()  # (woke at, seconds late)
        self.overloaded_since: float | None = None
        self.calm_since: float | None = None
        self.level = 0  # how many probes of STRETCH_ORDER run stretched
        self.level_changed_at = clock()
        self.cpu_ratio = 0.0
        self._expected: float | None = None  # when the heartbeat should wake next (None: not sleeping)
        self._probes: dict[tuple[str, str], _ProbeClock] = {}
        self._calm = asyncio.Event()
        self._calm.set()
        self._last_cpu: tuple[float, float] | None = None
        metrics.overloaded.set(0)

    # Measuring

    def install_executor(self, loop: asyncio.AbstractEventLoop) -> MeasuredExecutor:
        """Make a measured executor the loop's default one (``asyncio.to_thread`` and ``run_in_executor(None)``)."""
        self.executor = MeasuredExecutor(self.clock)
        loop.set_default_executor(self.executor)
        return self.executor

    async def run(self) -> None:
        """The heartbeat: sleep a fixed interval, note how late the wake-up came, update the verdicts."""
        while True:
            self._expected = self.clock() + self.heartbeat
            await asyncio.sleep(self.heartbeat)
            now = self.clock()
            lag = max(0.0, now - self._expected)
            self._expected = None
            self.note_lag(now, lag)
            self.update(now)

    def note_lag(self, now: float, lag: float) -> None:
        self.lags.append((now, lag))
        while self.lags and self.lags[0][0] < now - HISTORY:
            self.lags.popleft()

    def delay_since(self, since: float) -> float:
        """The daemon's worst own delay since ``since`` (monotonic): heartbeat lateness, including a heartbeat
        overdue right now, and the wait of blocking work for a worker thread."""
        now = self.clock()
        worst = _worst_since(self.lags, since)
        if self._expected is not None:
            worst = max(worst, now - self._expected)
        if self.executor is not None:
            worst = max(worst, self.executor.oldest_wait())
            worst = max(worst, self.executor.worst_wait_since(since))
        return worst

    def judge(self, late_by: float, since: float) -> str:
        """Why a failed probe run that started ``late_by`` seconds after its schedule, at ``since`` (monotonic),
        and ended now proves nothing about the service: '' when the daemon kept its own time."""
        if late_by > self.lag_bound:
            return f"the run started {late_by:.2f}s late (the daemon was overloaded)"
        delay = self.delay_since(since)
        if delay > self.lag_bound:
            return f"the daemon itself lagged {delay:.2f}s while the run went on"
        return ""

    def register(self, service: str, probe: str, interval: float) -> None:
        """A probe now scheduled: its staleness counts from now, its interval is exported."""
        gauge = self.metrics.probe_staleness_seconds.labels(service=service, probe=probe)
        self._probes[(service, probe)] = _ProbeClock(interval, self.clock(), gauge)
        self.metrics.probe_inconclusive.labels(service=service, probe=probe).inc(0)
        self._export_interval(service, probe)

    def forget(self, service: str) -> None:
        for key in [key for key in self._probes if key[0] == service]:
            del self._probes[key]

    def ran(self, service: str, probe: str) -> None:
        """A run of this probe completed (whatever it found)."""
        entry = self._probes.get((service, probe))
        if entry is not None:
            entry.last_done = self.clock()

    def staleness(self, now: float) -> dict[tuple[str, str], float]:
        """Per (service, probe): seconds its last completed run is overdue against its (stretched) interval."""
        return {key: entry.staleness(now, self.stretch(key[1])) for key, entry in self._probes.items()}

    # Deciding

    @property
    def overloaded(self) -> bool:
        return self.overloaded_since is not None

    def update(self, now: float) -> None:
        """After each heartbeat: the overload state (entered at once, left only after ``calm_after`` under the
        bound), the stretch level, and the metrics."""
        recent = self.delay_since(now - LAG_WINDOW)
        if recent > self.lag_bound:
            self.calm_since = None
            if self.overloaded_since is None:
                self.overloaded_since = now
                self.level_changed_at = now
                self._calm.clear()
                log.warning(
                    "overloaded: the daemon itself lags %.2fs (bound %.2fs): holding decisions; failures it "
                    "measures now are inconclusive",
                    recent,
                    self.lag_bound,
                )
        elif self.overloaded_since is not None:
            self.calm_since = self.calm_since if self.calm_since is not None else now
            if now - self.calm_since >= self.calm_after:
                log.warning("no longer overloaded after %.0fs: decisions resume", now - self.overloaded_since)
                self.overloaded_since = None
                self.calm_at = self.wall()
                self.level_changed_at = now
                self._calm.set()
        self._restretch(now)
        self._export(now, recent)

    def _restretch(self, now: float) -> None:
        if now - self.level_changed_at < self.stretch_step:
            return
        if self.overloaded and self.level < len(STRETCH_ORDER):
            self.level += 1
            self.level_changed_at = now
            if self._export_intervals(STRETCH_ORDER[self.level - 1]):
                log.warning(
                    "still overloaded: %s probes now run every %g× their interval",
                    STRETCH_ORDER[self.level - 1],
                    self.stretch_factor,
                )
        elif not self.overloaded and self.level > 0:
            self.level -= 1
            self.level_changed_at = now
            if self._export_intervals(STRETCH_ORDER[self.level]):
                log.info("load is gone: %s probes back to their configured interval", STRETCH_ORDER[self.level])

    def stretch(self, probe: str) -> float:
        """The factor ``probe``'s configured interval is stretched by now (1 when not)."""
        return self.stretch_factor if probe in STRETCH_ORDER[: self.level] else 1.0

    def holding(self) -> str:
        """Why the policy must not act on timing evidence now ('' when it may)."""
        if self.overloaded_since is None:
            return ""
        return f"overloaded: holding decisions (the daemon lags {self.delay_since(self.clock() - LAG_WINDOW):.2f}s)"

    def fresh_since(self) -> float:
        """Wall time from which timing evidence counts: the end of the last overload (0 if none yet)."""
        return self.calm_at

    async def calm(self) -> None:
        """Return once the daemon is not overloaded."""
        await self._calm.wait()

    # Reporting

    def _export(self, now: float, recent: float) -> None:
        metrics = self.metrics
        metrics.loop_lag_seconds.set(_worst_since(self.lags, now - LAG_WINDOW))
        metrics.overloaded.set(1 if self.overloaded else 0)
        metrics.worker_queue_depth.set(self.executor.depth() if self.executor is not None else 0)
        cpu = self.cpu()
        if self._last_cpu is not None and now > self._last_cpu[0]:
            self.cpu_ratio = max(0.0, (cpu - self._last_cpu[1]) / (now - self._last_cpu[0]))
            metrics.cpu_ratio.set(self.cpu_ratio)
        self._last_cpu = (now, cpu)
        # Twice a second for every probe of every service: the gauge child is looked up once (labels() cost 2.6 ms
        # a second at 50 services) and written only when its value moved (most stay at 0).
        stretched = STRETCH_ORDER[: self.level]
        for (_service, probe), entry in self._probes.items():
            stale = entry.staleness(now, self.stretch_factor if probe in stretched else 1.0)
            if stale != entry.exported:
                entry.gauge.set(stale)
                entry.exported = stale

    def _export_interval(self, service: str, probe: str) -> None:
        entry = self._probes[(service, probe)]
        self.metrics.probe_interval_seconds.labels(service=service, probe=probe).set(
            entry.interval * self.stretch(probe)
        )

    def _export_intervals(self, probe: str) -> bool:
        """Export the interval of every ``probe`` of every service; False when no service runs that probe."""
        keys = [(service, name) for service, name in list(self._probes) if name == probe]
        for service, name in keys:
            self._export_interval(service, name)
        return bool(keys)

    def describe(self) -> dict[str, Any]:
        """The daemon's part of `rollbackd status`."""
        now = self.clock()
        stale = {f"{service}/{probe}": round(value, 3) for (service, probe), value in self.staleness(now).items()}
        return {
            "overloaded": self.overloaded,
            "holding": self.holding(),
            "loop_lag_seconds": round(_worst_since(self.lags, now - LAG_WINDOW), 4),
            "worker_queue_depth": self.executor.depth() if self.executor is not None else 0,
            "cpu_ratio": round(self.cpu_ratio, 4),
            "stretched": list(STRETCH_ORDER[: self.level]),
            "stale_probes": {key: value for key, value in stale.items() if value > 0},
        }


def _worst_since(samples: Reversible[tuple[float, float]], since: float) -> float:
    """The largest value of the (at, value) samples taken at or after ``since``; ``samples`` are in ``at`` order."""
    worst = 0.0
    for at, value in reversed(samples):
        if at < since:
            break
        worst = max(worst, value)
    return worst
