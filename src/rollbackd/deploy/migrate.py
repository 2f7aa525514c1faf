"""`rollbackd migrate`: the deploy script's `alembic upgrade head`, with the runbook's safety around it.

In order, holding the service's lock throughout (the daemon leaves the service alone meanwhile):
refuse a pending revision blocked after data loss (unless forced); optionally rehearse on a scratch copy; take a
verified ``pre-deploy`` backup and record it as the deploy's fallback; open a deploy window (trigger
``migrate``) in the history; ``alembic upgrade``; restart the service; watch it through a verification window
(the runbook's checklist, a few times). Any failure is undone the runbook's way: downgrade to the pre-deploy
revision and verify (the pre-deploy revision, schema and rows); if that fails, restore the pre-deploy backup and
verify. Rows dropped past the data-loss threshold skip the downgrade (it cannot bring rows back): restore at
once, and block the revision. Every failure leaves an incident (rule ``migrate``) with its actions, commands and
verifications; a success leaves the deploy window open, so the daemon keeps watching with the pre-deploy backup
as the fallback.

An interrupt (Ctrl-C, SIGTERM) never leaves a half deploy: before the lock is held it cancels at once (nothing
touched); from then on it is noted, the step in progress finishes (an `alembic upgrade` runs in its own session,
so the terminal's Ctrl-C does not reach it mid-transaction), and the deploy stops at the next safe point: before
the upgrade it is abandoned with nothing migrated; after it, it is rolled back the same way as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rollbackd.actions.alembic_runner import AlembicRunner
from rollbackd.actions.executor import DOWNGRADE_COUNT_TOLERANCE
from rollbackd.backup.catalog import BackupEntry, list_backups
from rollbackd.backup.manifest import BackupManifest
from rollbackd.backup.pre_deploy import PreDeployRecord, record_pre_deploy
from rollbackd.backup.restore import RestoreError, restore_backup
from rollbackd.backup.snapshot import BackupError, take_backup
from rollbackd.config.model import ServiceConfig
from rollbackd.deploy.plan import PlanError, UpgradePlan, data_loss_threshold, live_revision, plan_upgrade
from rollbackd.deploy.rehearse import RehearsalRefused, error_line, rehearse
from rollbackd.host.commands import CommandResult
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.replication.pause import NoPause, ReplicationPause
from rollbackd.state.history import History
from rollbackd.state.service_lock import MIGRATE_LOCK_PURPOSE, LockHolder, ServiceBusy, ServiceLock
from rollbackd.state.state_dir import StateDir
from rollbackd.state.vault import Vault
from rollbackd.target.code_version import read_code_version
from rollbackd.target.control import ControlError, ServiceControl
from rollbackd.target.database import DatabaseUnavailable, known_counts
from rollbackd.target.verify import Expectations, Verification, Verifier

LOCK_WAIT = 120.0  # seconds to wait for the daemon's action or backup to finish before giving up
LOCK_POLL = 0.2  # seconds between tries for the service lock
VERIFY_ROUNDS = 3  # verifications across the window: at its start, middle and end
LATER_HEALTH_WAIT = 5.0  # after the first round the service has answered: a later round waits this long at most

Say = Callable[[str], None]
Outcome = Literal["ok", "nothing_to_do", "refused", "aborted", "rolled_back", "failed"]
ErrorKind = Literal["usage", "unavailable", "busy"]


class MigrateError(Exception):
    """The migration did not start; nothing was touched. ``kind``: usage, unavailable, busy."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class MigrateOptions:
    target: str | None = None  # a revision (or unique prefix); None: the code's head
    rehearse: bool = False
    force: bool = False  # deploy blocked revisions anyway
    restart: bool | None = None  # None: [service.deploy] restart_after_migrate
    window: float | None = None  # seconds of verification; None: [service.policy] verify_timeout
    lock_wait: float = LOCK_WAIT


