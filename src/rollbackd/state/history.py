"""The audit log: every incident, action, verification, blocked revision and deploy, in rollbackd's own SQLite DB.

The runbook ends with a "Rollback History" table kept by hand; this is that table, written by the daemon and the
CLI as they act. Its schema is managed by rollbackd's own Alembic migrations (``migrations/``), upgraded
at start, so a newer rollbackd reads an older state DB. Calls block: the daemon runs them via ``to_thread``.

The queries go through the standard library's ``sqlite3``: SQLAlchemy (Core alone ~28 MiB of the daemon's RSS,
bench/RESULTS.md) is imported only by ``upgrade()``, which Alembic needs and the daemon runs in a child process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rollbackd.host.private_dirs import make_private_dir

Clock = Callable[[], float]

# The newest of migrations/versions; a test keeps it in step with the scripts.
STATE_SCHEMA_HEAD = "0001_initial"
UPGRADE_TIMEOUT = 300.0  # seconds for the child that upgrades the state DB (a large history on a slow disk)
_UPGRADE_IN_CHILD = (
    "import sys; from pathlib import Path; from rollbackd.state.history import History; "
    "History(Path(sys.argv[1])).upgrade()"
)
BUSY_TIMEOUT = 15.0  # seconds a call waits for another process's write (the CLI's, the daemon's) to end


class StateUpgradeError(Exception):
    """The state DB could not be brought to this version's schema."""


class RecordNotFound(LookupError):
    """No row with that id in the state DB (an incident, action or deploy the caller named)."""


# What reading the state DB raises when the file is corrupt, truncated or not ours to read: a CLI command turns
# these into one line and exit 4 (describe_state_db_error), never a traceback.
STATE_DB_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, StateUpgradeError)


