"""What every probe is, what it is built from, and the guard that turns any failure into an Observation.

A probe is a small object built from a service's config and injected parts (HTTP client, clock, state dir). Its
``run()`` returns an Observation; ``export()`` copies that observation into the probe's own Prometheus series.
Probes know nothing of the scheduler, the policy or each other; the daemon calls ``observe()``, which never raises.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes.lock_rounds import LockRounds
from rollbackd.probes.proc_locks import SharedProcLocks
from rollbackd.probes.unchanged import ChangeWatches
from rollbackd.state.state_dir import StateDir

if TYPE_CHECKING:
    from rollbackd.replication.supervisor import Replication

log = logging.getLogger(__name__)

# Probes whose config has no timeout of their own (lock, schema, rows, process) get this bound.
DEFAULT_TIMEOUT = 10.0
# observe() gives a probe this much longer than its own timeout before it abandons the run.
TIMEOUT_GRACE = 1.0
# Failures that are a completed check's verdict on the database, not a deadline missed: the daemon's own lag
# cannot produce them, so they stay evidence however late the daemon ran (README: "When rollbackd is the sick one").
VERDICTS = frozenset(
    {
        "corrupt",
        "not_a_database",
        "foreign_key_violation",
        "missing_index",
        "db_ahead",
        "db_behind",
        "unknown_revision",
        "unversioned",
        "table_missing",
        "missing",  # the integrity probe: a database it had checked before is gone from the disk
    }
)

# Probes whose evidence is a duration the daemon measured itself (a request's latency): a run taken while the
# daemon lagged is inconclusive even when it answered, since the lag is in the number the rules read.
TIMED_PROBES = frozenset({"latency"})

# Probes the daemon runs on one grid of their interval for every service (runtime/daemon.py: _run_probe), so that
# the runs of all services come due in the same turn of the loop and share one thread hop (probes/lock_rounds.py).
# Only probes that touch nothing of the service: 50 health checks at once would be a burst the service feels.
ALIGNED_PROBES = frozenset({"sqlite_lock"})

# Given how late a run started (seconds) and when it started (monotonic), say why its failure proves nothing
# ('' when it is evidence). runtime/self_load.py's SelfLoad.judge is the one the daemon passes.
Judge = Callable[[float, float], str]


class Probe(Protocol):
    name: str
    service: str
    interval: float
    timeout: float

    async def run(self) -> Observation: ...

    def export(self, metrics: Metrics, observation: Observation) -> None: ...


@dataclass(frozen=True)
class ProbeContext:
    """The parts probes share, injected so tests use a real server, a tmp state dir and their own clock."""

    http: HttpClient
    state_dir: StateDir
    clock: Callable[[], float] = time.time
    # Set when the daemon stops: long SQLite checks in worker threads abort at their next progress callback
    # instead of holding the exit for up to their timeout (a thread cannot be cancelled from outside).
    stopping: threading.Event = field(default_factory=threading.Event)
    # The service's Litestream child (or the operator's unit), for the replication probe to report on.
    replication: Replication | None = None
    # /proc/locks as read by the lock probes: the daemon passes one for all its services, to share the reads.
    proc_locks: SharedProcLocks = field(default_factory=SharedProcLocks)
    # The lock probes' thread hops, one per turn of the loop: the daemon passes one for all its services.
    lock_rounds: LockRounds = field(default_factory=LockRounds)
    # The read-only connections that tell whether a database changed: one per database for the probes built
    # from this context (the daemon builds one context per service).
    change_watches: ChangeWatches = field(default_factory=ChangeWatches)


async def observe(
    probe: Probe, clock: Callable[[], float] = time.time, *, late_by: float = 0.0, judge: Judge | None = None
) -> Observation:
    """Run ``probe`` once; return its Observation stamped with start time and duration. Never raises: an
    exception becomes ok=False with reason ``probe_error`` (and a log line), a run past its timeout ``timeout``.
    ``judge`` (with ``late_by``, how late against its schedule the run starts) marks a failure *inconclusive*
    when the daemon's own delay may have caused it; a success (except a timed probe's), or a completed check's
    verdict, stays evidence."""
    started_at = clock()
    started = time.perf_counter()
    since = time.monotonic()
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as the run ends.
        async with asyncio.timeout(probe.timeout + TIMEOUT_GRACE):
            observation = await probe.run()
    except TimeoutError:
        observation = Observation(
            probe.service, probe.name, ok=False, reason="timeout", detail={"error": f"no result in {probe.timeout}s"}
        )
    except Exception as error:
        log.exception("probe %s of service %s raised", probe.name, probe.service)
        observation = Observation(
            probe.service,
            probe.name,
            ok=False,
            reason="probe_error",
            detail={"error": f"{type(error).__name__}: {error}"},
        )
    inconclusive = ""
    doubtful = not observation.ok or probe.name in TIMED_PROBES
    if judge is not None and doubtful and observation.reason not in VERDICTS:
        inconclusive = judge(late_by, since)
    return dataclasses.replace(
        observation, started_at=started_at, duration=time.perf_counter() - started, inconclusive=inconclusive
    )
