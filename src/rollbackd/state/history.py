"""The audit log: every incident, action, verification, blocked revision and deploy, in rollbackd's own SQLite DB.

The runbook ends with a "Rollback History" table kept by hand; this is that table, written by the daemon and the
CLI as they act. Its schema is managed by rollbackd's own Alembic migrations (``migrations/``), upgraded
at start, so a newer rollbackd reads an older state DB. Calls block: the daemon runs them via ``to_thread``.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from rollbackd.host.private_dirs import make_private_dir

Clock = Callable[[], float]

# The newest of migrations/versions; a test keeps it in step with the scripts.
STATE_SCHEMA_HEAD = "0001_initial"
UPGRADE_TIMEOUT = 300.0  # seconds for the child that upgrades the state DB (a large history on a slow disk)
_UPGRADE_IN_CHILD = (
    "import sys; from pathlib import Path; from rollbackd.state.history import History; "
    "History(Path(sys.argv[1])).upgrade()"
)


class StateUpgradeError(Exception):
    """The state DB could not be brought to this version's schema."""


# What reading the state DB raises when the file is corrupt, truncated or not ours to read: a CLI command turns
# these into one line and exit 4 (describe_state_db_error), never a traceback.
STATE_DB_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, sqlite3.Error, OSError, StateUpgradeError)


def describe_state_db_error(error: BaseException) -> str:
    """The error's own words without SQLAlchemy's wrapping ("file is not a database", "Permission denied")."""
    original = getattr(error, "orig", None) or error
    if isinstance(original, OSError) and original.strerror:
        return f"{original.strerror}: {original.filename}" if original.filename else original.strerror
    return str(original).splitlines()[0] if str(original) else type(original).__name__


class Base(DeclarativeBase):
    pass


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    signal: Mapped[str] = mapped_column(String(64))
    explanation: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    opened_at: Mapped[float] = mapped_column(Float, index=True)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # open | recovered | hold | failed | dry_run | alerted | interrupted
    outcome: Mapped[str] = mapped_column(String(16), default="open")
    automatic: Mapped[bool] = mapped_column(Boolean, default=True)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    in_deploy_window: Mapped[bool] = mapped_column(Boolean, default=False)
    revision_before: Mapped[str | None] = mapped_column(String(128), nullable=True)
    revision_after: Mapped[str | None] = mapped_column(String(128), nullable=True)
    backup_used: Mapped[str | None] = mapped_column(String(255), nullable=True)
    time_to_recover: Mapped[float | None] = mapped_column(Float, nullable=True)
    notes: Mapped[str] = mapped_column(Text, default="")

    actions: Mapped[list[ActionRecord]] = relationship(back_populates="incident", order_by="ActionRecord.id")
    verifications: Mapped[list[VerificationRecord]] = relationship(
        back_populates="incident", order_by="VerificationRecord.id"
    )


class ActionRecord(Base):
    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), nullable=True, index=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    automatic: Mapped[bool] = mapped_column(Boolean, default=True)
    started_at: Mapped[float] = mapped_column(Float, index=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # running | success | failed | dry_run | refused | interrupted (its process died; closed at the next start)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    commands: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    incident: Mapped[Incident | None] = relationship(back_populates="actions")

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


class VerificationRecord(Base):
    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), nullable=True, index=True)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id"), nullable=True)
    service: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
    ok: Mapped[bool] = mapped_column(Boolean)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    incident: Mapped[Incident | None] = relationship(back_populates="verifications")


class BlockedRevision(Base):
    __tablename__ = "blocked_revisions"
    __table_args__ = (UniqueConstraint("service", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(64))
    revision: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), nullable=True)
    blocked_at: Mapped[float] = mapped_column(Float)
    unblocked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ServiceStateRecord(Base):
    """The policy state that must survive a daemon restart: above all, HOLD."""

    __tablename__ = "service_states"

    service: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    since: Mapped[float] = mapped_column(Float)
    resume_requested_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DeployRecord(Base):
    """A deploy window: opened by a new migration, a revision change, or `rollbackd migrate`."""

    __tablename__ = "deploys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    trigger: Mapped[str] = mapped_column(String(32))  # migration_arrived | revision_change | migrate
    opened_at: Mapped[float] = mapped_column(Float)
    closes_at: Mapped[float] = mapped_column(Float)
    from_revision: Mapped[str | None] = mapped_column(String(128), nullable=True)
    to_revision: Mapped[str | None] = mapped_column(String(128), nullable=True)
    pre_deploy_backup: Mapped[str | None] = mapped_column(String(255), nullable=True)
    code_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="open")  # open | ok | rolled_back | failed | aborted
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


