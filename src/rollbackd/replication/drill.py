"""Replica drills: proving, on ``replication.drill_every``, that the replica really restores.

Litestream never checks that what it uploaded can be put back together (its restore validation is off by
default). A drill restores the replica's newest moment into ``state_dir/scratch`` with the same code a recovery
uses (``fetch_point``: integrity_check, foreign_key_check, revision, row counts), then throws the copy away. The
result is kept in ``state_dir/services/<name>/replica_drill.json`` (so a restarted daemon keeps the schedule),
exported as ``rollbackd_replication_last_drill_success_timestamp_seconds`` and, on failure,
``rollbackd_replication_drill_failures_total`` (alert ``RollbackdReplicaDrillFailed``).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import read_json, write_json_atomic
from rollbackd.metrics import Metrics
from rollbackd.replication.restore import ReplicaRestoreError, fetch_point
from rollbackd.state.state_dir import StateDir

log = logging.getLogger(__name__)

RECORD_NAME = "replica_drill.json"
FIRST_DRILL_DELAY = 60.0  # seconds after start-up before a first drill: Litestream's first snapshot comes first


@dataclass(frozen=True)
class ReplicaDrillReport:
    at: float
    ok: bool
    detail: str
    seconds: float
    replicated_until: float | None = None


def run_replica_drill(
    service: ServiceConfig,
    *,
    state_dir: StateDir,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.time,
) -> ReplicaDrillReport:
    """Restore the replica's newest moment into scratch, verify it, remove it; record and export the result."""
    at = clock()
    started = time.monotonic()
    scratch = state_dir.scratch / f"replica-drill-{service.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    until = None
    try:
        copy = fetch_point(service, None, state_dir=state_dir, clock=clock, scratch_dir=scratch)
        until = copy.replicated_until
        total = sum(count or 0 for count in copy.row_counts.values())
        moment = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds") if until else "its newest moment"
        ok, detail = (
            True,
            (
                f"restored the replica as at {moment}: integrity ok, foreign keys ok, revision {copy.revision}, "
                f"{total} rows in the watched tables"
            ),
        )
    except ReplicaRestoreError as error:
        ok, detail = False, f"{error.reason}: {error}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = ReplicaDrillReport(at, ok, detail, time.monotonic() - started, until)
    try:
        write_json_atomic(state_dir.service_dir(service.name) / RECORD_NAME, asdict(report))
    except OSError as error:
        log.warning("%s: cannot record the replica drill: %s", service.name, error)
    if ok:
        log.info("%s: replica drill passed: %s", service.name, detail, extra={"service": service.name})
        if metrics is not None:
            metrics.replication_last_drill_success_timestamp_seconds.labels(service=service.name).set(at)
    else:
        log.error("%s: replica drill FAILED: %s", service.name, detail, extra={"service": service.name})
        if metrics is not None:
            metrics.replication_drill_failures.labels(service=service.name).inc()
    return report


def last_replica_drill(service: ServiceConfig, state_dir: StateDir) -> ReplicaDrillReport | None:
    """The last drill recorded for ``service``, or None (never drilled, or an unreadable record)."""
    data = read_json(state_dir.service_dir(service.name) / RECORD_NAME)
    if not isinstance(data, dict):
        return None
    try:
        return ReplicaDrillReport(
            at=float(data["at"]),
            ok=bool(data["ok"]),
            detail=str(data["detail"]),
            seconds=float(data["seconds"]),
            replicated_until=float(data["replicated_until"]) if data.get("replicated_until") else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


class ReplicaDrills:
    """One service's drill schedule: an asyncio task that sleeps until the next drill is due (no polling)."""

    def __init__(
        self,
        service: ServiceConfig,
        *,
        state_dir: StateDir,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.state_dir = state_dir
        self.metrics = metrics
        self.clock = clock
        self.last: ReplicaDrillReport | None = None

    def next_due(self, now: float) -> float | None:
        """When the next drill is due (Unix time), or None when drills are off."""
        replication = self.service.replication
        if replication is None or replication.drill_every <= 0:
            return None
        if self.last is None:
            return now + FIRST_DRILL_DELAY
        return self.last.at + replication.drill_every

    async def run(self) -> None:
        """Run until cancelled."""
        self.last = await asyncio.to_thread(last_replica_drill, self.service, self.state_dir)
        if self.last is not None and self.last.ok:
            self.metrics.replication_last_drill_success_timestamp_seconds.labels(service=self.service.name).set(
                self.last.at
            )
        while True:
            due = self.next_due(self.clock())
            if due is None:
                return
            await asyncio.sleep(max(0.0, due - self.clock()))
            self.last = await asyncio.to_thread(
                run_replica_drill, self.service, state_dir=self.state_dir, metrics=self.metrics, clock=self.clock
            )
