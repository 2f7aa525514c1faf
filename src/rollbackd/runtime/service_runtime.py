"""One watched service with its parts wired together: what the daemon runs per ``[[service]]``.

Probes' observations come in here; the schema probe's revision changes and the file watch's migration arrivals
open deploy windows and trigger pre-deploy backups; then the policy looks at the service and may act through
the executor. The parts do not know each other; this module is where they meet (and ``daemon.py`` is where the
runtimes meet the process: signals, metrics listener, systemd).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollbackd.actions.executor import Executor
from rollbackd.actions.quarantine import quarantine_script
from rollbackd.backup.catalog import list_backups
from rollbackd.backup.restore import RestoreError, pending_restore, resume_interrupted_restore
from rollbackd.backup.restore_journal import JournalError, read_journal
from rollbackd.backup.schedule import BackupScheduler
from rollbackd.config.model import ServiceConfig
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation, ObservationLog
from rollbackd.policy.deploys import DeployTracker
from rollbackd.policy.engine import OverloadGate, ServicePolicy
from rollbackd.policy.interrupted import close_interrupted
from rollbackd.policy.rules import effective_rules
from rollbackd.probes import PROBE_NAMES
from rollbackd.probes.sqlite_lock import wal_summary
from rollbackd.replication.pause import ReplicationPause
from rollbackd.runtime.alerts import WebhookAlerts
from rollbackd.runtime.external_reads import External, ExternalReads
from rollbackd.runtime.retention import probe_retention
from rollbackd.state.history import History
from rollbackd.state.service_lock import LockHolder, ServiceBusy, ServiceLock
from rollbackd.state.state_dir import StateDir
from rollbackd.state.vault import Vault
from rollbackd.target.alembic_scripts import ScriptParseError, parse_script
from rollbackd.target.control import ServiceControl
from rollbackd.target.database import DatabaseUnavailable, connect_readonly, read_revision
from rollbackd.target.verify import Expectations, Verification, Verifier
from rollbackd.target.watch import DeployEvent, DeployWatcher, SharedObserver

if TYPE_CHECKING:
    from rollbackd.replication.drill import ReplicaDrills

log = logging.getLogger(__name__)

LOOKBACK_MARGIN = 120.0  # observations kept in view beyond the longest rule duration


class ServiceRuntime:
    def __init__(
        self,
        service: ServiceConfig,
        *,
        state_dir: StateDir,
        history: History,
        metrics: Metrics,
        observations: ObservationLog,
        http: HttpClient,
        alerts: WebhookAlerts,
        dry_run: bool,
        clock: Callable[[], float] = time.time,
        replication: ReplicationPause | None = None,
        overload: OverloadGate | None = None,
        watch_observer: SharedObserver | None = None,
        external: ExternalReads | None = None,
    ) -> None:
        self.service = service
        # The service's Litestream (child or operator's unit; None without replication): a restore pauses it.
        self.replication = replication
        self.name = service.name
        self.state_dir = state_dir
        self.history = history
        self.metrics = metrics
        self.observations = observations
        self.clock = clock
        self.vault = Vault(state_dir.vault(service.name))
        self.control = ServiceControl(service)
        self.deploys = DeployTracker(service, history, clock)
        # The lock, windows and blocks other processes change: the daemon's one reader for all services, or our own.
        self.external = (external or ExternalReads(history, state_dir.root)).watch(service.name, self.deploys)
        self.scheduler = BackupScheduler(
            service, state_dir=state_dir, metrics=metrics, clock=clock, reachable_revisions=self.reachable_revisions
        )
        self.executor = Executor(
            service,
            state_dir=state_dir,
            control=self.control,
            vault=self.vault,
            deploys=self.deploys,
            metrics=metrics,
            clock=clock,
            replication=replication,
        )
        self.replica_drills: ReplicaDrills | None = None
        if service.replication is not None:
            # Imported here, not at the top: a daemon without [service.replication] never loads it. A runtime is
            # built at start-up and at reload only, never at action time, so a package upgraded under a running
            # daemon cannot mix its versions into it.
            from rollbackd.replication.drill import ReplicaDrills

            self.replica_drills = ReplicaDrills(service, state_dir=state_dir, metrics=metrics, clock=clock)
        self.verifier = Verifier(service, http)
        rules = effective_rules(service)
        self._deploy_window_open = metrics.deploy_window_open.labels(service=service.name)  # set at each evaluation
        self.lookback = max((rule.for_ for rule in rules), default=0.0) + LOOKBACK_MARGIN
        observations.retain(service.name, probe_retention(service, self.lookback))  # what the policy reads
        self.policy = ServicePolicy(
            service,
            rules,
            history=history,
            metrics=metrics,
            runner=self.executor,
            verify=self._verify,
            alert=alerts.for_service(service.name),
            dry_run=dry_run,
            clock=clock,
            overload=overload,
        )
        self.watcher = (
            DeployWatcher(
                service,
                self.on_deploy_event,
                ignore=(state_dir.root,),
                on_file=self._file_changed,
                shared=watch_observer,
            )
            if service.deploy.watch
            else None
        )
        self.blocked: frozenset[str] = frozenset()  # refreshed at each evaluation; read on the watcher's thread
        self.arrivals: dict[str, float] = {}  # revision -> when its script last changed (set on the watch thread)
        self.revision: str | None = None
        self.fingerprint: str | None = None
        self._revision_known = False
        self._evaluating = False
        self._again = False
        self._watched_task: asyncio.Task[None] | None = None
        self._started_at = clock()
        self._operator_seen: float | None = None  # `since` of the last operator command whose end was handled
        self._operator_acting = False
        self._schema_seen_at: float | None = None  # when the schema probe last read the revision
        self._background: set[asyncio.Task[None]] = set()
        self._resuming = False  # finishing a restore whose owner died

    # Lifecycle

    async def start(self) -> None:
        """Before the probes' first round: pick up HOLD, finish an interrupted restore, start the file watch."""
        await self.policy.load()
        await asyncio.to_thread(self._resume_restore, at_start=True)
        if self.watcher is not None:
            self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    async def run_backups(self) -> None:
        await self.scheduler.run()

    def _resume_restore(self, *, at_start: bool = False) -> None:
        lock = ServiceLock(self.state_dir.root, self.name, "resume an interrupted restore", changes_database=True)
        try:
            lock.acquire(timeout=30)
        except ServiceBusy as busy:
            log.warning("%s: cannot check for an interrupted restore: %s", self.name, busy)
            return
        try:
            resumed = False
            try:
                report = resume_interrupted_restore(self.service, control=self.control, state_dir=self.state_dir)
            except RestoreError as error:
                log.error("%s: an interrupted restore could not be finished: %s", self.name, error)
                resumed = error.touched
            else:
                if report is not None:
                    resumed = True
                    log.warning(
                        "%s: interrupted restore of %s: %s", self.name, report.backup, report.message or report.outcome
                    )
            if at_start:
                self._close_interrupted(resumed_now=resumed)
        finally:
            lock.release()

    async def _resume_orphaned_restore(self) -> None:
        """A `rollbackd restore` killed part-way leaves the service stopped: finish or undo its restore now, as at
        start, rather than wait for a person. The policy sits out meanwhile (the service is down on purpose)."""
        try:
            pending = await asyncio.to_thread(pending_restore, self.service, self.state_dir)
        except RestoreError as error:
            log.error("%s: %s", self.name, error)
            return
        if pending is None:
            return
        log.warning(
            "%s: the restore of %s was left %r by its owner, who is gone: resuming it",
            self.name,
            pending.backup,
            pending.state,
            extra={"service": self.name},
        )
        self._resuming = True
        try:
            await asyncio.to_thread(self._resume_restore_paused)
        finally:
            self._resuming = False
            self.policy.ignore_before = max(self.policy.ignore_before, self.clock())
            self.refresh_external()

    def _resume_restore_paused(self) -> None:
        """Finishing a swap is a swap: Litestream stands aside for it, as for every restore (a worker thread)."""
        if self.replication is None:
            self._resume_restore()
            return
        self.replication.pause()
        try:
            self._resume_restore()
        finally:
            self.replication.resume()

    async def settle_orphaned_restore(self) -> None:
        """Finish or undo a restore whose owner is gone, now (its pause of replication ended with it)."""
        await self._resume_orphaned_restore()

    def _close_interrupted(self, *, resumed_now: bool) -> None:
        """What a killed daemon left open in the history: closed as interrupted, by what the journal says."""
        try:
            journal = read_journal(self.state_dir.service_dir(self.name))
        except JournalError as error:
            log.error("%s: %s", self.name, error)
            journal = None
        close_interrupted(self.history, self.name, journal, resumed_now=resumed_now)

    # Inputs

    async def on_observation(self, observation: Observation) -> None:
        if observation.service != self.name:
            return
        if observation.probe == "schema":
            await self._schema_seen(observation)
        await self.evaluate()

    def on_deploy_event(self, event: DeployEvent) -> None:
        """From the file watch, on the loop: a pre-deploy backup at once, and (for a migration) a deploy window.

        A burst in which every script is gone again (rollbackd moving a blocked script aside, a code rollback
        removing one) deploys nothing: no backup, no window."""
        if event.kind == "migration" and not any(Path(path).exists() for path in event.paths):
            return
        self.scheduler.on_deploy_event(event)
        if event.kind == "migration":
            self._in_background(self._migration_arrived(event))

    def _file_changed(self, path: Path, kind: str) -> None:
        """On the file watch's thread, at once: the code is changing, so its commit is no longer the stable one;
        keep a script in the vault while it exists; move a blocked revision's script out of the versions dir
        before the deploy's `alembic upgrade` can run it."""
        self.deploys.code_changing()
        if kind != "migration" or not path.is_file():
            return
        try:
            self.vault.store_from(self.service.versions_dir)
        except OSError as error:
            log.warning("%s: cannot copy %s into the vault: %s", self.name, path.name, error)
        try:
            revision = parse_script(path).revision
        except (ScriptParseError, OSError):
            return  # still being written: the next change event parses it
        self.arrivals[revision] = self.clock()
        if revision in self.blocked:
            quarantine_script(path, self.state_dir.service_dir(self.name) / "quarantine", self.name, revision)

    async def _migration_arrived(self, event: DeployEvent) -> None:
        revisions = sorted(_revisions_of(event.paths) - self.blocked)
        if revisions:
            await asyncio.to_thread(self.deploys.migration_arrived, revisions, self.revision, self.fingerprint)
            self.refresh_external()
        await self.evaluate()

    async def _schema_seen(self, observation: Observation) -> None:
        if observation.reason == "unavailable":
            return
        revision = observation.detail.get("db_revision")
        revision = revision if isinstance(revision, str) else None
        fingerprint = observation.detail.get("schema_fingerprint")
        if self._revision_known and revision != self.revision:
            old = self.revision
            operator = await asyncio.to_thread(self._operator_change, self._schema_seen_at)
            if self.deploys.consume_expected(revision):
                log.info("%s: database revision %s → %s (by rollbackd)", self.name, old, revision)
                self.scheduler.known_revision = revision
            elif operator is not None:
                log.info(
                    "%s: database revision %s → %s by %s (pid %s): a rollback or a deploy that records its own "
                    "window, not a new deploy",
                    self.name,
                    old,
                    revision,
                    operator.purpose,
                    operator.pid,
                    extra={"service": self.name},
                )
                self.scheduler.known_revision = revision
                self.refresh_external()
            else:
                log.info("%s: database revision %s → %s", self.name, old, revision, extra={"service": self.name})
                await asyncio.to_thread(self.deploys.revision_changed, old, revision, self.fingerprint)
                self.refresh_external()
                await self.scheduler.on_revision_change(old, revision)
        self.revision, self._revision_known = revision, True
        self._schema_seen_at = observation.started_at
        self.fingerprint = fingerprint if isinstance(fingerprint, str) else None
        await self.external.note_code_version()

    # The policy

    async def evaluate(self) -> None:
        """Let the policy look at the service; observations arriving meanwhile cause one more look, not many."""
        if self._evaluating:
            self._again = True
            return
        self._evaluating = True
        try:
            while True:
                self._again = False
                await self._evaluate_once()
                if not self._again:
                    break
        finally:
            self._evaluating = False

    async def _evaluate_once(self) -> None:
        if self.policy.busy or self._resuming:
            return
        holder, window, blocked = await self._external()
        if self._operator_running(holder):
            return
        self.blocked = blocked
        since = max(self.policy.ignore_before, self.clock() - self.lookback)
        recent = {probe: self.observations.window(self.name, probe, since) for probe in PROBE_NAMES}
        process = self.observations.latest(self.name, "process")
        pid = int(process.values["pid"]) if process is not None and "pid" in process.values else None
        arrived = frozenset(revision for revision, at in self.arrivals.items() if at >= self.policy.ignore_before)
        view = self.policy.view(recent, deploy=window, blocked=blocked, arrived=arrived, service_pid=pid)
        self._deploy_window_open.set(1 if window is not None else 0)
        await self.policy.evaluate(view)
        if self.policy.task is not None and self.policy.task is not self._watched_task:
            self._watched_task = self.policy.task
            self.policy.task.add_done_callback(lambda _task: self.refresh_external())

    def refresh_external(self) -> None:
        """What the state DB and the lock say changed (a window opened, a revision was blocked): read it again."""
        self.external.refresh()

    async def _external(self) -> External:
        """The service lock's holder, the open deploy window and the blocked revisions, at most EXTERNAL_REFRESH
        seconds old (other processes write them: `migrate`, `unblock`), or afresh after this daemon changed them;
        read for every service of the daemon in one thread hop (runtime/external_reads.py)."""
        return await self.external.get()

    def _operator_change(self, last_seen: float | None) -> LockHolder | None:
        """The operator command in another process that changed the database since ``last_seen`` (it holds the
        service's lock now, or let go of it after that time), or None: then the change came from outside."""
        try:
            holder = ServiceLock(self.state_dir.root, self.name, "").inspect()
        except OSError:
            return None
        if holder is None or not _changes_database_elsewhere(holder):
            return None
        if holder.held or (holder.released is not None and last_seen is not None and holder.released >= last_seen):
            return holder
        return None

    def _operator_running(self, holder: LockHolder | None) -> bool:
        """True while another process holds this service's lock to change its database (`rollbackd migrate`,
        `rollbackd rollback`, `rollbackd restore`): it verifies and, for a migrate, undoes its own work, so the
        policy skips its turn instead of queueing an action on the lock to act on stale evidence afterwards. Once
        it is over, what was observed during it no longer counts (its failures were its to handle)."""
        if holder is None or not _changes_database_elsewhere(holder):
            return False
        if holder.held:
            if not self._operator_acting:
                log.info(
                    "%s: %s (pid %s) holds the service: the policy waits until it is done",
                    self.name,
                    holder.purpose,
                    holder.pid,
                    extra={"service": self.name},
                )
            self._operator_acting = True
            return True
        since = holder.since or 0.0
        if self._operator_acting or (since >= self._started_at and since != self._operator_seen):
            self._operator_acting = False
            self._operator_seen = since
            self.policy.ignore_before = max(self.policy.ignore_before, self.clock())
            self.refresh_external()
            log.info(
                "%s: %s is done: the policy looks again, from now on",
                self.name,
                holder.purpose,
                extra={"service": self.name},
            )
            self._in_background(self._resume_orphaned_restore())  # it may have died mid-restore
        return False

    async def _verify(self, expect: Expectations) -> Verification:
        return await self.verifier.verify(expect)

    def reachable_revisions(self) -> set[str]:
        """Revisions a downgrade from the database's current one can still reach: their backups are kept."""
        revision = self.revision or _read_revision(self.service.database)
        if revision is None:
            return set()
        graph = self.vault.combined_graph(self.service.versions_dir)
        return {revision, *graph.ancestors(revision)} if revision in graph else {revision}

    def describe(self) -> dict[str, Any]:
        """This service's part of `rollbackd status`."""
        latest = self.observations.latest_by_probe(self.name)
        scheduler = self.scheduler
        return {
            "policy": self.policy.describe(),
            "revision": self.revision,
            "probes": {
                probe: {
                    "ok": entry.ok,
                    "reason": entry.reason,
                    "at": entry.started_at,
                    "inconclusive": entry.inconclusive,
                }
                for probe, entry in sorted(latest.items())
            },
            "last_backup": (
                {
                    "name": scheduler.last_backup.manifest.name,
                    "at": scheduler.last_backup.manifest.created_at,
                    "reason": scheduler.last_backup.manifest.reason,
                }
                if scheduler.last_backup
                else None
            ),
            "last_backup_error": str(scheduler.last_error) if scheduler.last_error else None,
            "last_drill": (
                {"backup": scheduler.last_drill.backup, "ok": scheduler.last_drill.ok}
                if scheduler.last_drill is not None
                else None
            ),
            "wal": wal_summary(latest.get("sqlite_lock")),
        }

    def last_backup_on_disk(self) -> dict[str, Any] | None:
        """For `status` (blocking: a thread): the last backup, if it is still there; else the newest verified one
        in the backup dir (rotation, `backups prune` or a person may have removed the one this daemon took)."""
        taken = self.scheduler.last_backup
        if taken is not None and taken.path.exists():
            return {"name": taken.manifest.name, "at": taken.manifest.created_at, "reason": taken.manifest.reason}
        newest = list_backups(self.service.backups.dir, self.service.database.stem).newest_verified()
        if newest is None:
            return None
        return {"name": newest.name, "at": newest.created_at, "reason": newest.reason or "unknown"}

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _changes_database_elsewhere(holder: LockHolder) -> bool:
    return holder.changes_database and holder.pid != os.getpid()


def _revisions_of(paths: tuple[str, ...]) -> set[str]:
    """The revision ids of the migration scripts among ``paths`` (removed or unparsable files are skipped)."""
    revisions = set()
    for path in paths:
        if not path.endswith(".py"):
            continue
        with contextlib.suppress(ScriptParseError, OSError):
            revisions.add(parse_script(Path(path)).revision)
    return revisions


def _read_revision(database: Path) -> str | None:
    try:
        with contextlib.closing(connect_readonly(database)) as connection:
            return read_revision(connection)
    except (DatabaseUnavailable, OSError):
        return None
    except Exception:  # noqa: BLE001 - a corrupt file: no reachable revisions to protect
        return None