@dataclass(frozen=True)
class Step:
    """One line of the migration as it happened."""

    name: str
    ok: bool
    detail: str
    seconds: float = 0.0

    def render(self) -> str:
        took = f" ({self.seconds:.1f}s)" if self.seconds >= 0.05 else ""
        return f"[{'ok' if self.ok else 'FAIL':>4}] {self.name}: {self.detail}{took}"

    def to_json(self) -> dict[str, Any]:
        return {"step": self.name, "ok": self.ok, "detail": self.detail, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class MigrateReport:
    service: str
    outcome: Outcome
    message: str
    from_revision: str | None = None
    target: str | None = None
    pending: tuple[str, ...] = ()
    revision_after: str | None = None
    pre_deploy_backup: str | None = None
    deploy_id: int | None = None
    incident_id: int | None = None
    blocked: tuple[str, ...] = ()  # revisions blocked by this run (data loss)
    refusals: tuple[str, ...] = ()  # why a blocked revision was refused
    steps: tuple[Step, ...] = ()
    rehearsal: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "nothing_to_do")

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "ok": self.ok,
            "outcome": self.outcome,
            "message": self.message,
            "from_revision": self.from_revision,
            "target": self.target,
            "pending": list(self.pending),
            "revision_after": self.revision_after,
            "pre_deploy_backup": self.pre_deploy_backup,
            "deploy": self.deploy_id,
            "incident": self.incident_id,
            "blocked": list(self.blocked),
            "refusals": list(self.refusals),
            "steps": [step.to_json() for step in self.steps],
            "rehearsal": dict(self.rehearsal) if self.rehearsal is not None else None,
        }


@dataclass
class _Deploy:
    """What the running migration knows: the plan, the pre-deploy backup, the deploy record."""

    plan: UpgradePlan
    manifest: BackupManifest
    deploy_id: int
    window: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Failure:
    signal: str  # migration_failed | restart_failed | verification_failed | rows_dropped | interrupted
    explanation: str
    evidence: dict[str, Any]
    verification: Verification | None = None

    @property
    def data_loss(self) -> bool:
        return self.signal == "rows_dropped"


