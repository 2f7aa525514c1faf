"""Carry out one rung of a recovery ladder the way the runbook's sections describe it.

- restart: ``systemctl restart vbrpg-backend`` (or the configured control).
- downgrade: safety backup, stop, ``alembic downgrade TARGET`` (with the script vault), start.
- restore: stop, keep the current file as ``<stem>_corrupted_<ts>.db``, put the chosen verified backup in place,
  check it, start (``backup.restore``); optionally with the code checked out at the pre-deploy commit.
- stop: stop the service and leave it stopped for a person.

Each action holds the service lock while it runs, records every external command it ran, announces the
revision it will leave behind (so the deploy tracker does not mistake it for a deploy) and says what the
verification must prove afterwards. Blocking work (SQLite, copies) runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from rollbackd.actions.alembic_runner import AlembicRunner
from rollbackd.actions.quarantine import quarantine_revision
from rollbackd.actions.service_state import service_state
from rollbackd.backup.catalog import BackupEntry, list_backups
from rollbackd.backup.pre_deploy import read_pre_deploy
from rollbackd.backup.restore import RestoreError, RestoreReport, restore_backup
from rollbackd.backup.restore_journal import JournalError, read_journal
from rollbackd.backup.snapshot import BackupError, take_backup
from rollbackd.config.model import ServiceConfig
from rollbackd.host.commands import CommandResult, run_command_async
from rollbackd.metrics import Metrics
from rollbackd.policy.conditions import DeployWindow
from rollbackd.policy.deploys import DeployTracker
from rollbackd.policy.engine import ActionContext, ActionOutcome
from rollbackd.policy.rules import REPLICA_FALLBACK, Rung
from rollbackd.replication.pause import NoPause, ReplicationPause
from rollbackd.replication.restore import ReplicaRestoreError, adopt_copy, fetch_point, plan_point
from rollbackd.state.service_lock import LockHolder, ServiceBusy, ServiceLock
from rollbackd.state.state_dir import StateDir
from rollbackd.state.vault import Vault
from rollbackd.target.code_version import CodeVersionError, rollback_argv
from rollbackd.target.control import ControlError, ServiceControl
from rollbackd.target.database import DatabaseUnavailable, connect_readonly, count_rows, known_counts, read_revision
from rollbackd.target.verify import Expectations

log = logging.getLogger(__name__)

LOCK_WAIT = 120.0  # a scheduled backup holds the lock for seconds; a CLI migrate may hold it longer
RESTART_COUNT_TOLERANCE = 0.05
DOWNGRADE_COUNT_TOLERANCE = 0.10
CODE_ROLLBACK_TIMEOUT = 120.0  # seconds for `git checkout` or `docker tag`
FAULT_MARGIN = 1.0  # seconds before a fault's first failing observation, when no passing check is known before it


class ActionFailed(Exception):
    """An action that could not be carried out; the message says why in one line."""


class Executor:
    def __init__(
        self,
        service: ServiceConfig,
        *,
        state_dir: StateDir,
        control: ServiceControl,
        vault: Vault,
        deploys: DeployTracker,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        replication: ReplicationPause | None = None,
    ) -> None:
        self.service = service
        self.state_dir = state_dir
        self.control = control
        self.vault = vault
        self.deploys = deploys
        self.metrics = metrics
        self.clock = clock
        # Litestream stops for every swap and starts again after it: a new lineage from the restored file.
        self.replication: ReplicationPause = replication or NoPause()
        self.alembic = AlembicRunner(service, state_dir.scratch, vault)

    async def execute(self, rung: Rung, context: ActionContext) -> ActionOutcome:
        lock = ServiceLock(
            self.state_dir.root,
            self.service.name,
            f"rollbackd {rung.kind} (incident {context.incident_id})",
            changes_database=rung.kind in ("downgrade", "restore"),
        )
        try:
            await asyncio.to_thread(lock.acquire, LOCK_WAIT)
        except ServiceBusy as busy:
            return ActionOutcome(False, str(busy))
        superseded = _superseded_by(lock.previous, context)
        if superseded:
            await asyncio.to_thread(lock.release)
            return ActionOutcome(False, superseded, superseded=True)
        commands: list[CommandResult] = []
        try:
            outcome = await self._carry_out(rung, context, commands)
        except ActionFailed as failure:
            outcome = ActionOutcome(False, str(failure))
        finally:
            await asyncio.to_thread(lock.release)
        return _with_commands(outcome, commands)

    async def _carry_out(self, rung: Rung, context: ActionContext, commands: list[CommandResult]) -> ActionOutcome:
        if rung.kind == "restart":
            return await self._restart(commands)
        if rung.kind == "stop":
            await self._control("stop", commands)
            return ActionOutcome(True, "service stopped; it stays stopped until a person starts it", verify=False)
        if rung.kind == "downgrade":
            return await self._downgrade(rung, context, commands)
        if rung.kind == "restore":
            return await self._restore(rung, context, commands)
        raise ActionFailed(f"{rung.kind} is not an action the executor carries out")

    # restart

    async def _restart(self, commands: list[CommandResult]) -> ActionOutcome:
        revision, counts = await asyncio.to_thread(self._facts)
        judged = await self._control_judged("restart", commands)
        return ActionOutcome(
            True,
            "service restarted" if judged is None else f"service up after the restart: {judged['verdict']}",
            Expectations(
                revision=revision,
                reference_counts=known_counts(counts),
                count_tolerance=RESTART_COUNT_TOLERANCE,
                logs_since=self.clock(),
                integrity="quick",
            ),
            revision_after=revision,
            detail={} if judged is None else {"service_after": judged},
        )

    # downgrade

    async def _downgrade(self, rung: Rung, context: ActionContext, commands: list[CommandResult]) -> ActionOutcome:
        revision, counts = await asyncio.to_thread(self._facts)
        target = self._downgrade_target(rung, context, revision)
        detail: dict[str, Any] = {"from_revision": revision, "target": target}
        try:
            backup = await asyncio.to_thread(take_backup, self.service, reason="pre-restore", metrics=self.metrics)
            detail["safety_backup"] = backup.manifest.name
        except BackupError as error:
            detail["safety_backup"] = f"not taken: {error}"
            log.warning("%s: safety backup before the downgrade failed: %s", self.service.name, error)
        self.deploys.expect_revision(target)
        await self._control("stop", commands)
        result: CommandResult | None = None
        try:
            if revision == target:
                detail["alembic"] = f"already at {target}: nothing to downgrade"
            else:
                result = await self.alembic.downgrade(target)
                commands.append(result)
        finally:
            started = await self._control_judged("start", commands)
        if started is not None:
            detail["service_after"] = started
        if result is not None and not result.ok:
            return ActionOutcome(False, f"alembic downgrade {target}: {result.summary()}", detail=detail)
        missing = list(context.decision.reading.evidence.get("missing_indexes") or ())
        return ActionOutcome(
            True,
            f"downgraded {revision} → {target}",
            Expectations(
                revision=target,
                reference_counts=known_counts(counts),
                count_tolerance=DOWNGRADE_COUNT_TOLERANCE,
                indexes=missing,
                schema_fingerprint=_pre_deploy_fingerprint(context.decision.deploy)
                if rung.target == "pre_deploy"
                else None,
                logs_since=self.clock(),
            ),
            revision_after=target,
            detail=detail,
        )

    def _downgrade_target(self, rung: Rung, context: ActionContext, current: str | None) -> str:
        deploy = context.decision.deploy
        if rung.target == "pre_deploy":
            if deploy is None or not deploy.from_revision:
                raise ActionFailed("no pre-deploy revision is known for this deploy")
            return deploy.from_revision
        if rung.target == "code_head":
            heads = context.decision.reading.evidence.get("code_heads")
            if not isinstance(heads, str) or not heads or "+" in heads or heads == "none":
                raise ActionFailed(f"the code has no single head to downgrade to ({heads})")
            return heads
        if rung.target and rung.target.startswith("to:"):
            return self._known_target(rung.target.removeprefix("to:"), current)
        steps = int(rung.target) if rung.target and rung.target.lstrip("-").isdigit() else -1
        if current is None:
            raise ActionFailed("the database has no alembic revision to downgrade from")
        graph = self.vault.combined_graph(self.service.versions_dir)
        target = current
        for _ in range(abs(steps)):
            parents = graph.parents(target)
            if len(parents) != 1:
                raise ActionFailed(f"revision {target} has no single parent to downgrade to ({parents or 'base'})")
            target = parents[0]
        return target

    def _known_target(self, wanted: str, current: str | None) -> str:
        """``wanted`` as a revision a downgrade from ``current`` can reach, by the scripts and the vault (a unique
        prefix is resolved), before anything is touched: Alembic would only say so after the safety backup and
        the stop. ``base`` is below every revision. Raise ActionFailed naming what is wrong."""
        if current is None:
            raise ActionFailed("the database has no alembic revision to downgrade from")
        if wanted == "base":
            return wanted
        graph = self.vault.combined_graph(self.service.versions_dir)
        matches = [wanted] if wanted in graph else sorted(r for r in graph.scripts if r.startswith(wanted))
        if not matches:
            raise ActionFailed(
                f"revision {wanted!r} is in neither {self.service.versions_dir} nor the script vault: nothing to "
                "downgrade to"
            )
        if len(matches) > 1:
            raise ActionFailed(f"revision {wanted!r} is ambiguous: {', '.join(matches)}")
        target = matches[0]
        if target != current and current in graph and target not in graph.ancestors(current):
            raise ActionFailed(f"revision {target} is not below the database's revision {current}: not a downgrade")
        return target

    def check(self, rung: Rung, context: ActionContext) -> str | None:
        """What makes a downgrade impossible here and now (a revision neither the scripts nor the vault know, one
        not below the database's), checked without touching anything; None when it can be tried. For `rollbackd
        rollback`, before it records, backs up or stops anything. (A restore picks its backup before it stops the
        service, so it needs no separate check.)"""
        if rung.kind != "downgrade":
            return None
        try:
            self._downgrade_target(rung, context, self._facts()[0])
        except ActionFailed as failure:
            return str(failure)
        return None

    # restore

    async def _restore(self, rung: Rung, context: ActionContext, commands: list[CommandResult]) -> ActionOutcome:
        entry, source = await asyncio.to_thread(self._restore_source, rung, context)
        manifest = entry.manifest
        if manifest is None:  # only verified entries are chosen, and they have manifests
            raise ActionFailed(f"{entry.name} has no manifest")
        self.deploys.expect_revision(manifest.revision)
        commit = context.decision.deploy.code_commit if context.decision.deploy else None
        wanted = self.service.policy.code_rollback if context.code_rollback is None else context.code_rollback
        if wanted and commit is None and context.code_rollback:
            raise ActionFailed("no code version was recorded before the deploy, so there is nothing to go back to")
        code_rollback = wanted and commit is not None
        if code_rollback:
            await self._control("stop", commands)
            try:
                await self._roll_code_back(str(commit), commands)
            except ActionFailed:
                await self._control("start", commands)  # nothing was restored: the service runs as it was
                raise
        started: dict[str, Any] | None
        try:
            report = await asyncio.to_thread(self._swap_in, entry, code_rollback, context)
        except RestoreError as error:
            if code_rollback:
                await self._control("start", commands)
            restored = await self._restored_but_not_started(error) if not code_rollback else None
            if restored is None:
                raise ActionFailed(f"restore of {entry.name} failed ({error.reason}): {error}") from error
            report, started = restored
        else:
            started = await self._control_judged("start", commands) if code_rollback else None
        blocked = None
        quarantined: list[str] = []
        if rung.block_revision:
            evidence_revision = context.decision.reading.evidence.get("revision")
            blocked = evidence_revision if isinstance(evidence_revision, str) else None
        if blocked:
            folder = self.state_dir.service_dir(self.service.name) / "quarantine"
            moved = await asyncio.to_thread(
                quarantine_revision, self.service.versions_dir, blocked, folder, self.service.name
            )
            quarantined = [str(path) for path in moved]
        return ActionOutcome(
            True,
            f"restored {entry.name} (revision {manifest.revision}); kept the damaged file as "
            f"{', '.join(report.quarantined) or 'nothing'}",
            Expectations(
                revision=manifest.revision,
                reference_counts=known_counts(manifest.row_counts),
                indexes=manifest.indexes,
                schema_fingerprint=manifest.schema_fingerprint,
                logs_since=self.clock(),
                integrity="quick",
            ),
            backup_used=entry.name,
            revision_after=manifest.revision,
            blocked_revision=blocked,
            detail={
                **source,
                "rows_lost_estimate": rows_lost(
                    context.decision.reading.evidence.get("rows_before"), manifest.row_counts
                ),
                "restore": report.to_json(),
                "code_commit": commit if code_rollback else None,
                "quarantined_scripts": quarantined,
                **({"service_after": started} if started is not None else {}),
            },
        )

    def _swap_in(self, entry: BackupEntry, service_stopped: bool, context: ActionContext) -> RestoreReport:
        """The swap, with replication paused around it (in a worker thread: pause/resume block)."""
        folder = self.service.database.parent
        if not folder.exists():  # a wiped data dir: the folder comes back, the database only from a verified copy
            log.warning("%s: %s is gone: creating it for the restored database", self.service.name, folder)
            folder.mkdir(parents=True, mode=0o770)
        return restore_backup(
            self.service,
            entry,
            control=self.control,
            state_dir=self.state_dir,
            reason="rollback",
            clock=self.clock,
            service_stopped=service_stopped,
            incident_id=context.incident_id,
            action_id=context.action_id,
            replication=self.replication,
        )

    def _restore_source(self, rung: Rung, context: ActionContext) -> tuple[BackupEntry, dict[str, Any]]:
        """The verified backup to put in place and where it came from. A replica rung fetches its point in time
        into a verified backup; when the replica cannot give it (unreachable, behind the moment, a copy that fails
        its checks, no room) the rung's local fallback is chosen instead and the reason recorded."""
        if rung.target is None or not rung.target.startswith("replica:"):
            return self._choose_backup(rung, context), {"source": "local"}
        point, basis, expected_revision = self._replica_point(rung, context)
        described = {"point": _iso(point) if point is not None else "newest", "point_basis": basis}
        try:
            copy = fetch_point(
                self.service, point, state_dir=self.state_dir, expected_revision=expected_revision, clock=self.clock
            )
            entry = adopt_copy(self.service, copy, clock=self.clock)
        except ReplicaRestoreError as error:
            fallback = _local_fallback(rung)
            log.warning(
                "%s: the replica cannot give %s (%s): %s instead",
                self.service.name,
                described["point"],
                error,
                fallback.describe(),
                extra={"service": self.service.name},
            )
            entry = self._choose_backup(fallback, context)
            return entry, {
                "source": "local",
                **described,
                "replica_refused": {"reason": error.reason, "message": str(error)},
            }
        replicated = _iso(copy.replicated_until) if copy.replicated_until is not None else None
        return entry, {"source": "replica", **described, "replicated_until": replicated}

    def _replica_point(self, rung: Rung, context: ActionContext) -> tuple[float | None, str, str | None]:
        """(the moment to restore, why that moment, the revision the copy must be at)."""
        if rung.target == "replica:newest":
            return None, "the replica's newest moment", None
        if rung.target is not None and rung.target.startswith("replica:at:"):
            return float(rung.target.removeprefix("replica:at:")), "the moment asked for", None
        deploy = context.decision.deploy
        if rung.target == "replica:pre_deploy" and deploy is not None:
            if deploy.trigger == "revision_change":
                # Seen after the upgrade: the last schema probe at the old revision was at most one interval before.
                moment = deploy.opened_at - self.service.probes.schema_.every
                return moment, "the last schema probe before the revision changed", deploy.from_revision
            return deploy.opened_at, "the moment the deploy window opened, before the upgrade", deploy.from_revision
        evidence = context.decision.reading.evidence
        proven = evidence.get("proven_good_at")
        if isinstance(proven, int | float):
            return float(proven), "the newest passing integrity/foreign-key check before the fault", None
        first = evidence.get("first_failed_at")
        failed = float(first) if isinstance(first, int | float) else context.decision.reading.since
        return failed - FAULT_MARGIN, f"{FAULT_MARGIN:g}s before the fault's first failing check", None

    async def _restored_but_not_started(self, error: RestoreError) -> tuple[RestoreReport, dict[str, Any]] | None:
        """A restore whose database is in place but whose start command failed: if the service is up and
        healthy all the same (an operator's own start raced it), the restore is done. Return its report (from the
        journal) and what was seen; None when it really failed."""
        if error.reason != "control" or not error.touched:
            return None
        try:
            journal = read_journal(self.state_dir.service_dir(self.service.name))
        except JournalError:
            return None
        if journal is None or journal.state != "done":
            return None
        state = await service_state(self.service, self.state_dir)
        if not state.up:
            return None
        verdict = f"the start command failed ({error}), but the service is up ({state.summary()})"
        log.warning("%s: %s", self.service.name, verdict, extra={"service": self.service.name})
        report = RestoreReport(
            self.service.name,
            journal.backup,
            journal.database,
            "restored",
            quarantined=tuple(moved.target for moved in journal.moves),
            revision=journal.expected_revision,
            row_counts=dict(journal.expected_counts),
            service_started=True,
            message=verdict,
        )
        return report, {"action": "start", "command": str(error), **state.as_dict(), "verdict": verdict}

    def _choose_backup(self, rung: Rung, context: ActionContext) -> BackupEntry:
        """Pick the verified backup a restore rung means. Raise ActionFailed when there is none."""
        verified = list_backups(self.service.backups.dir, self.service.database.stem).verified
        deploy = context.decision.deploy
        if rung.target == "at_code_head":
            heads = context.decision.reading.evidence.get("code_heads")
            chosen = [entry for entry in verified if entry.revision == heads]
            what = f"at the code's head {heads}"
        elif rung.target and rung.target.startswith("backup:"):
            name = rung.target.removeprefix("backup:")
            chosen = [entry for entry in verified if entry.name == name]
            what = f"named {name} (it must exist and be verified)"
        elif rung.target and rung.target.startswith("before:"):
            moment = float(rung.target.removeprefix("before:"))
            chosen = [entry for entry in verified if entry.created_at <= moment]
            what = f"taken before {_iso(moment)}"
        elif rung.target and rung.target.startswith("revision:"):
            revision = rung.target.removeprefix("revision:")
            chosen = [entry for entry in verified if entry.revision == revision]
            what = f"of revision {revision}"
        elif rung.target == "pre_deploy" and deploy is not None:
            chosen = pre_deploy_candidates(
                verified, deploy, read_pre_deploy(self.state_dir.service_dir(self.service.name))
            )
            what = f"from before the deploy at {time.strftime('%H:%M:%S', time.gmtime(deploy.opened_at))} UTC"
        else:
            chosen = verified
            what = "at all"
        if not chosen:
            raise ActionFailed(f"no verified backup {what} in {self.service.backups.dir}")
        return chosen[-1]

    # helpers

    async def _control(self, action: str, commands: list[CommandResult]) -> None:
        try:
            commands.extend(await self.control.run_async(action))  # type: ignore[arg-type]
        except ControlError as error:
            if error.result is not None:
                commands.append(error.result)
            raise ActionFailed(f"{action} failed: {error}") from error

    async def _control_judged(self, action: str, commands: list[CommandResult]) -> dict[str, Any] | None:
        """Start or restart, judged by the service afterwards rather than by the exit code alone: a command that
        failed while the service is up and healthy (an operator's own start raced it) counts as done. Return None
        when the command succeeded, else both the exit code and what was seen. Raise ActionFailed when the
        service is not up either."""
        try:
            await self._control(action, commands)
        except ActionFailed as failure:
            state = await service_state(self.service, self.state_dir)
            exit_code = commands[-1].exit_code if commands else None
            if not state.up:
                raise ActionFailed(f"{failure}; afterwards: {state.summary()}") from failure
            verdict = f"the {action} command exited {exit_code}, but the service is up ({state.summary()})"
            log.warning("%s: %s", self.service.name, verdict, extra={"service": self.service.name})
            return {
                "action": action,
                "exit_code": exit_code,
                "command": str(failure),
                **state.as_dict(),
                "verdict": verdict,
            }
        return None

    async def _roll_code_back(self, version: str, commands: list[CommandResult]) -> None:
        """Put the code from before the deploy back: git checkout of the commit, or docker tag of the image."""
        try:
            argv = rollback_argv(self.service, version)
        except CodeVersionError as error:
            raise ActionFailed(str(error)) from error
        result = await run_command_async(argv, cwd=self.service.workdir, timeout=CODE_ROLLBACK_TIMEOUT)
        commands.append(result)
        if not result.ok:
            raise ActionFailed(f"code rollback to {version}: {result.summary()}")

    def _facts(self) -> tuple[str | None, dict[str, int | None]]:
        """The database's revision and watched row counts now, or (None, {}) when it cannot be read."""
        try:
            with contextlib.closing(connect_readonly(self.service.database)) as connection:
                return read_revision(connection), count_rows(connection, self.service.probes.rows.tables)
        except (DatabaseUnavailable, OSError) as error:
            log.warning("%s: cannot read the database before acting: %s", self.service.name, error)
            return None, {}
        except Exception as error:  # noqa: BLE001 - a corrupt file raises sqlite3.DatabaseError subclasses
            log.warning("%s: cannot read the database before acting: %s", self.service.name, error)
            return None, {}

    def plan(self, rung: Rung, context: ActionContext) -> list[str]:
        """What ``execute`` would do, step by step, for dry-run records and `rollbackd rollback --dry-run`."""
        control = [" ".join(step) for step in self.control.plan("stop").argvs] if self.control.can_act else []
        stop = f"stop the service ({'; '.join(control) or 'control kind none'})"
        if rung.kind == "restart":
            if not self.control.can_act:
                return ["cannot restart: control kind none"]
            return [f"restart the service ({'; '.join(' '.join(a) for a in self.control.plan('restart').argvs)})"]
        if rung.kind == "stop":
            return [stop]
        if rung.kind == "downgrade":
            try:
                target = self._downgrade_target(rung, context, self._facts()[0])
            except ActionFailed as failure:
                return [f"cannot downgrade: {failure}"]
            argv = " ".join([*self.service.alembic.command, "-c", str(self.service.alembic.ini), "downgrade", target])
            return [
                "take a safety backup (reason pre-restore)",
                stop,
                f"run {argv} in {self.service.workdir}",
                "start the service",
                "verify",
            ]
        if rung.kind == "restore" and rung.target is not None and rung.target.startswith("replica:"):
            point, basis, _ = self._replica_point(rung, context)
            moment = _iso(point) if point is not None else "its newest moment"
            try:
                steps = plan_point(self.service, point, state_dir=self.state_dir)
            except ReplicaRestoreError as error:
                fallback = _local_fallback(rung)
                return [f"the replica cannot give {moment} ({error}): {fallback.describe()} instead"] + self.plan(
                    fallback, context
                )
            return [f"restore the database as at {moment} ({basis}) from the replica", *steps, "verify"]
        if rung.kind == "restore":
            try:
                entry = self._choose_backup(rung, context)
            except ActionFailed as failure:
                return [f"cannot restore: {failure}"]
            db = self.service.database
            code = self._planned_code_rollback(context)
            return [
                stop,
                *code,
                f"keep {db.name} (and -wal/-shm) as {db.stem}_corrupted_<timestamp>{db.suffix}",
                f"copy {entry.name} (revision {entry.revision}) into place and check it",
                "start the service",
                "verify",
            ] + (["block the rolled-back revision"] if rung.block_revision else [])
        return [rung.describe()]

    def _planned_code_rollback(self, context: ActionContext) -> list[str]:
        wanted = self.service.policy.code_rollback if context.code_rollback is None else context.code_rollback
        if not wanted:
            return []
        version = context.decision.deploy.code_commit if context.decision.deploy else None
        if version is None:
            return ["no code version recorded before the deploy: the code stays as it is"]
        try:
            return [f"put the code back to {version}: {' '.join(rollback_argv(self.service, version))}"]
        except CodeVersionError as error:
            return [f"cannot put the code back: {error}"]


def pre_deploy_candidates(verified: Sequence[BackupEntry], deploy: DeployWindow, record: Any) -> list[BackupEntry]:
    """Backups that hold the database as it was before ``deploy``, best last.

    The recorded pre-deploy backup when it belongs to this deploy; else verified backups taken before the window
    opened, of the pre-deploy revision when there are any. A backup whose schema differs from the one the schema
    probe saw before the deploy (taken while a migration was already half applied) is passed over.
    """
    before = [entry for entry in verified if entry.created_at <= deploy.opened_at + 1]
    of_revision = [entry for entry in before if entry.revision == deploy.from_revision] or before
    if record is not None and record.from_revision == deploy.from_revision:
        named = [entry for entry in verified if entry.name == record.pre_deploy_backup]
        of_revision = [entry for entry in of_revision if entry.name != record.pre_deploy_backup] + named
    fingerprint = _pre_deploy_fingerprint(deploy)
    if fingerprint:
        matching = [
            entry for entry in of_revision if entry.manifest and entry.manifest.schema_fingerprint == fingerprint
        ]
        return matching or of_revision
    return of_revision


def _pre_deploy_fingerprint(deploy: DeployWindow | None) -> str | None:
    return deploy.schema_fingerprint if deploy is not None else None


def _local_fallback(rung: Rung) -> Rung:
    """The local backup a replica rung restores when the replica cannot give its moment."""
    target = rung.target or ""
    if target.startswith("replica:at:"):
        return replace(rung, target="before:" + target.removeprefix("replica:at:"))
    return replace(rung, target=REPLICA_FALLBACK.get(target, "newest_verified"))


def rows_lost(before: object, restored: Mapping[str, int | None]) -> dict[str, int] | None:
    """Rows the restore gives up, per table: the last rows probe before the fault minus the restored counts (a
    table that grew since is 0). None when no count was known before the fault."""
    if not isinstance(before, Mapping) or not before:
        return None
    lost = {}
    for table, count in before.items():
        kept = restored.get(str(table))
        if isinstance(count, int) and isinstance(kept, int):
            lost[str(table)] = max(0, count - kept)
    return lost


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


def _with_commands(outcome: ActionOutcome, commands: list[CommandResult]) -> ActionOutcome:
    return replace(outcome, commands=outcome.commands + tuple(result.record() for result in commands))


def _superseded_by(previous: LockHolder | None, context: ActionContext) -> str:
    """Why the decision is stale, or '': while this action waited for the lock (the policy saw the lock free up to
    a refresh ago), another process held it to change the database after the evidence began, e.g. a `rollbackd
    migrate` that rolled its own deploy back. What the policy saw was that command's work, which it verified
    itself; acting on it would undo what it did (a second restore loses what was written since)."""
    if previous is None or not previous.changes_database or previous.pid == os.getpid():
        return ""
    ended = previous.released if previous.released is not None else previous.since
    if ended is None or ended < context.decision.reading.since:
        return ""
    return (
        f"{previous.purpose or 'another command'} (pid {previous.pid}) changed the database after the evidence "
        "began: the evidence is stale, nothing was done; the policy looks again"
    )