def describe_state_db_error(error: BaseException) -> str:
    """The error's own words in one line ("file is not a database", "Permission denied: PATH")."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error).splitlines()[0] if str(error) else type(error).__name__


# The rows, as the tables of migrations/versions hold them. JSON columns are TEXT, booleans 0/1.


@dataclass(frozen=True)
class ActionRecord:
    id: int
    incident_id: int | None
    service: str
    action: str
    automatic: bool
    started_at: float
    finished_at: float | None
    # running | success | failed | dry_run | refused | interrupted (its process died; closed at the next start)
    outcome: str
    commands: list[dict[str, Any]]
    detail: dict[str, Any]

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


@dataclass(frozen=True)
class VerificationRecord:
    id: int
    incident_id: int | None
    action_id: int | None
    service: str
    at: float
    ok: bool
    items: list[dict[str, Any]]


@dataclass(frozen=True)
class Incident:
    id: int
    service: str
    rule: str
    signal: str
    explanation: str
    evidence: dict[str, Any]
    opened_at: float
    closed_at: float | None
    # open | recovered | hold | failed | dry_run | alerted | interrupted
    outcome: str
    automatic: bool
    dry_run: bool
    in_deploy_window: bool
    revision_before: str | None
    revision_after: str | None
    backup_used: str | None
    time_to_recover: float | None
    notes: str
    # Not columns: read with the incident, oldest first.
    actions: list[ActionRecord] = field(default_factory=list)
    verifications: list[VerificationRecord] = field(default_factory=list)


@dataclass(frozen=True)
class BlockedRevision:
    id: int
    service: str
    revision: str
    reason: str
    incident_id: int | None
    blocked_at: float
    unblocked_at: float | None


@dataclass(frozen=True)
class ServiceStateRecord:
    """The policy state that must survive a daemon restart: above all, HOLD."""

    service: str
    state: str
    reason: str
    since: float
    resume_requested_at: float | None


@dataclass(frozen=True)
class DeployRecord:
    """A deploy window: opened by a new migration, a revision change, or `rollbackd migrate`."""

    id: int
    service: str
    trigger: str  # migration_arrived | revision_change | migrate
    opened_at: float
    closes_at: float
    from_revision: str | None
    to_revision: str | None
    pre_deploy_backup: str | None
    code_commit: str | None
    outcome: str  # open | ok | rolled_back | failed | aborted
    incident_id: int | None
    detail: dict[str, Any]


_CHILDREN = ("actions", "verifications")
_COLUMNS: dict[str, tuple[str, ...]] = {
    table: tuple(item.name for item in fields(record) if item.name not in _CHILDREN)
    for table, record in (
        ("incidents", Incident),
        ("actions", ActionRecord),
        ("verifications", VerificationRecord),
        ("blocked_revisions", BlockedRevision),
        ("service_states", ServiceStateRecord),
        ("deploys", DeployRecord),
    )
}
_JSON_COLUMNS = frozenset({"evidence", "commands", "detail", "items"})
_BOOLEAN_COLUMNS = frozenset({"automatic", "dry_run", "in_deploy_window", "ok"})


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
    """The state DB. One instance per process; each method is one short transaction.

    One connection, opened at the first call, shared by the threads that call (the daemon's ``to_thread``
    workers, now and then its event loop) and taken in turn under a lock: the calls are one change_stamp() a
    second for the whole daemon, two reads per service when it moved, and a few writes per incident, each well
    under a millisecond on this small file, so turns cost little, and one connection is one page cache, not one
    per thread."""

    def __init__(self, path: Path, clock: Clock = time.time) -> None:
        self.path = path
        self.clock = clock
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._connections = 0  # connections opened so far: a new one's data_version starts afresh
        self._writes = 0  # write transactions ended on this process's connection (data_version ignores its own)

    def upgrade(self) -> None:
        """Bring the state DB's schema to this version's head (creates it on first start).

        Alembic (and SQLAlchemy under it) is imported only when there is something to upgrade: the daemon's
        memory is better spent on the probes than on a migration framework it needs once per release.
        Raise StateUpgradeError when Alembic refuses (a state DB from a newer release, a failed migration)."""
        make_private_dir(self.path.parent)
        if not self.path.exists():
            self.path.touch(mode=0o600)
        if self.schema_revision() == STATE_SCHEMA_HEAD:
            return
        # One process upgrades at a time: two that both found no schema (the daemon starting while `rollbackd
        # status` polls it, as the demo does) would both create its tables, and one fails "table incidents
        # already exists". The lock is a file of its own: closing any descriptor of the database itself would
        # drop SQLite's POSIX locks in this process.
        lock = os.open(self.path.with_name(self.path.name + ".upgrade-lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.schema_revision() != STATE_SCHEMA_HEAD:  # not done meanwhile by the process it waited for
                self._upgrade_with_alembic()
        finally:
            os.close(lock)

    def _upgrade_with_alembic(self) -> None:
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.util import CommandError
        from sqlalchemy import create_engine, event
        from sqlalchemy.exc import SQLAlchemyError

        settings = AlembicConfig()
        settings.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": BUSY_TIMEOUT})
        event.listen(engine, "connect", lambda connection, _record: _set_pragmas(connection))
        alembic_log = logging.getLogger("alembic")
        level = alembic_log.level
        alembic_log.setLevel(logging.WARNING)  # its plugin and context lines are noise in the daemon's log
        try:
            with engine.begin() as connection:
                settings.attributes["connection"] = connection
                command.upgrade(settings, "head")
        except CommandError as error:
            raise StateUpgradeError(str(error)) from error
        except SQLAlchemyError as error:
            raise StateUpgradeError(describe_state_db_error(getattr(error, "orig", None) or error)) from error
        finally:
            alembic_log.setLevel(level)
            engine.dispose()

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
        with self._transaction() as connection:
            try:
                row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.OperationalError as error:
                if "no such table" in str(error):
                    return None
                raise
            return None if row is None else str(row[0])

    def close(self) -> None:
        """Close the connection; a later call opens a new one."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction on the shared connection, in this thread's turn. A write begins IMMEDIATE: it waits
        for another writer at BEGIN (busy_timeout) instead of failing when it upgrades a read to a write."""
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield connection
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            finally:
                if write:
                    self._writes += 1

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            try:
                _set_pragmas(connection)
            except BaseException:
                connection.close()
                raise
            connection.row_factory = sqlite3.Row
            self._connection = connection
            self._connections += 1
        return self._connection

    def change_stamp(self) -> tuple[int, int, int]:
        """A value that differs whenever anything was committed to the state DB since it was last taken, by any
        process: ``PRAGMA data_version`` (which moves when another connection commits) with this connection's own
        write count and which connection this is. The daemon re-reads windows and blocked revisions only when it
        moved: the pragma is one page-cache check, the queries two statements and row decoding per service."""
        with self._lock:
            connection = self._connect()
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            return self._connections, int(version), self._writes

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
        with self._transaction(write=True) as connection:
            return _insert(
                connection,
                "incidents",
                service=service,
                rule=rule,
                signal=signal,
                explanation=explanation,
                evidence=evidence,
                opened_at=self.clock(),
                outcome="dry_run" if dry_run else "open",
                automatic=automatic,
                dry_run=dry_run,
                in_deploy_window=in_deploy_window,
                revision_before=revision_before,
                notes="",
            )

    def close_incident(
        self,
        incident_id: int,
        outcome: str,
        *,
        revision_after: str | None = None,
        backup_used: str | None = None,
        notes: str = "",
    ) -> None:
        with self._transaction(write=True) as connection:
            incident = _one(connection, "incidents", "id", incident_id)
            closed_at = self.clock()
            changes: dict[str, Any] = {"closed_at": closed_at, "outcome": outcome, "revision_after": revision_after}
            if backup_used:
                changes["backup_used"] = backup_used
            if notes:
                changes["notes"] = notes
            if outcome == "recovered":
                changes["time_to_recover"] = closed_at - incident["opened_at"]
            _update(connection, "incidents", "id", incident_id, changes)

    def start_action(
        self, service: str, action: str, incident_id: int | None, *, automatic: bool = True, detail: dict[str, Any]
    ) -> int:
        with self._transaction(write=True) as connection:
            return _insert(
                connection,
                "actions",
                service=service,
                action=action,
                incident_id=incident_id,
                automatic=automatic,
                started_at=self.clock(),
                outcome="running",
                commands=[],
                detail=detail,
            )

    def finish_action(
        self, action_id: int, outcome: str, *, commands: Sequence[Mapping[str, Any]] = (), detail: dict[str, Any]
    ) -> None:
        with self._transaction(write=True) as connection:
            record = _one(connection, "actions", "id", action_id)
            _update(
                connection,
                "actions",
                "id",
                action_id,
                {
                    "finished_at": self.clock(),
                    "outcome": outcome,
                    "commands": [dict(command) for command in commands],
                    "detail": {**record["detail"], **detail},
                },
            )

    def interrupt_action(self, action_id: int, detail: dict[str, Any]) -> None:
        """Close an action whose process died while it ran: ``interrupted``, now, with what is known of its end."""
        with self._transaction(write=True) as connection:
            record = _one(connection, "actions", "id", action_id)
            _update(
                connection,
                "actions",
                "id",
                action_id,
                {"finished_at": self.clock(), "outcome": "interrupted", "detail": {**record["detail"], **detail}},
            )

    def unfinished(self, service: str) -> tuple[list[Incident], list[ActionRecord]]:
        """The incidents still ``open`` and the actions still ``running`` of ``service``, oldest first: what a killed
        process left behind (or what a live one is doing: the caller knows which)."""
        with self._transaction() as connection:
            incidents = _incidents(
                connection,
                connection.execute(
                    "SELECT * FROM incidents WHERE service = ? AND outcome = 'open' ORDER BY id", (service,)
                ),
            )
            actions = connection.execute(
                "SELECT * FROM actions WHERE service = ? AND outcome = 'running' ORDER BY id", (service,)
            )
            return incidents, [ActionRecord(**_values(row, "actions")) for row in actions]

    def record_verification(
        self, service: str, incident_id: int | None, action_id: int | None, ok: bool, items: list[dict[str, Any]]
    ) -> int:
        with self._transaction(write=True) as connection:
            return _insert(
                connection,
                "verifications",
                service=service,
                incident_id=incident_id,
                action_id=action_id,
                at=self.clock(),
                ok=ok,
                items=items,
            )

    def automatic_actions_since(self, service: str, since: float) -> int:
        """Count automatic actions that really ran (not dry-run, not refused): the flap guard's measure."""
        with self._transaction() as connection:
            [count] = connection.execute(
                "SELECT count(*) FROM actions WHERE service = ? AND automatic = 1 AND started_at >= ?"
                " AND outcome IN ('running', 'success', 'failed')",
                (service, since),
            ).fetchone()
            return int(count)

    def incident(self, incident_id: int) -> Incident:
        """The incident with its actions and verifications. Raise RecordNotFound for an unknown id."""
        with self._transaction() as connection:
            row = _one(connection, "incidents", "id", incident_id)
            [incident] = _incidents(connection, [row])
            return incident

    def incidents(self, service: str | None = None, limit: int = 50) -> list[Incident]:
        """Return recent incidents, newest first, with their actions and verifications loaded."""
        with self._transaction() as connection:
            if service:
                rows = connection.execute(
                    "SELECT * FROM incidents WHERE service = ? ORDER BY opened_at DESC, id DESC LIMIT ?",
                    (service, limit),
                )
            else:
                rows = connection.execute("SELECT * FROM incidents ORDER BY opened_at DESC, id DESC LIMIT ?", (limit,))
            return _incidents(connection, rows)

    def history_rows(self, service: str | None = None, limit: int = 50) -> list[HistoryRow]:
        return [_history_row(incident) for incident in self.incidents(service, limit)]

    # Blocked revisions

    def block_revision(self, service: str, revision: str, reason: str, incident_id: int | None) -> None:
        with self._transaction(write=True) as connection:
            existing = connection.execute(
                "SELECT id FROM blocked_revisions WHERE service = ? AND revision = ?", (service, revision)
            ).fetchone()
            if existing is None:
                _insert(
                    connection,
                    "blocked_revisions",
                    service=service,
                    revision=revision,
                    reason=reason,
                    incident_id=incident_id,
                    blocked_at=self.clock(),
                )
            else:
                changes = {
                    "reason": reason,
                    "incident_id": incident_id,
                    "blocked_at": self.clock(),
                    "unblocked_at": None,
                }
                _update(connection, "blocked_revisions", "id", existing["id"], changes)

    def unblock_revision(self, service: str, revision: str) -> bool:
        with self._transaction(write=True) as connection:
            existing = connection.execute(
                "SELECT id FROM blocked_revisions WHERE service = ? AND revision = ? AND unblocked_at IS NULL",
                (service, revision),
            ).fetchone()
            if existing is None:
                return False
            _update(connection, "blocked_revisions", "id", existing["id"], {"unblocked_at": self.clock()})
            return True

    def blocked_revisions(self, service: str) -> dict[str, BlockedRevision]:
        with self._transaction() as connection:
            rows = connection.execute(
                "SELECT * FROM blocked_revisions WHERE service = ? AND unblocked_at IS NULL", (service,)
            )
            return {row["revision"]: BlockedRevision(**_values(row, "blocked_revisions")) for row in rows}

    # Service state (HOLD survives restarts)

    def save_state(self, service: str, state: str, reason: str) -> None:
        with self._transaction(write=True) as connection:
            record = connection.execute("SELECT * FROM service_states WHERE service = ?", (service,)).fetchone()
            if record is None:
                _insert(connection, "service_states", service=service, state=state, reason=reason, since=self.clock())
                return
            changes: dict[str, Any] = {"state": state, "reason": reason}
            if record["state"] != state:
                changes["since"] = self.clock()
            if state != "hold":
                changes["resume_requested_at"] = None
            _update(connection, "service_states", "service", service, changes)

    def load_state(self, service: str) -> ServiceStateRecord | None:
        with self._transaction() as connection:
            row = connection.execute("SELECT * FROM service_states WHERE service = ?", (service,)).fetchone()
            return None if row is None else ServiceStateRecord(**_values(row, "service_states"))

    def request_resume(self, service: str) -> bool:
        """Ask the daemon to lift HOLD (read at its next tick). Return False when the service is not in HOLD."""
        with self._transaction(write=True) as connection:
            record = connection.execute("SELECT state FROM service_states WHERE service = ?", (service,)).fetchone()
            if record is None or record["state"] != "hold":
                return False
            _update(connection, "service_states", "service", service, {"resume_requested_at": self.clock()})
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
        with self._transaction(write=True) as connection:
            return _insert(
                connection,
                "deploys",
                service=service,
                trigger=trigger,
                opened_at=now,
                closes_at=now + window,
                from_revision=from_revision,
                pre_deploy_backup=pre_deploy_backup,
                code_commit=code_commit,
                outcome="open",
                detail=detail or {},
            )

    def update_deploy(self, deploy_id: int, **changes: Any) -> None:
        """Set the named columns of deploy ``deploy_id``. Raise RecordNotFound for an unknown id."""
        with self._transaction(write=True) as connection:
            if changes:
                _update(connection, "deploys", "id", deploy_id, changes)
            else:
                _one(connection, "deploys", "id", deploy_id)

    def open_deploy_window(self, service: str) -> DeployRecord | None:
        """Return the newest deploy whose window has not closed, if any."""
        with self._transaction() as connection:
            row = connection.execute(
                "SELECT * FROM deploys WHERE service = ? AND closes_at > ? ORDER BY opened_at DESC, id DESC LIMIT 1",
                (service, self.clock()),
            ).fetchone()
            return None if row is None else DeployRecord(**_values(row, "deploys"))

    def deploys(self, service: str | None = None, limit: int = 20) -> list[DeployRecord]:
        with self._transaction() as connection:
            if service:
                rows = connection.execute(
                    "SELECT * FROM deploys WHERE service = ? ORDER BY opened_at DESC, id DESC LIMIT ?", (service, limit)
                )
            else:
                rows = connection.execute("SELECT * FROM deploys ORDER BY opened_at DESC, id DESC LIMIT ?", (limit,))
            return [DeployRecord(**_values(row, "deploys")) for row in rows]


