"""The daemon's backup loop for one service: interval backups, pre-deploy backups, rotation and drills.

``BackupScheduler.run()`` is one asyncio task per service. It sleeps on an event until the next backup or drill
is due or a deploy event arrives (no polling); blocking work (SQLite, files, hashing) runs in threads. Each
backup holds the service's ServiceLock; when another actor holds it (a restore, a migration), the backup is
retried shortly after instead of waiting behind it. Times come from the newest verified backup on disk, so a
restart of the daemon does not reset the schedule, and a fresh daemon backs up at once when the newest
verified backup is older than ``every`` (or there is none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from rollbackd.backup.catalog import BackupListing, NoBackup, list_backups
from rollbackd.backup.drill import DrillReport, run_drill
from rollbackd.backup.pre_deploy import (
    PreDeployRecord,
    fallback_for_revision_change,
    pinned_pre_deploy,
    read_pre_deploy,
    record_pre_deploy,
)
from rollbackd.backup.rotation import PruneResult, prune_backups
from rollbackd.backup.snapshot import BackupError, BackupResult, take_backup
from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.state.service_lock import ServiceBusy, ServiceLock
from rollbackd.state.state_dir import StateDir
from rollbackd.target import database
from rollbackd.target.watch import DeployEvent

log = logging.getLogger(__name__)

RETRY_AFTER = 60.0  # seconds before a failed or lock-refused backup is tried again (capped at `every`)


@dataclass(frozen=True)
class _PreDeployRequest:
    event: DeployEvent
    revision: str | None  # the revision rollbackd last knew before the event: the one to preserve


class BackupScheduler:
    def __init__(
        self,
        service: ServiceConfig,
        *,
        state_dir: StateDir,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        reachable_revisions: Callable[[], Collection[str]] = frozenset,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self.service = service
        self.state_dir = state_dir
        self.metrics = metrics
        self.clock = clock
        self.reachable_revisions = reachable_revisions
        self.retry_after = min(retry_after, service.backups.every)
        self.last_backup: BackupResult | None = None
        self.last_error: BackupError | None = None
        self.last_drill: DrillReport | None = None
        self.last_prune: PruneResult | None = None
        self.known_revision: str | None = None
        self._wake = asyncio.Event()
        self._requests: list[_PreDeployRequest] = []
        self._newest_at: float | None = None
        self._last_drill_at: float | None = None
        self._retry_at: float | None = None
        self._abandon_at: float | None = None  # time.monotonic() after which a running copy gives up

    # -- hooks for the daemon ------------------------------------------------------------------------------
    def abandon_after(self, seconds: float) -> None:
        """The daemon is stopping: a backup still copying after ``seconds`` gives up at its next step (leaving no
        file that looks like a backup), rather than keep the exit waiting past the service manager's patience.
        Called from the loop; read by the backup's thread."""
        self._abandon_at = time.monotonic() + seconds

    def on_deploy_event(self, event: DeployEvent) -> None:
        """A deploy is arriving (called on the loop by DeployWatcher): take a pre-deploy backup at once.

        Changes to code only (no migration) take one only when none was taken inside the deploy window.
        """
        if event.service != self.service.name:
            return
        self._requests.append(_PreDeployRequest(event, self.known_revision))
        self._wake.set()

    async def on_revision_change(self, old: str | None, new: str | None) -> PreDeployRecord | None:
        """The schema probe saw the revision change. When no pre-deploy backup of ``old`` was taken inside the
        deploy window, record the newest verified backup from before the change as the fallback. Return the
        record written, or None."""
        self.known_revision = new
        return await asyncio.to_thread(self._record_fallback, old, new, self.clock())

    async def backup_now(self, reason: str) -> BackupResult | None:
        """Take one backup now (with the lock, rotation and metrics). None when it failed or the lock was busy."""
        return await asyncio.to_thread(self._backup, reason)

    async def drill_now(self) -> DrillReport | None:
        return await asyncio.to_thread(self._drill)

    # -- the loop ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until cancelled: a start-up backup when due, then interval backups, deploy backups and drills."""
        if not self.service.backups.enabled:
            log.info("%s: backups are disabled", self.service.name)
            return
        await asyncio.to_thread(self._load)
        if self._backup_due(self.clock()):
            await self.backup_now("startup")
        while True:
            delay = self._next_delay(self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            await self._tick()

    async def _tick(self) -> None:
        if self._requests:
            # Requests that piled up during another backup make one pre-deploy backup: a migration's if any,
            # preserving the revision known at the first of them.
            requests, self._requests = self._requests, []
            chosen = next((r for r in requests if r.event.kind == "migration"), requests[0])
            await asyncio.to_thread(self._pre_deploy, _PreDeployRequest(chosen.event, requests[0].revision))
        now = self.clock()
        if self._backup_due(now):
            await self.backup_now("scheduled")
        if self._drill_due(self.clock()):
            await self.drill_now()

    def _backup_due(self, now: float) -> bool:
        if self._retry_at is not None:
            return now >= self._retry_at
        return self._newest_at is None or now - self._newest_at >= self.service.backups.every

    def _drill_due(self, now: float) -> bool:
        every = self.service.backups.drill_every
        if every <= 0 or self._newest_at is None:
            return False
        return self._last_drill_at is None or now - self._last_drill_at >= every

    def _next_delay(self, now: float) -> float:
        every = self.service.backups.every
        due = [self._retry_at if self._retry_at is not None else (self._newest_at or now) + every]
        if self._drill_due(now):
            due.append(now)
        elif self.service.backups.drill_every > 0 and self._last_drill_at is not None:
            due.append(self._last_drill_at + self.service.backups.drill_every)
        return min(max(0.0, min(due) - now), every)

    # -- blocking work (threads) ---------------------------------------------------------------------------
    def _listing(self) -> BackupListing:
        return list_backups(self.service.backups.dir, self.service.database.stem)

    def _load(self) -> None:
        listing = self._listing()
        newest = listing.newest_verified()
        self._newest_at = newest.created_at if newest else None
        drills = [entry.manifest.drill.at for entry in listing.backups if entry.manifest and entry.manifest.drill]
        self._last_drill_at = max(drills) if drills else None
        if self.known_revision is None:
            try:
                connection = database.connect_readonly(self.service.database)
            except database.DatabaseUnavailable:
                pass
            else:
                with contextlib.closing(connection):
                    self.known_revision = database.read_revision(connection)
        self._update_gauges(listing)

    def _backup(self, reason: str) -> BackupResult | None:
        name = self.service.name
        lock = ServiceLock(self.state_dir.root, name, f"backup ({reason})")
        try:
            lock.acquire(timeout=0)
        except ServiceBusy as error:
            log.info("%s: %s backup postponed: %s", name, reason, error)
            self._retry_at = self.clock() + self.retry_after
            return None
        try:
            try:
                result = take_backup(
                    self.service, reason=reason, clock=self.clock, metrics=self.metrics, progress=self._stop_point
                )
            except BackupError as error:
                if error.reason == "stopping":
                    log.warning("%s: %s backup abandoned: %s", name, reason, error)
                    return None
                log.error("%s: %s backup failed (%s): %s", name, reason, error.reason, error)
                self.last_error = error
                self._retry_at = self.clock() + self.retry_after
                return None
            log.info("%s: %s backup %s taken", name, reason, result.path.name)
            self.last_backup, self.last_error, self._retry_at = result, None, None
            self._newest_at = result.manifest.created_at
            self.known_revision = result.manifest.revision
            self._rotate()
            return result
        finally:
            lock.release()

    def _stop_point(self, copied: int, total: int) -> None:
        """Between two steps of a copy: give up there once the daemon's stop has waited long enough."""
        if self._abandon_at is not None and time.monotonic() >= self._abandon_at:
            raise BackupError(
                "stopping", f"rollbackd is stopping; the copy was at {copied} of {total} pages (nothing was kept)"
            )

    def _rotate(self) -> None:
        now = self.clock()
        service_dir = self.state_dir.service_dir(self.service.name)
        pinned = pinned_pre_deploy(read_pre_deploy(service_dir), now=now, window=self.service.deploy.window)
        try:
            self.last_prune = prune_backups(
                self.service,
                now=now,
                reachable_revisions=self.reachable_revisions(),
                pinned=pinned,
                metrics=self.metrics,
            )
        except OSError as error:
            log.error("%s: rotation failed: %s", self.service.name, error)
        for name in self.last_prune.plan.unverified if self.last_prune else ():
            log.warning("%s: backup %s is unverified (kept, not counted): look at it", self.service.name, name)
        self._update_gauges(self._listing())

    def _pre_deploy(self, request: _PreDeployRequest) -> None:
        service_dir = self.state_dir.service_dir(self.service.name)
        now = self.clock()
        current = read_pre_deploy(service_dir)
        if (
            request.event.kind == "code"
            and current is not None
            and current.source != "fallback"
            and now - current.at <= self.service.deploy.window
        ):
            return  # a code-only change inside a deploy window already covered by a pre-deploy backup
        result = self._backup("pre-deploy")
        if result is None:
            return
        revision = result.manifest.revision
        if request.revision is not None and revision != request.revision:
            log.warning(
                "%s: the revision changed (%s -> %s) before the pre-deploy backup was taken; "
                "the newest backup of %s stands in",
                self.service.name,
                request.revision,
                revision,
                request.revision,
            )
            self._record_fallback(request.revision, revision, now)
            return
        record_pre_deploy(
            service_dir, PreDeployRecord(result.path.name, revision, result.manifest.created_at, "watcher")
        )

    def _record_fallback(self, old: str | None, new: str | None, changed_at: float) -> PreDeployRecord | None:
        service_dir = self.state_dir.service_dir(self.service.name)
        record = fallback_for_revision_change(
            self._listing(),
            read_pre_deploy(service_dir),
            old=old,
            new=new,
            changed_at=changed_at,
            window=self.service.deploy.window,
        )
        if record is not None:
            record_pre_deploy(service_dir, record)
            log.warning(
                "%s: revision changed %s -> %s without a pre-deploy backup; %s is the fallback",
                self.service.name,
                old,
                new,
                record.pre_deploy_backup,
            )
        return record

    def _drill(self) -> DrillReport | None:
        try:
            report = run_drill(self.service, state_dir=self.state_dir, clock=self.clock, metrics=self.metrics)
        except NoBackup:
            return None
        except OSError as error:
            log.error("%s: restore drill could not run: %s", self.service.name, error)
            self._last_drill_at = self.clock()
            return None
        self.last_drill = report
        self._last_drill_at = report.at
        self._update_gauges(self._listing())
        return report

    def _update_gauges(self, listing: BackupListing) -> None:
        if self.metrics is not None:
            update_backup_gauges(self.metrics, self.service.name, listing)


def update_backup_gauges(metrics: Metrics, service: str, listing: BackupListing) -> None:
    """Set the gauges that describe what is on disk: verified count, newest size and time, last drill."""
    metrics.backups.labels(service=service).set(len(listing.verified))
    newest = listing.newest_verified()
    if newest is not None and newest.manifest is not None:
        metrics.backup_size_bytes.labels(service=service).set(newest.size_bytes)
        metrics.backup_last_success_timestamp_seconds.labels(service=service).set(
            newest.manifest.created_at + newest.manifest.duration_seconds
        )
    drilled = [
        entry.manifest.drill.at
        for entry in listing.backups
        if entry.manifest is not None and entry.manifest.drill is not None and entry.manifest.drill.ok
    ]
    if drilled:
        metrics.backup_last_drill_success_timestamp_seconds.labels(service=service).set(max(drilled))