class Migration:
    """One `rollbackd migrate` of one service. Blocking work (SQLite, copies, the state DB) runs in threads."""

    def __init__(
        self,
        service: ServiceConfig,
        *,
        state_dir: StateDir,
        history: History,
        http: HttpClient,
        control: ServiceControl | None = None,
        vault: Vault | None = None,
        metrics: Metrics | None = None,
        replication: ReplicationPause | None = None,
        clock: Callable[[], float] = time.time,
        say: Say = _quiet,
    ) -> None:
        self.service = service
        self.name = service.name
        self.state_dir = state_dir
        self.history = history
        self.control = control or ServiceControl(service)
        self.vault = vault or Vault(state_dir.vault(service.name))
        self.metrics = metrics
        self.replication = replication or NoPause()  # paused around a restore's swap, as `rollbackd restore` does
        self.clock = clock
        self.say = say
        self.verifier = Verifier(service, http)
        # Upgrades see the code's scripts only (a script kept in the vault, e.g. one blocked and removed, is never
        # applied); downgrades also see the vault's, so a revision whose script left the code can be undone.
        self.upgrader = AlembicRunner(service, state_dir.scratch)
        self.downgrader = AlembicRunner(service, state_dir.scratch, self.vault)
        self.threshold = data_loss_threshold(service)
        self.steps: list[Step] = []
        self.interrupted: str | None = None  # the signal's name, once one arrived
        self._holding_lock = False
        self._task: asyncio.Task[Any] | None = None
        self._wake = asyncio.Event()

    def _stopping(self) -> bool:
        """Whether an interrupt arrived (a method: the attribute changes under awaits, from a signal handler)."""
        return self.interrupted is not None

    def interrupt(self, signal_name: str) -> None:
        """Ctrl-C or SIGTERM: cancel while nothing is held; later, stop at the next safe point and roll back.

        Called from the event loop (``loop.add_signal_handler``)."""
        if self._stopping():
            self._detail(f"{signal_name} again: the deploy is being stopped safely; wait for it to finish")
            return
        self.interrupted = signal_name
        if not self._holding_lock:
            if self._task is not None:
                self._task.cancel()
            return
        self._detail(f"{signal_name}: stopping the deploy at the next safe point (the step in progress finishes)")
        self._wake.set()

    async def run(self, options: MigrateOptions) -> MigrateReport:
        """Migrate. Raise MigrateError when it cannot start (nothing touched); otherwise return the report.

        An interrupt before the service lock is held cancels this coroutine (asyncio.CancelledError)."""
        self._task = asyncio.current_task()
        plan = await self._plan(options)
        if plan.nothing_to_do:
            self._step("plan", True, f"nothing to do: the database is already at {plan.target}")
            return self._report(plan, "nothing_to_do", f"already at {plan.target}")
        refusals = await self._refusals(plan, options.force)
        if refusals:
            return self._report(plan, "refused", "; ".join(refusals), refusals=refusals)
        lock = ServiceLock(
            self.state_dir.root, self.name, f"{MIGRATE_LOCK_PURPOSE} to {plan.target}", changes_database=True
        )
        try:
            holder = await asyncio.to_thread(lock.inspect)
            if holder is not None and holder.held:
                self._step("service lock", True, _waiting_for(holder, options.lock_wait))
            await _acquire(lock, options.lock_wait)
        except ServiceBusy as busy:
            raise MigrateError(
                "busy", f"{busy} (waited {options.lock_wait:.0f}s); nothing was migrated, try again when it is done"
            ) from busy
        except OSError as error:
            message = f"cannot take the service lock in {self.state_dir.root}: {error}"
            raise MigrateError("unavailable", message) from error
        self._holding_lock = True
        if self.interrupted is not None:  # it arrived while the lock was being taken
            self._wake.set()
        try:
            return await self._locked(options, plan)
        finally:
            await asyncio.to_thread(lock.release)

    async def _plan(self, options: MigrateOptions) -> UpgradePlan:
        try:
            current = await asyncio.to_thread(live_revision, self.service.database)
            return plan_upgrade(self.service, self.vault, current, options.target)
        except DatabaseUnavailable as error:
            raise MigrateError("unavailable", str(error)) from error
        except PlanError as error:
            raise MigrateError("usage", str(error)) from error

    async def _refusals(self, plan: UpgradePlan, force: bool) -> tuple[str, ...]:
        blocked = await asyncio.to_thread(self.history.blocked_revisions, self.name)
        found = []
        for revision in plan.pending:
            record = blocked.get(revision)
            if record is None:
                continue
            incident = f"incident {record.incident_id}" if record.incident_id is not None else "no incident"
            found.append(f"revision {revision} is blocked ({incident}): {record.reason}")
        for line in found:
            self._step("blocked revision", force, line + ("; deploying it anyway (--force)" if force else ""))
        if found and not force:
            self._step("refused", False, "pass --force to deploy a blocked revision anyway")
            return tuple(found)
        return ()

    # -- under the lock ---------------------------------------------------------------------------------------

    async def _locked(self, options: MigrateOptions, planned: UpgradePlan) -> MigrateReport:
        plan = await self._plan(options)  # again: the database may have moved while the lock was awaited
        if plan.nothing_to_do:
            self._step("plan", True, f"nothing to do: the database is already at {plan.target}")
            return self._report(plan, "nothing_to_do", f"already at {plan.target}")
        if plan.pending != planned.pending:
            refusals = await self._refusals(plan, options.force)
            if refusals:
                return self._report(plan, "refused", "; ".join(refusals), refusals=refusals)
        self._step("plan", True, f"{plan.from_revision} → {plan.target}: {' → '.join(plan.pending)}")
        rehearsal: Mapping[str, Any] | None = None
        if options.rehearse and not self._stopping():
            rehearsal = await self._rehearse(plan)
            if not rehearsal["ok"]:
                return self._report(
                    plan, "aborted", f"{rehearsal['summary']}; nothing was touched", rehearsal=rehearsal
                )
        if self._stopping():
            message = f"interrupted ({self.interrupted}) before the deploy began; nothing was touched"
            self._step("interrupted", False, message)
            return self._report(plan, "aborted", message, rehearsal=rehearsal)
        try:
            await asyncio.to_thread(self.vault.store_from, self.service.versions_dir)
        except OSError as error:  # the scripts are still in the versions dir; the vault only helps later
            self._step("script vault", False, f"cannot keep the scripts in the vault: {error}")
        deploy = await self._begin(plan)
        if self._stopping():
            return await self._abandoned(deploy, rehearsal)
        try:
            failure = await self._deploy(deploy, options)
        except Exception as error:  # noqa: BLE001 - whatever broke after the backup, the deploy is undone
            self._step("deploy", False, f"unexpected error: {type(error).__name__}: {error}")
            failure = _Failure("migration_failed", f"the deploy broke off: {type(error).__name__}: {error}", {})
        if failure is None:
            return await self._succeeded(deploy, rehearsal)
        return await self._roll_back(deploy, failure, rehearsal)

    async def _rehearse(self, plan: UpgradePlan) -> Mapping[str, Any]:
        started = time.monotonic()
        try:
            report = await rehearse(
                self.service, state_dir=self.state_dir, vault=self.vault, to=plan.target, say=self._detail
            )
        except (RehearsalRefused, BackupError, PlanError, DatabaseUnavailable) as error:
            self._step("rehearse", False, str(error), time.monotonic() - started)
            return {"ok": False, "summary": f"rehearsal not run: {error}"}
        self._step("rehearse", report.ok, report.summary(), time.monotonic() - started)
        return report.to_json()

    async def _begin(self, plan: UpgradePlan) -> _Deploy:
        """The pre-deploy backup, its record as the fallback, and the deploy window. Raise MigrateError."""
        started = time.monotonic()
        try:
            backup = await asyncio.to_thread(take_backup, self.service, reason="pre-deploy", metrics=self.metrics)
        except BackupError as error:
            self._step("pre-deploy backup", False, str(error), time.monotonic() - started)
            raise MigrateError("unavailable", f"pre-deploy backup failed: {error}; nothing was migrated") from error
        manifest = backup.manifest
        self._step(
            "pre-deploy backup",
            True,
            f"{manifest.name} (revision {manifest.revision}, rows {_counts(manifest.row_counts)}, verified)",
            time.monotonic() - started,
        )
        record = PreDeployRecord(manifest.name, plan.from_revision, self.clock(), "cli", plan.target)
        await asyncio.to_thread(record_pre_deploy, self.state_dir.service_dir(self.name), record)
        deploy_id = await asyncio.to_thread(
            self.history.open_deploy,
            self.name,
            "migrate",
            self.service.deploy.window,
            from_revision=plan.from_revision,
            pre_deploy_backup=manifest.name,
            code_commit=await asyncio.to_thread(self._code_before_deploy),
            detail={
                "schema_fingerprint": manifest.schema_fingerprint,
                "target": plan.target,
                "pending": list(plan.pending),
                "pid": os.getpid(),
            },
        )
        self._step("deploy window", True, f"deploy {deploy_id} opened in the history (trigger migrate)")
        return _Deploy(plan, manifest, deploy_id)

    def _code_before_deploy(self) -> str | None:
        """The code version to go back to. A deploy script pulls the new code before it calls migrate, so the
        version the daemon recorded when that code arrived (its open deploy window, not one of a finished deploy)
        comes first; else now's."""
        window = self.history.open_deploy_window(self.name)
        if window is not None and window.code_commit and window.outcome == "open":
            return window.code_commit
        return read_code_version(self.service)

    async def _deploy(self, deploy: _Deploy, options: MigrateOptions) -> _Failure | None:
        """Upgrade, restart, watch. Return why it failed, or None."""
        target = deploy.plan.target
        result = await self.upgrader.upgrade(target)
        if not result.ok:
            line = error_line(result.output_tail)
            self._step("alembic upgrade", False, f"{_ended(result)}: {line}", result.duration)
            return _Failure(
                "migration_failed",
                f"alembic upgrade {target} failed during `rollbackd migrate`: {line}",
                {"command": result.record(), "target": target},
            )
        self._step("alembic upgrade", True, f"{deploy.plan.from_revision} → {target}", result.duration)
        if self._stopping():
            return self._interrupted_failure(deploy, "after the upgrade")
        restart = self.service.deploy.restart_after_migrate if options.restart is None else options.restart
        if restart and self.control.can_act:
            started = time.monotonic()
            try:
                await self.control.run_async("restart")
            except ControlError as error:
                self._step("restart", False, str(error), time.monotonic() - started)
                evidence = {"command": error.result.record()} if error.result else {}
                return _Failure("restart_failed", f"the service did not restart after the migration: {error}", evidence)
            self._step("restart", True, f"{self.control.kind} restart", time.monotonic() - started)
        elif restart:
            self._step("restart", True, "control kind none: restart the service yourself to load the new code")
        if self._stopping():
            return self._interrupted_failure(deploy, "after the restart")
        return await self._watch(deploy, options)

    async def _watch(self, deploy: _Deploy, options: MigrateOptions) -> _Failure | None:
        window = self.service.policy.verify_timeout if options.window is None else options.window
        expect = Expectations(
            revision=deploy.plan.target,
            reference_counts=known_counts(deploy.manifest.row_counts),
            count_tolerance=self.threshold,
            logs_since=self.clock(),
        )
        started = time.monotonic()
        for round_number in range(1, VERIFY_ROUNDS + 1):
            delay = started + window * (round_number - 1) / (VERIFY_ROUNDS - 1) - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            if self._stopping():
                return self._interrupted_failure(deploy, f"before verification round {round_number}")
            wait = window if round_number == 1 else min(LATER_HEALTH_WAIT, window)
            verification = await self.verifier.verify(expect, wait_for_health=wait)
            summary = verification.summary()
            deploy.window.append({"at": verification.started_at, "ok": verification.ok, "summary": summary})
            name = f"verify {round_number}/{VERIFY_ROUNDS}"
            self._step(name, verification.ok, verification.summary(), verification.duration)
            if not verification.ok:
                data = [item for item in verification.failures if item.name == "data"]
                if data:
                    return _Failure(
                        "rows_dropped",
                        f"data loss after migrating to {deploy.plan.target}: {data[0].detail} "
                        f"(more than {self.threshold:.0%} of the pre-deploy rows gone)",
                        {"verification": verification.as_dicts(), "pre_deploy_counts": deploy.manifest.row_counts},
                        verification,
                    )
                return _Failure(
                    "verification_failed",
                    f"post-deployment verification failed after migrating to {deploy.plan.target}: "
                    + "; ".join(f"{item.name}: {item.detail}" for item in verification.failures),
                    {"verification": verification.as_dicts()},
                    verification,
                )
        return None

    def _interrupted_failure(self, deploy: _Deploy, where: str) -> _Failure:
        explanation = (
            f"the deploy to {deploy.plan.target} was interrupted ({self.interrupted}) {where}; rolling back to "
            f"the pre-deploy revision {deploy.plan.from_revision}"
        )
        self._step("interrupted", False, explanation)
        return _Failure("interrupted", explanation, {"signal": self.interrupted, "where": where})

    async def _abandoned(self, deploy: _Deploy, rehearsal: Mapping[str, Any] | None) -> MigrateReport:
        """Interrupted after the pre-deploy backup, before the upgrade: close the window, keep the backup."""
        await asyncio.to_thread(
            self.history.update_deploy,
            deploy.deploy_id,
            outcome="aborted",
            closes_at=self.clock(),
            detail=self._deploy_detail(deploy, finished=self.clock(), revision_after=deploy.plan.from_revision),
        )
        message = (
            f"interrupted ({self.interrupted}) before the upgrade; nothing was migrated "
            f"(the pre-deploy backup {deploy.manifest.name} is kept)"
        )
        self._step("interrupted", False, message)
        return self._report(deploy.plan, "aborted", message, deploy=deploy, rehearsal=rehearsal)

    async def _succeeded(self, deploy: _Deploy, rehearsal: Mapping[str, Any] | None) -> MigrateReport:
        target = deploy.plan.target
        await asyncio.to_thread(
            self.history.update_deploy,
            deploy.deploy_id,
            outcome="ok",
            to_revision=target,
            detail=self._deploy_detail(deploy, finished=self.clock()),
        )
        message = (
            f"migrated {deploy.plan.from_revision} → {target} and verified; the deploy window stays open for "
            f"{self.service.deploy.window:.0f}s with {deploy.manifest.name} as the fallback"
        )
        self._step("done", True, message)
        return self._report(deploy.plan, "ok", message, deploy=deploy, revision_after=target, rehearsal=rehearsal)

    # -- the way back -------------------------------------------------------------------------------------------

    async def _roll_back(
        self, deploy: _Deploy, failure: _Failure, rehearsal: Mapping[str, Any] | None
    ) -> MigrateReport:
        failed_at = await asyncio.to_thread(_revision_or_none, self.service)  # the version being rolled back
        incident = await asyncio.to_thread(
            self.history.open_incident,
            self.name,
            "migrate",
            failure.signal,
            failure.explanation,
            failure.evidence,
            automatic=False,
            in_deploy_window=True,
            revision_before=failed_at,
        )
        self._step("incident", False, f"incident {incident} opened: {failure.explanation}")
        if failure.verification is not None:
            await asyncio.to_thread(
                self.history.record_verification, self.name, incident, None, False, failure.verification.as_dicts()
            )
        verification: Verification | None = None
        backup_used: str | None = None
        if failure.data_loss:
            self._step("downgrade", True, "skipped: a downgrade cannot bring lost rows back; restoring at once")
        else:
            verification = await self._downgrade(deploy, incident)
        if verification is None or not verification.ok:
            verification, backup_used = await self._restore(deploy, incident)
        blocked: tuple[str, ...] = ()
        if failure.data_loss:
            target = deploy.plan.target
            await asyncio.to_thread(self.history.block_revision, self.name, target, failure.explanation, incident)
            blocked = (target,)
            self._step("block revision", True, f"{target} is blocked: `rollbackd migrate` refuses it from now on")
        recovered = verification is not None and verification.ok
        revision_after = await asyncio.to_thread(_revision_or_none, self.service)
        await asyncio.to_thread(
            self.history.close_incident,
            incident,
            "recovered" if recovered else "failed",
            revision_after=revision_after,
            backup_used=backup_used,
            notes="; ".join(filter(None, ["rollbackd migrate", f"revision {blocked[0]} blocked" if blocked else ""])),
        )
        await asyncio.to_thread(
            self.history.update_deploy,
            deploy.deploy_id,
            outcome="rolled_back" if recovered else "failed",
            incident_id=incident,
            to_revision=deploy.plan.target,
            detail=self._deploy_detail(deploy, finished=self.clock(), revision_after=revision_after),
        )
        if recovered:
            message = (
                f"the migration to {deploy.plan.target} failed ({failure.signal}) and was rolled back to "
                f"{revision_after}{' from ' + backup_used if backup_used else ''}; incident {incident}"
            )
        else:
            message = (
                f"the migration to {deploy.plan.target} failed ({failure.signal}) and the rollback did not verify; "
                f"the database is at {revision_after}; incident {incident}: a person must look now"
            )
        self._step("done", False, message)
        return self._report(
            deploy.plan,
            "rolled_back" if recovered else "failed",
            message,
            deploy=deploy,
            incident=incident,
            revision_after=revision_after,
            blocked=blocked,
            rehearsal=rehearsal,
        )

    async def _downgrade(self, deploy: _Deploy, incident: int) -> Verification | None:
        """Downgrade to the pre-deploy revision (stop, downgrade, start) and verify. None when it failed."""
        goal = deploy.plan.from_revision
        current = await asyncio.to_thread(_revision_or_none, self.service)
        action = await asyncio.to_thread(
            self.history.start_action,
            self.name,
            "downgrade",
            incident,
            automatic=False,
            detail={"from_revision": current, "target": goal},
        )
        commands: list[CommandResult] = []
        started = time.monotonic()
        if goal is None:
            outcome, detail = "failed", "the database had no revision before the deploy: nothing to downgrade to"
        elif current == goal:
            outcome, detail = "success", f"already at {goal}: no alembic command to run"
        else:
            outcome, detail = await self._run_downgrade(goal, commands)
        await asyncio.to_thread(
            self.history.finish_action,
            action,
            outcome,
            commands=[result.record() for result in commands],
            detail={"result": detail},
        )
        self._step(f"downgrade to {goal}", outcome == "success", detail, time.monotonic() - started)
        if outcome != "success":
            return None
        manifest = deploy.manifest
        expect = Expectations(
            revision=goal,
            reference_counts=known_counts(manifest.row_counts),
            count_tolerance=DOWNGRADE_COUNT_TOLERANCE,
            indexes=manifest.indexes,
            schema_fingerprint=manifest.schema_fingerprint,
            logs_since=self.clock(),
        )
        return await self._verify_recovery(expect, incident, action, "verify the downgrade")

    async def _run_downgrade(self, goal: str, commands: list[CommandResult]) -> tuple[str, str]:
        stop_start = self.control.can_act
        if stop_start:
            try:
                commands.extend(await self.control.run_async("stop"))
            except ControlError as error:
                commands.extend([error.result] if error.result else [])
                return "failed", f"the service did not stop: {error}"
        result = await self.downgrader.downgrade(goal)
        commands.append(result)
        if stop_start:
            try:
                commands.extend(await self.control.run_async("start"))
            except ControlError as error:
                commands.extend([error.result] if error.result else [])
                return "failed", f"downgraded, but the service did not start: {error}"
        if not result.ok:
            return "failed", f"alembic downgrade {goal}: {_ended(result)}: {error_line(result.output_tail)}"
        note = "" if stop_start else " (control kind none: the service was not stopped)"
        return "success", f"alembic downgrade {goal}: exit 0{note}"

    async def _restore(self, deploy: _Deploy, incident: int) -> tuple[Verification | None, str | None]:
        """Restore the pre-deploy backup and verify. Return the verification (None: not restored) and the name."""
        name = deploy.manifest.name
        action = await asyncio.to_thread(
            self.history.start_action, self.name, "restore", incident, automatic=False, detail={"backup": name}
        )
        started = time.monotonic()
        try:
            entry = await asyncio.to_thread(self._pre_deploy_entry, name)
            report = await asyncio.to_thread(
                restore_backup,
                self.service,
                entry,
                control=self.control,
                state_dir=self.state_dir,
                reason="rollback",
                clock=self.clock,
                replication=self.replication,
            )
        except RestoreError as error:
            await asyncio.to_thread(
                self.history.finish_action, action, "failed", detail={"error": str(error), "reason": error.reason}
            )
            self._step(f"restore {name}", False, str(error), time.monotonic() - started)
            return None, None
        await asyncio.to_thread(
            self.history.finish_action,
            action,
            "success",
            commands=[_control_record(self.control, verb) for verb in ("stop", "start") if self.control.can_act],
            detail={"restore": report.to_json()},
        )
        kept = ", ".join(os.path.basename(path) for path in report.quarantined) or "nothing"
        self._step(f"restore {name}", True, f"restored; kept the replaced file as {kept}", time.monotonic() - started)
        manifest = deploy.manifest
        expect = Expectations(
            revision=manifest.revision,
            reference_counts=known_counts(manifest.row_counts),
            indexes=manifest.indexes,
            schema_fingerprint=manifest.schema_fingerprint,
            logs_since=self.clock(),
        )
        return await self._verify_recovery(expect, incident, action, "verify the restore"), name

    def _pre_deploy_entry(self, name: str) -> BackupEntry:
        """The pre-deploy backup as a verified catalog entry. Raise RestoreError when it is gone or unverified."""
        for entry in list_backups(self.service.backups.dir, self.service.database.stem).backups:
            if entry.name == name:
                if not entry.verified:
                    problem = f"the pre-deploy backup {name} is no longer verified: {entry.problem}"
                    raise RestoreError("refused", problem)
                return entry
        raise RestoreError("no_backup", f"the pre-deploy backup {name} is gone from {self.service.backups.dir}")

    async def _verify_recovery(self, expect: Expectations, incident: int, action: int, name: str) -> Verification:
        verification = await self.verifier.verify(expect)
        await asyncio.to_thread(
            self.history.record_verification, self.name, incident, action, verification.ok, verification.as_dicts()
        )
        self._step(name, verification.ok, verification.summary(), verification.duration)
        return verification

    # -- output -------------------------------------------------------------------------------------------------

    def _step(self, name: str, ok: bool, detail: str, seconds: float = 0.0) -> None:
        step = Step(name, ok, detail, seconds)
        self.steps.append(step)
        self.say(step.render())

    def _detail(self, line: str) -> None:
        """A rehearsal's own lines, indented under its step."""
        self.say("\n".join(f"       {part}" for part in line.splitlines()))

    def _deploy_detail(self, deploy: _Deploy, *, finished: float, revision_after: str | None = None) -> dict[str, Any]:
        return {
            "schema_fingerprint": deploy.manifest.schema_fingerprint,
            "target": deploy.plan.target,
            "pending": list(deploy.plan.pending),
            "pid": os.getpid(),
            "finished_at": finished,
            "window": deploy.window,
            "revision_after": revision_after or deploy.plan.target,
            "steps": [step.to_json() for step in self.steps],
        }

    def _report(
        self,
        plan: UpgradePlan,
        outcome: Outcome,
        message: str,
        *,
        deploy: _Deploy | None = None,
        incident: int | None = None,
        revision_after: str | None = None,
        blocked: tuple[str, ...] = (),
        refusals: tuple[str, ...] = (),
        rehearsal: Mapping[str, Any] | None = None,
    ) -> MigrateReport:
        return MigrateReport(
            service=self.name,
            outcome=outcome,
            message=message,
            from_revision=plan.from_revision,
            target=plan.target,
            pending=plan.pending,
            revision_after=revision_after or plan.from_revision,
            pre_deploy_backup=deploy.manifest.name if deploy else None,
            deploy_id=deploy.deploy_id if deploy else None,
            incident_id=incident,
            blocked=blocked,
            refusals=refusals,
            steps=tuple(self.steps),
            rehearsal=rehearsal,
        )