def _set_pragmas(connection: Any) -> None:
    """The state DB's settings on every connection (sqlite3's, or the DBAPI one under Alembic's engine)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
    cursor.close()


def _encode(column: str, value: Any) -> Any:
    return json.dumps(value) if column in _JSON_COLUMNS else value


def _values(row: sqlite3.Row, table: str) -> dict[str, Any]:
    """A row's columns as the record's fields: JSON decoded, 0/1 as booleans."""
    values = {}
    for column in _COLUMNS[table]:
        value = row[column]
        if column in _JSON_COLUMNS and value is not None:
            value = json.loads(value)
        elif column in _BOOLEAN_COLUMNS and value is not None:
            value = bool(value)
        values[column] = value
    return values


def _checked(table: str, columns: Sequence[str]) -> None:
    """Only this module's column names are ever put into a statement's text."""
    unknown = [column for column in columns if column not in _COLUMNS[table]]
    if unknown:
        raise TypeError(f"{table} has no column {', '.join(unknown)}")


def _insert(connection: sqlite3.Connection, table: str, **values: Any) -> int:
    _checked(table, list(values))
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    cursor = connection.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({marks})",  # noqa: S608 - names checked against _COLUMNS
        [_encode(column, value) for column, value in values.items()],
    )
    if cursor.lastrowid is None:
        raise sqlite3.DatabaseError(f"no row id for the new {table} row")
    return cursor.lastrowid


def _update(connection: sqlite3.Connection, table: str, key: str, key_value: Any, changes: Mapping[str, Any]) -> None:
    _checked(table, [key, *changes])
    assignments = ", ".join(f"{column} = ?" for column in changes)
    cursor = connection.execute(
        f"UPDATE {table} SET {assignments} WHERE {key} = ?",  # noqa: S608 - names checked against _COLUMNS
        [*(_encode(column, value) for column, value in changes.items()), key_value],
    )
    if cursor.rowcount == 0:
        raise RecordNotFound(f"no row {key} = {key_value!r} in {table}")


def _one(connection: sqlite3.Connection, table: str, key: str, key_value: Any) -> dict[str, Any]:
    """The row of ``table`` whose ``key`` is ``key_value``, decoded. Raise RecordNotFound when there is none."""
    _checked(table, [key])
    row = connection.execute(
        f"SELECT * FROM {table} WHERE {key} = ?",  # noqa: S608 - names checked against _COLUMNS
        (key_value,),
    ).fetchone()
    if row is None:
        raise RecordNotFound(f"no row {key} = {key_value!r} in {table}")
    return _values(row, table)


def _incidents(connection: sqlite3.Connection, rows: Iterator[Any] | Sequence[Any]) -> list[Incident]:
    """Incidents from their rows (sqlite3.Row or decoded dicts), each with its actions and verifications."""
    incidents = []
    for row in list(rows):
        values = row if isinstance(row, dict) else _values(row, "incidents")
        actions = connection.execute("SELECT * FROM actions WHERE incident_id = ? ORDER BY id", (values["id"],))
        verifications = connection.execute(
            "SELECT * FROM verifications WHERE incident_id = ? ORDER BY id", (values["id"],)
        )
        incidents.append(
            Incident(
                **values,
                actions=[ActionRecord(**_values(action, "actions")) for action in actions],
                verifications=[VerificationRecord(**_values(item, "verifications")) for item in verifications],
            )
        )
    return incidents


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
