"""`rollbackd rollback` by hand, with the daemon's safety: the same executor, verification and history record.

A person asks for a downgrade (``--steps N`` / ``--to REV``) or a restore (``--restore``, optionally of a named
backup or of a revision), optionally with the code checked out at the commit recorded before the last deploy.
The executor takes a safety backup (downgrade) or keeps the current file (restore), holds the service lock, and
the checklist runs afterwards; the incident lands in the history like an automatic one, marked manual.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollbackd.actions.executor import Executor
from rollbackd.config.model import Config, ServiceConfig
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.policy.conditions import DeployWindow, Reading
from rollbackd.policy.deploys import DeployTracker
from rollbackd.policy.engine import ActionContext, ActionOutcome, Decision
from rollbackd.policy.rules import HOLD, Rule, Rung
from rollbackd.replication.pause import ReplicationPause
from rollbackd.state.history import History, RecordNotFound
from rollbackd.state.state_dir import StateDir
from rollbackd.state.vault import Vault
from rollbackd.target.control import ServiceControl
from rollbackd.target.verify import Verification, Verifier


@dataclass(frozen=True)
class ManualRequest:
    steps: int | None = None
    to_revision: str | None = None
    restore: bool = False
    backup: str | None = None
    code: bool = False
    from_replica: bool = False  # a point in time from the replica (else a local backup before it)
    at: float | None = None  # with from_replica: that moment; None: before_incident's, else the newest
    before_incident: int | None = None

    def rung(self) -> Rung:
        if self.from_replica:
            if self.at is not None:
                return Rung("restore", f"replica:at:{self.at!r}")
            return Rung("restore", "replica:proven_good" if self.before_incident is not None else "replica:newest")
        if self.restore:
            if self.backup:
                return Rung("restore", f"backup:{self.backup}")
            if self.to_revision:
                return Rung("restore", f"revision:{self.to_revision}")
            return Rung("restore", "newest_verified")
        if self.to_revision:
            return Rung("downgrade", f"to:{self.to_revision}")
        return Rung("downgrade", f"-{self.steps or 1}")

    def describe(self) -> str:
        return self.rung().describe() if not self.rung().target else f"{self.rung().kind} {self.rung().target}"


@dataclass(frozen=True)
class ManualResult:
    incident_id: int | None
    plan: list[str]
    outcome: ActionOutcome | None
    verification: Verification | None
    refused: str | None = None  # why it cannot be done: nothing was touched, nothing recorded

    @property
    def ok(self) -> bool:
        return self.outcome is not None and self.outcome.ok and self.verification is not None and self.verification.ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident": self.incident_id,
            "plan": self.plan,
            "ok": self.ok,
            "refused": self.refused,
            "action": None
            if self.outcome is None
            else {
                "ok": self.outcome.ok,
                "summary": self.outcome.summary,
                "backup_used": self.outcome.backup_used,
                "revision_after": self.outcome.revision_after,
                "commands": [dict(command) for command in self.outcome.commands],
            },
            "verification": None if self.verification is None else self.verification.as_dicts(),
        }


async def manual_rollback(
    config: Config,
    service: ServiceConfig,
    request: ManualRequest,
    *,
    dry_run: bool,
    replication: ReplicationPause | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> ManualResult:
    """Plan, and unless ``dry_run``, carry out one rollback by hand, verify it and record it. ``replication``:
    the service's Litestream, paused around a restore's swap. ``on_phase``: told when the action and the
    checklist begin, so the command line can say what it is waiting for."""
    state_dir = StateDir(config.daemon.state_dir)
    state_dir.ensure()
    history = History(state_dir.history_db)
    try:
        history.upgrade()
        deploys = DeployTracker(service, history, time.time)
        executor = Executor(
            service,
            state_dir=state_dir,
            control=ServiceControl(service),
            vault=Vault(state_dir.vault(service.name)),
            deploys=deploys,
            metrics=Metrics(),
            replication=replication,
        )
        rung = request.rung()
        who = _operator()
        reading = Reading(
            "operator",
            time.time(),
            f"manual rollback by {who}: {request.describe()}",
            _incident_evidence(history, service.name, request.before_incident),
        )
        decision = Decision(service.name, _manual_rule(rung), reading, _last_deploy(history, service.name))
        context = ActionContext(service.name, None, decision, automatic=False, code_rollback=request.code or None)
        plan = executor.plan(rung, context)
        problem = executor.check(rung, context)
        if dry_run or problem is not None:
            return ManualResult(None, plan, None, None, refused=problem)
        incident_id = history.open_incident(
            service.name, "manual", "operator", reading.explanation, {"request": request.describe()}, automatic=False
        )
        action_id = history.start_action(service.name, rung.kind, incident_id, automatic=False, detail={"plan": plan})
        code = request.code or None
        context = ActionContext(
            service.name, incident_id, decision, automatic=False, code_rollback=code, action_id=action_id
        )
        if on_phase is not None:
            on_phase(f"{rung.kind}: carrying out the plan")
        outcome = await executor.execute(rung, context)
        history.finish_action(
            action_id,
            "success" if outcome.ok else "failed",
            commands=outcome.commands,
            detail={"summary": outcome.summary, **outcome.detail},
        )
        verification = None
        if outcome.ok:
            if on_phase is not None:
                on_phase("verifying checklist")
            async with HttpClient() as client:
                verification = await Verifier(service, client).verify(outcome.expectations)
            history.record_verification(service.name, incident_id, action_id, verification.ok, verification.as_dicts())
        ok = outcome.ok and verification is not None and verification.ok
        history.close_incident(
            incident_id,
            "recovered" if ok else "failed",
            revision_after=outcome.revision_after,
            backup_used=outcome.backup_used,
            notes="" if ok else (verification.summary() if verification else outcome.summary),
        )
        return ManualResult(incident_id, plan, outcome, verification)
    finally:
        history.close()


def _incident_evidence(history: History, service: str, incident_id: int | None) -> dict[str, Any]:
    """For ``--before-incident N``: when the database was last proven good before incident N, and its row counts
    then (what the rule recorded), else the moment the incident opened. Raise LookupError for an unknown one."""
    if incident_id is None:
        return {}
    try:
        incident = history.incident(incident_id)
    except RecordNotFound as error:
        raise LookupError(f"no incident {incident_id} in the history") from error
    if incident.service != service:
        raise LookupError(f"incident {incident_id} is about {incident.service!r}, not {service!r}")
    evidence = dict(incident.evidence or {})
    return {
        "incident": incident_id,
        "proven_good_at": evidence.get("proven_good_at"),
        "first_failed_at": evidence.get("first_failed_at", incident.opened_at),
        "rows_before": evidence.get("rows_before") or {},
    }


def _manual_rule(rung: Rung) -> Rule:
    return Rule("manual", "operator", (rung, HOLD), "A rollback asked for by an operator.", priority=0)


def _last_deploy(history: History, service: str) -> DeployWindow | None:
    """The newest deploy on record (open or not): its pre-deploy revision, backup and commit."""
    records = history.deploys(service, limit=1)
    if not records:
        return None
    record = records[0]
    return DeployWindow(
        record.id,
        record.opened_at,
        record.closes_at,
        record.trigger,
        record.from_revision,
        record.pre_deploy_backup,
        record.code_commit,
        record.detail.get("schema_fingerprint"),
    )


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "an operator"