async def _acquire(lock: ServiceLock, timeout: float) -> None:
    """Wait for the service lock in short tries, so that an interrupt cancels the wait at once (a thread blocked
    in a long acquire would keep the process alive until its timeout). Raise ServiceBusy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.to_thread(lock.acquire, 0)
            return
        except ServiceBusy:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(LOCK_POLL)


def _waiting_for(holder: LockHolder, seconds: float) -> str:
    return f"waiting up to {seconds:.0f}s: {holder.purpose or 'an action'} held by pid {holder.pid or '?'}"


def _revision_or_none(service: ServiceConfig) -> str | None:
    try:
        return live_revision(service.database)
    except DatabaseUnavailable:
        return None


def _counts(counts: Mapping[str, int | None]) -> str:
    return ", ".join(f"{table} {count}" for table, count in counts.items()) or "none watched"


def _ended(result: CommandResult) -> str:
    """How a command ended, in a few words (its argv is in the history's command record)."""
    if result.timed_out:
        return f"timed out after {result.duration:.0f}s"
    if result.exit_code is None:
        return f"could not run: {result.error}"
    return f"exit {result.exit_code}"


def _control_record(control: ServiceControl, verb: Literal["stop", "start"]) -> dict[str, Any]:
    """The control commands a restore ran (it reports steps and durations, not each command's output)."""
    return {"argv": [list(argv) for argv in control.plan(verb).argvs], "run_by": "restore"}