@dataclass(frozen=True)
class HistoryRow:
    """One line of the runbook's Rollback History table."""

    incident_id: int
    service: str
    date: float
    version_rolled_back: str
    reason: str
    time_to_recover: float | None
    outcome: str
    notes: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident": self.incident_id,
            "service": self.service,
            "date": self.date,
            "version_rolled_back": self.version_rolled_back,
            "reason": self.reason,
            "time_to_recover": self.time_to_recover,
            "outcome": self.outcome,
            "notes": self.notes,
        }


class History:
    """The state DB. One instance per process; each method is one short transaction."""

    def __init__(self, path: Path, clock: Clock = time.time) -> None:
        self.path = path
        self.clock = clock
        self.engine: Engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 15})
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade(self) -> None:
        """Bring the state DB's schema to this version's head (creates it on first start).

        Alembic is imported only when there is something to upgrade: the daemon's memory is better spent on
        the probes than on a migration framework it needs once per release."""
        make_private_dir(self.path.parent)
        if not self.path.exists():
            self.path.touch(mode=0o600)
        if self.schema_revision() == STATE_SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.config import Config as AlembicConfig

        settings = AlembicConfig()
        settings.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        alembic_log = logging.getLogger("alembic")
        level = alembic_log.level
        alembic_log.setLevel(logging.WARNING)  # its plugin and context lines are noise in the daemon's log
        try:
            with self.engine.begin() as connection:
                settings.attributes["connection"] = connection
                command.upgrade(settings, "head")
        finally:
            alembic_log.setLevel(level)

    def upgrade_in_child(self) -> None:
        """upgrade() in a child process when there is anything to do, for the long-running daemon: Alembic's
        ~10 MiB would otherwise stay resident for its whole life after the first start of a release.
        Raise StateUpgradeError with the child's last error line."""
        if self.schema_revision() == STATE_SCHEMA_HEAD:
            return
        try:
            child = subprocess.run(  # noqa: S603 - fixed argv, this interpreter
                [sys.executable, "-c", _UPGRADE_IN_CHILD, str(self.path)],
                capture_output=True,
                text=True,
                timeout=UPGRADE_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise StateUpgradeError(f"the state DB upgrade did not run: {error}") from error
        if child.returncode != 0:
            lines = [line for line in child.stderr.splitlines() if line.strip()]
            raise StateUpgradeError(lines[-1] if lines else f"the state DB upgrade exited {child.returncode}")

    def schema_revision(self) -> str | None:
        """The state DB's own Alembic revision, or None before the first upgrade."""
        if not self.path.exists():
            return None
        with self.engine.connect() as connection:
            try:
                return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            except OperationalError:
                return None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # Incidents and actions

    def open_incident(
        self,
        service: str,
        rule: str,
        signal: str,
        explanation: str,
        evidence: dict[str, Any],
        *,
        automatic: bool = True,
        dry_run: bool = False,
        in_deploy_window: bool = False,
        revision_before: str | None = None,
    ) -> int:
        with self.session() as session:
            incident = Incident(
                service=service,
                rule=rule,
                signal=signal,
                explanation=explanation,
                evidence=evidence,
                opened_at=self.clock(),
                automatic=automatic,
                dry_run=dry_run,
                in_deploy_window=in_deploy_window,
                revision_before=revision_before,
                outcome="dry_run" if dry_run else "open",
            )
            session.add(incident)
            session.flush()
            return incident.id

    def close_incident(
        self,
        incident_id: int,
        outcome: str,
        *,
        revision_after: str | None = None,
        backup_used: str | None = None,
        notes: str = "",
    ) -> None:
        with self.session() as session:
            incident = session.get_one(Incident, incident_id)
            incident.closed_at = self.clock()
            incident.outcome = outcome
            incident.revision_after = revision_after
            if backup_used:
                incident.backup_used = backup_used
            if notes:
                incident.notes = notes
            if outcome == "recovered":
                incident.time_to_recover = incident.closed_at - incident.opened_at

    def start_action(
        self, service: str, action: str, incident_id: int | None, *, automatic: bool = True, detail: dict[str, Any]
    ) -> int:
        with self.session() as session:
            record = ActionRecord(
                service=service,
                action=action,
                incident_id=incident_id,
                automatic=automatic,
                started_at=self.clock(),
                detail=detail,
            )
            session.add(record)
            session.flush()
            return record.id

    def finish_action(
        self, action_id: int, outcome: str, *, commands: Sequence[Mapping[str, Any]] = (), detail: dict[str, Any]
    ) -> None:
        with self.session() as session:
            record = session.get_one(ActionRecord, action_id)
            record.finished_at = self.clock()
            record.outcome = outcome
            record.commands = [dict(command) for command in commands]
            record.detail = {**record.detail, **detail}

    def interrupt_action(self, action_id: int, detail: dict[str, Any]) -> None:
        """Close an action whose process died while it ran: ``interrupted``, now, with what is known of its end."""
        with self.session() as session:
            record = session.get_one(ActionRecord, action_id)
            record.finished_at = self.clock()
            record.outcome = "interrupted"
            record.detail = {**record.detail, **detail}

    def unfinished(self, service: str) -> tuple[list[Incident], list[ActionRecord]]:
        """The incidents still ``open`` and the actions still ``running`` of ``service``, oldest first: what a killed
        process left behind (or what a live one is doing: the caller knows which)."""
        with self.session() as session:
            incidents = list(
                session.scalars(
                    select(Incident)
                    .where(Incident.service == service, Incident.outcome == "open")
                    .order_by(Incident.id)
                )
            )
            for incident in incidents:
                _ = incident.actions
            actions = list(
                session.scalars(
                    select(ActionRecord)
                    .where(ActionRecord.service == service, ActionRecord.outcome == "running")
                    .order_by(ActionRecord.id)
                )
            )
            return incidents, actions

    def record_verification(
        self, service: str, incident_id: int | None, action_id: int | None, ok: bool, items: list[dict[str, Any]]
    ) -> int:
        with self.session() as session:
            record = VerificationRecord(
                service=service, incident_id=incident_id, action_id=action_id, at=self.clock(), ok=ok, items=items
            )
            session.add(record)
            session.flush()
            return record.id

    def automatic_actions_since(self, service: str, since: float) -> int:
        """Count automatic actions that really ran (not dry-run, not refused): the flap guard's measure."""
        with self.session() as session:
            rows = session.scalars(
                select(ActionRecord.id).where(
                    ActionRecord.service == service,
                    ActionRecord.automatic.is_(True),
                    ActionRecord.started_at >= since,
                    ActionRecord.outcome.in_(("running", "success", "failed")),
                )
            ).all()
            return len(rows)

    def incident(self, incident_id: int) -> Incident:
        with self.session() as session:
            incident = session.get_one(Incident, incident_id)
            _ = incident.actions, incident.verifications  # load while the session is open
            return incident

    def incidents(self, service: str | None = None, limit: int = 50) -> list[Incident]:
        """Return recent incidents, newest first, with their actions and verifications loaded."""
        with self.session() as session:
            query = select(Incident).order_by(Incident.opened_at.desc(), Incident.id.desc()).limit(limit)
            if service:
                query = query.where(Incident.service == service)
            incidents = list(session.scalars(query))
            for incident in incidents:
                _ = incident.actions, incident.verifications
            return incidents

    def history_rows(self, service: str | None = None, limit: int = 50) -> list[HistoryRow]:
        return [_history_row(incident) for incident in self.incidents(service, limit)]

    # Blocked revisions

    def block_revision(self, service: str, revision: str, reason: str, incident_id: int | None) -> None:
        with self.session() as session:
            existing = session.scalars(
                select(BlockedRevision).where(BlockedRevision.service == service, BlockedRevision.revision == revision)
            ).first()
            if existing is None:
                session.add(
                    BlockedRevision(
                        service=service,
                        revision=revision,
                        reason=reason,
                        incident_id=incident_id,
                        blocked_at=self.clock(),
                    )
                )
            else:
                existing.reason, existing.incident_id = reason, incident_id
                existing.blocked_at, existing.unblocked_at = self.clock(), None

    def unblock_revision(self, service: str, revision: str) -> bool:
        with self.session() as session:
            existing = session.scalars(
                select(BlockedRevision).where(
                    BlockedRevision.service == service,
                    BlockedRevision.revision == revision,
                    BlockedRevision.unblocked_at.is_(None),
                )
            ).first()
            if existing is None:
                return False
            existing.unblocked_at = self.clock()
            return True

    def blocked_revisions(self, service: str) -> dict[str, BlockedRevision]:
        with self.session() as session:
            rows = session.scalars(
                select(BlockedRevision).where(
                    BlockedRevision.service == service, BlockedRevision.unblocked_at.is_(None)
                )
            )
            return {row.revision: row for row in rows}

    # Service state (HOLD survives restarts)

    def save_state(self, service: str, state: str, reason: str) -> None:
        with self.session() as session:
            record = session.get(ServiceStateRecord, service)
            if record is None:
                session.add(ServiceStateRecord(service=service, state=state, reason=reason, since=self.clock()))
            else:
                if record.state != state:
                    record.since = self.clock()
                record.state, record.reason = state, reason
                if state != "hold":
                    record.resume_requested_at = None

    def load_state(self, service: str) -> ServiceStateRecord | None:
        with self.session() as session:
            return session.get(ServiceStateRecord, service)

    def request_resume(self, service: str) -> bool:
        """Ask the daemon to lift HOLD (read at its next tick). Return False when the service is not in HOLD."""
        with self.session() as session:
            record = session.get(ServiceStateRecord, service)
            if record is None or record.state != "hold":
                return False
            record.resume_requested_at = self.clock()
            return True

    # Deploy windows

    def open_deploy(
        self,
        service: str,
        trigger: str,
        window: float,
        *,
        from_revision: str | None,
        pre_deploy_backup: str | None = None,
        code_commit: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        now = self.clock()
        with self.session() as session:
            record = DeployRecord(
                service=service,
                trigger=trigger,
                opened_at=now,
                closes_at=now + window,
                from_revision=from_revision,
                pre_deploy_backup=pre_deploy_backup,
                code_commit=code_commit,
                detail=detail or {},
            )
            session.add(record)
            session.flush()
            return record.id

    def update_deploy(self, deploy_id: int, **changes: Any) -> None:
        with self.session() as session:
            record = session.get_one(DeployRecord, deploy_id)
            for key, value in changes.items():
                setattr(record, key, value)

    def open_deploy_window(self, service: str) -> DeployRecord | None:
        """Return the newest deploy whose window has not closed, if any."""
        with self.session() as session:
            return session.scalars(
                select(DeployRecord)
                .where(DeployRecord.service == service, DeployRecord.closes_at > self.clock())
                .order_by(DeployRecord.opened_at.desc(), DeployRecord.id.desc())
            ).first()

    def deploys(self, service: str | None = None, limit: int = 20) -> list[DeployRecord]:
        with self.session() as session:
            query = select(DeployRecord).order_by(DeployRecord.opened_at.desc(), DeployRecord.id.desc()).limit(limit)
            if service:
                query = query.where(DeployRecord.service == service)
            return list(session.scalars(query))


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA busy_timeout = 15000")
    cursor.close()


def _history_row(incident: Incident) -> HistoryRow:
    before, after = incident.revision_before, incident.revision_after
    version = f"{before} → {after}" if before and after and before != after else before or after or "-"
    done = [
        f"{action.action}" + ("" if action.outcome == "success" else f" ({action.outcome})")
        for action in incident.actions
    ]
    verified = [verification for verification in incident.verifications if verification.ok]
    notes = "; ".join(done) or "no action"
    if incident.backup_used:
        notes += f"; restored {incident.backup_used}"
    if verified:
        notes += "; verified"
    if incident.notes:
        notes += f"; {incident.notes}"
    return HistoryRow(
        incident_id=incident.id,
        service=incident.service,
        date=incident.opened_at,
        version_rolled_back=version,
        reason=incident.explanation,
        time_to_recover=incident.time_to_recover,
        outcome=incident.outcome,
        notes=notes,
    )
