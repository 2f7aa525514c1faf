"""Restoring a verified backup the runbook's way, so that a kill -9 at any instant loses nothing.

Checks first, touching nothing: the backup is inside the backup dir, its sha256 matches its manifest, and SQLite
finds it sound (``integrity_check``; ``quick_check`` when a drill already ran the full check on these very
bytes). Then, each step written to the journal before it is performed: stop the service; copy the backup to a
temp name beside the database and fsync it; *link* the database to ``<stem>_corrupted_<ts>.db`` and rename its
-wal/-shm/-journal beside it; ``os.replace`` the temp onto the database (atomic: a database file exists at every
instant); fsync the folder; check the restored file against the manifest; start the service.

A restore killed before its copy was complete is undone by ``resume_interrupted_restore`` (the old database never
moved); one killed later is finished. Taking the ServiceLock is the caller's job (the CLI, the recovery engine).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rollbackd.backup.catalog import BackupEntry, BackupRefused, NoBackup, inspect_backup, resolve_backup_name
from rollbackd.backup.manifest import BackupManifest
from rollbackd.backup.restore_journal import (
    JournalError,
    Move,
    RestoreJournal,
    read_journal,
    write_journal,
)
from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import copy_hashed, file_sha256, fsync_dir, fsync_file
from rollbackd.replication.pause import NoPause, ReplicationControlError, ReplicationPause
from rollbackd.state.state_dir import StateDir
from rollbackd.target import database
from rollbackd.target.control import ControlError, ServiceControl

log = logging.getLogger(__name__)

SIDECARS = ("-wal", "-shm", "-journal")

CopyProgress = Callable[[int, int], None]  # (bytes copied, bytes total)
# A step begun (name, None) or ended (name, the step with its time): the CLI prints each step as it happens.
StepEvents = Callable[[str, "RestoreStep | None"], None]


class RestoreError(Exception):
    """A restore that did not complete. ``reason``: refused, no_backup, corrupt, pending, control, no_space,
    verify_failed, io_error, journal, replication (it could not be paused). ``touched`` says whether anything was
    changed (it was then undone or finished as the message says)."""

    def __init__(self, reason: str, message: str, *, touched: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.touched = touched


@dataclass(frozen=True)
class RestoreStep:
    name: str
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class RestoreReport:
    service: str
    backup: str
    database: str
    outcome: str  # planned (dry run), restored, undone, nothing
    quarantined: tuple[str, ...] = ()
    revision: str | None = None
    row_counts: dict[str, int | None] = field(default_factory=dict)
    steps: tuple[RestoreStep, ...] = ()
    plan: tuple[str, ...] = ()
    service_started: bool = False
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "backup": self.backup,
            "database": self.database,
            "outcome": self.outcome,
            "quarantined": list(self.quarantined),
            "revision": self.revision,
            "row_counts": dict(self.row_counts),
            "steps": [{"name": s.name, "seconds": round(s.seconds, 6), "detail": s.detail} for s in self.steps],
            "plan": list(self.plan),
            "service_started": self.service_started,
            "message": self.message,
        }


def pending_restore(service: ServiceConfig, state_dir: StateDir) -> RestoreJournal | None:
    """The journal of an interrupted restore of ``service``, or None. Raise RestoreError when unreadable."""
    try:
        journal = read_journal(state_dir.service_dir(service.name))
    except JournalError as error:
        raise RestoreError("journal", f"{error}; look at it before restoring anything") from error
    return journal if journal is not None and not journal.finished else None


def restore_backup(
    service: ServiceConfig,
    backup: BackupEntry,
    *,
    control: ServiceControl | None,
    state_dir: StateDir,
    reason: str = "manual",
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
    service_stopped: bool = False,
    progress: CopyProgress | None = None,
    incident_id: int | None = None,
    action_id: int | None = None,
    on_step: StepEvents | None = None,
    replication: ReplicationPause | None = None,
) -> RestoreReport:
    """Restore ``backup`` over the service's database. Raise RestoreError (``touched`` False: nothing changed).

    ``service_stopped``: the caller has stopped the service itself (required with control kind ``none``); the
    service is then not started afterwards either. ``incident_id``/``action_id``: the history records this restore
    belongs to, written into the journal. ``replication`` is paused from the swap's first step to its end (blocking):
    Litestream must never replicate across a swap it did not see; when it cannot be paused nothing is touched.
    The caller holds the ServiceLock.
    """
    if pending_restore(service, state_dir) is not None:
        raise RestoreError(
            "pending", "an interrupted restore is pending: finish or undo it first with `rollbackd restore --resume`"
        )
    manifest = _check_backup(service, backup)
    can_act = control is not None and control.can_act
    if not can_act and not service_stopped:
        raise RestoreError(
            "refused",
            f"service {service.name!r} has control kind 'none', so rollbackd cannot stop it before replacing its "
            "database; stop it yourself and pass --service-stopped",
        )
    db = service.database
    _check_room(db, backup.size_bytes)
    journal = RestoreJournal(
        service=service.name,
        state="planned",
        backup=backup.name,
        backup_path=str(backup.path),
        backup_sha256=manifest.sha256,
        database=str(db),
        temp=str(db.with_name(f".{db.name}.restore.partial")),
        moves=(),
        journal_mode=manifest.journal_mode,
        expected_revision=manifest.revision,
        expected_counts=dict(manifest.row_counts),
        reason=reason,
        started_at=clock(),
        control_kind=control.kind if control is not None else "none",
        service_stopped_by_caller=service_stopped or not can_act,
        incident_id=incident_id,
        action_id=action_id,
    )
    if dry_run:
        return RestoreReport(
            service.name,
            backup.name,
            str(db),
            "planned",
            revision=manifest.revision,
            row_counts=dict(manifest.row_counts),
            plan=tuple(_plan_lines(journal, db)),
            message="dry run: nothing was touched",
        )
    runner = _Runner(journal, state_dir.service_dir(service.name), control, clock, progress, on_step)
    pause = replication or NoPause()
    try:
        pause.pause()
    except ReplicationControlError as error:
        raise RestoreError("replication", f"{error}; nothing was touched") from error
    try:
        return runner.run()
    finally:
        pause.resume()  # started again, Litestream takes a new lineage from the restored file


def resume_interrupted_restore(
    service: ServiceConfig,
    *,
    control: ServiceControl | None,
    state_dir: StateDir,
    clock: Callable[[], float] = time.time,
    on_step: StepEvents | None = None,
) -> RestoreReport | None:
    """Finish or undo a restore that was interrupted (kill -9, power loss). None when there is none.

    Before the copy was complete the old database never moved: undo (remove the temp, start the service again).
    From then on: finish (quarantine, swap, check, start). The caller holds the ServiceLock.
    """
    journal = pending_restore(service, state_dir)
    if journal is None:
        return None
    runner = _Runner(journal, state_dir.service_dir(service.name), control, clock, None, on_step)
    return runner.resume()


def _check_backup(service: ServiceConfig, backup: BackupEntry) -> BackupManifest:
    """Everything that must hold before anything is touched. Raise RestoreError (refused/corrupt)."""
    stem = service.database.stem
    try:
        path = resolve_backup_name(service.backups.dir, backup.name, stem)
    except BackupRefused as error:
        raise RestoreError("refused", str(error)) from error
    except NoBackup as error:
        raise RestoreError("no_backup", str(error)) from error
    if path.resolve() != backup.path.resolve():
        raise RestoreError("refused", f"refusing {backup.path}: not inside the backup dir {service.backups.dir}")
    checked = inspect_backup(path, stem, verify=True)
    if not checked.verified or checked.manifest is None:
        raise RestoreError("refused", f"refusing {backup.name}: {checked.problem}")
    manifest = checked.manifest
    drilled = manifest.drill is not None and manifest.drill.ok
    pragma = "quick_check" if drilled else "integrity_check"
    try:
        connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        with contextlib.closing(connection):
            rows = connection.execute(f"PRAGMA {pragma}").fetchall()
    except sqlite3.Error as error:
        raise RestoreError("corrupt", f"refusing {backup.name}: it is corrupt (SQLite: {error})") from error
    if [tuple(row) for row in rows] != [("ok",)]:
        detail = "; ".join(str(row[0]) for row in rows[:3])
        raise RestoreError("corrupt", f"refusing {backup.name}: it is corrupt ({pragma}: {detail})")
    return manifest


def _check_room(db: Path, needed: int) -> None:
    folder = db.parent
    if not folder.is_dir():
        raise RestoreError("refused", f"the database's folder {folder} does not exist")
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise RestoreError(
            "no_space", f"not enough space beside {db} for the restored copy: {needed} bytes needed, {free} free"
        )


def _plan_lines(journal: RestoreJournal, db: Path) -> list[str]:
    lines = []
    if journal.service_stopped_by_caller:
        lines.append("the service is stopped by you (--service-stopped): rollbackd will not stop or start it")
    else:
        lines.append(f"stop the service ({journal.control_kind})")
    lines.append(f"copy {journal.backup_path} to {journal.temp}, fsync, check its sha256")
    present = [name for name in (db.name, *(db.name + suffix for suffix in SIDECARS)) if (db.parent / name).exists()]
    stamp = _stamp(journal.started_at)
    if present:
        lines.append(f"move {', '.join(present)} aside as {db.stem}_corrupted_{stamp}{db.suffix}* (rename, no copy)")
    lines.append(f"rename {journal.temp} to {db}, fsync {db.parent}")
    lines.append(
        f"check the restored database: quick_check, revision {journal.expected_revision}, "
        f"row counts {journal.expected_counts}"
    )
    if not journal.service_stopped_by_caller:
        lines.append("start the service")
    return lines


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y%m%d_%H%M%S")


class _Runner:
    """Performs (or resumes) one journaled restore."""

    def __init__(
        self,
        journal: RestoreJournal,
        service_dir: Path,
        control: ServiceControl | None,
        clock: Callable[[], float],
        progress: CopyProgress | None,
        on_step: StepEvents | None = None,
    ) -> None:
        self.journal = journal
        self.on_step = on_step
        self.service_dir = service_dir
        self.control = control
        self.clock = clock
        self.progress = progress
        self.steps: list[RestoreStep] = []
        self.db = Path(journal.database)
        self.temp = Path(journal.temp)
        self.service_started = False

    # -- journal -------------------------------------------------------------------------------------------
    def record(self, state: str, **changes: Any) -> None:
        self.journal = self.journal.advance(state, **changes)
        write_journal(self.service_dir, self.journal)

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        if self.on_step is not None:
            self.on_step(name, None)
        started = time.monotonic()
        yield
        self.steps.append(RestoreStep(name, time.monotonic() - started, detail))
        if self.on_step is not None:
            self.on_step(name, self.steps[-1])

    # -- fresh restore -------------------------------------------------------------------------------------
    def run(self) -> RestoreReport:
        self.record("stopping")
        if not self.journal.service_stopped_by_caller:
            try:
                with self.step("stop service", self.journal.control_kind):
                    self._control("stop")
            except ControlError as error:
                self.record("aborted", detail=f"the service did not stop: {error}")
                raise RestoreError("control", f"{error}; nothing was restored") from error
        self.record("copying")
        try:
            with self.step("copy backup beside the database", self.journal.temp):
                self._copy()
            with self.step("verify the copy", "sha256, journal mode, fsync"):
                temp_sha256 = self._seal_copy()
        except (OSError, RestoreError) as error:
            report = self.undo(f"copying the backup failed: {error}")
            reason = "no_space" if isinstance(error, OSError) and error.errno == errno.ENOSPC else "io_error"
            raise RestoreError(reason, f"{error}; {report.message}", touched=True) from error
        self.record("copied", temp_sha256=temp_sha256)
        return self.finish()

    # -- resume --------------------------------------------------------------------------------------------
    def resume(self) -> RestoreReport:
        state = self.journal.state
        log.warning("resuming the restore of %s interrupted in state %r", self.journal.service, state)
        if state in ("planned", "stopping", "copying", "undoing"):
            return self.undo(f"the restore was interrupted while {state}: undone, the old database is in place")
        if state == "copied" and (not self.temp.exists() or file_sha256(self.temp) != self.journal.temp_sha256):
            return self.undo("the interrupted restore's copy is not intact: undone, the old database is in place")
        return self.finish()

    def finish(self) -> RestoreReport:
        state = self.journal.state
        if state in ("copied", "swapping"):
            if state == "copied":
                self.record("swapping", moves=self._plan_moves())
            try:
                with self.step("quarantine old files and swap in the backup"):
                    self._swap()
            except (OSError, RestoreError) as error:
                report = self.undo(f"the swap failed: {error}")
                raise RestoreError("io_error", f"{error}; {report.message}", touched=True) from error
            self.record("swapped")
        if self.journal.state == "swapped":
            try:
                with self.step("check the restored database"):
                    revision, counts = self._verify()
            except RestoreError as error:
                report = self.undo(f"the restored database failed its check: {error}")
                raise RestoreError("verify_failed", f"{error}; {report.message}", touched=True) from error
            self.record("starting")
        else:
            revision, counts = self._read_facts()
        message = "restored"
        if not self.journal.service_stopped_by_caller:
            try:
                with self.step("start service", self.journal.control_kind):
                    self._control("start")
                self.service_started = True
            except ControlError as error:
                self.record("done", detail=f"restored, but the service did not start: {error}")
                raise RestoreError(
                    "control", f"the database was restored, but the service did not start: {error}", touched=True
                ) from error
        else:
            message = "restored; the service was stopped by you: start it yourself"
        self.record("done", detail=message, steps=self._steps_json())
        return self._report("restored", message, revision, counts)

    # -- undo ----------------------------------------------------------------------------------------------
    def undo(self, why: str) -> RestoreReport:
        """Put the old database back exactly as it was and start the service again if rollbackd stopped it."""
        self.record("undoing", detail=why)
        with self.step("undo", why):
            _remove(self.temp)
            for moved in self.journal.moves:
                if moved.source == str(self.db):
                    self._undo_database(Path(moved.target))
            for moved in self.journal.moves:
                target, source = Path(moved.target), Path(moved.source)
                if moved.source != str(self.db) and target.exists():
                    os.replace(target, source)
            fsync_dir(self.db.parent)
        message = why
        if not self.journal.service_stopped_by_caller:
            try:
                with self.step("start service", self.journal.control_kind):
                    self._control("start")
                self.service_started = True
            except ControlError as error:
                message = f"{why}; and the service did not start again: {error}"
        self.record("undone", detail=message, steps=self._steps_json())
        return self._report("undone", message, None, {})

    def _undo_database(self, quarantined: Path) -> None:
        if not quarantined.exists():
            return  # never linked, or already put back
        if self.db.exists() and os.path.samefile(self.db, quarantined):
            quarantined.unlink()  # linked but not yet swapped: the database never changed
            return
        for suffix in SIDECARS:  # the restored copy's own -wal/-shm must not meet the old database
            _remove(Path(f"{self.db}{suffix}"))
        os.replace(quarantined, self.db)

    # -- steps ---------------------------------------------------------------------------------------------
    def _control(self, action: str) -> None:
        if self.control is None:
            raise ControlError("no service control was given")
        if action == "stop":
            self.control.stop()
        else:
            self.control.start()

    def _copy(self) -> None:
        """Copy the backup to the temp name (mode and owner of the database it replaces), as its manifest says."""
        source = Path(self.journal.backup_path)
        _remove(self.temp)
        mode, owner = 0o600, None
        with contextlib.suppress(FileNotFoundError):
            info = self.db.stat()
            mode, owner = info.st_mode & 0o7777, (info.st_uid, info.st_gid)
        sha256 = copy_hashed(source, self.temp, mode=mode, owner=owner, progress=self.progress)
        if sha256 != self.journal.backup_sha256:
            raise RestoreError("corrupt", f"the copy of {source.name} does not match its manifest's sha256")

    def _seal_copy(self) -> str:
        """Give the copy the journal mode of the database it replaces, make it durable; return its sha256 as read
        back from the disk (a step of its own: on a large file it takes as long as the copy)."""
        if self.journal.journal_mode == "wal":
            # The service's database was in WAL mode (persistent in the file header); keep it so.
            connection = sqlite3.connect(self.temp)
            with contextlib.closing(connection):
                connection.execute("PRAGMA journal_mode = WAL")
            fsync_file(self.temp)
        fsync_dir(self.db.parent)
        return file_sha256(self.temp)

    def _plan_moves(self) -> tuple[Move, ...]:
        """Quarantine names for what exists now (after the stop): the database and its -wal/-shm/-journal."""
        present = [suffix for suffix in ("", *SIDECARS) if Path(f"{self.db}{suffix}").exists()]
        stamp = _stamp(self.journal.started_at)
        sequence = 0
        while True:
            base = f"{self.db.stem}_corrupted_{stamp}{'_' + str(sequence) if sequence else ''}{self.db.suffix}"
            targets = {suffix: self.db.with_name(base + suffix) for suffix in ("", *SIDECARS)}
            if not any(path.exists() for path in targets.values()):
                break
            sequence += 1
        return tuple(Move(f"{self.db}{suffix}", str(targets[suffix])) for suffix in present)

    def _swap(self) -> None:
        """Idempotent: link the database aside, rename its sidecars aside, replace it with the temp copy."""
        for moved in self.journal.moves:
            source, target = Path(moved.source), Path(moved.target)
            if moved.source == str(self.db):
                if not target.exists() and source.exists():
                    os.link(source, target)  # a link, not a rename: the database name never disappears
            elif source.exists():
                if target.exists():
                    raise RestoreError("io_error", f"both {source} and {target} exist: refusing to overwrite")
                os.rename(source, target)
        if self.temp.exists():
            os.replace(self.temp, self.db)
        elif not self.db.exists() or any(
            moved.source == str(self.db) and os.path.samefile(self.db, moved.target) for moved in self.journal.moves
        ):
            raise RestoreError("io_error", f"the restored copy {self.temp} is gone before it was put in place")
        fsync_dir(self.db.parent)

    def _read_facts(self) -> tuple[str | None, dict[str, int | None]]:
        connection = sqlite3.connect(self.db)
        with contextlib.closing(connection):
            connection.execute("PRAGMA query_only = ON")
            revision = database.read_revision(connection)
            counts = database.count_rows(connection, list(self.journal.expected_counts))
        return revision, counts

    def _verify(self) -> tuple[str | None, dict[str, int | None]]:
        try:
            connection = sqlite3.connect(self.db)
            with contextlib.closing(connection):
                connection.execute("PRAGMA query_only = ON")
                rows = connection.execute("PRAGMA quick_check").fetchall()
        except sqlite3.Error as error:
            raise RestoreError("verify_failed", f"the restored database cannot be read: {error}") from error
        if [tuple(row) for row in rows] != [("ok",)]:
            raise RestoreError("verify_failed", f"quick_check of the restored database failed: {rows[:3]}")
        revision, counts = self._read_facts()
        if revision != self.journal.expected_revision:
            raise RestoreError(
                "verify_failed",
                f"restored revision {revision} differs from the manifest's {self.journal.expected_revision}",
            )
        if counts != self.journal.expected_counts:
            expected = self.journal.expected_counts
            raise RestoreError("verify_failed", f"restored row counts {counts} differ from the manifest's {expected}")
        return revision, counts

    def _steps_json(self) -> tuple[dict[str, Any], ...]:
        return (*self.journal.steps, *({"name": s.name, "seconds": s.seconds, "detail": s.detail} for s in self.steps))

    def _report(self, outcome: str, message: str, revision: str | None, counts: dict[str, int | None]) -> RestoreReport:
        quarantined = tuple(moved.target for moved in self.journal.moves) if outcome == "restored" else ()
        return RestoreReport(
            service=self.journal.service,
            backup=self.journal.backup,
            database=self.journal.database,
            outcome=outcome,
            quarantined=quarantined,
            revision=revision,
            row_counts=counts,
            steps=tuple(self.steps),
            service_started=self.service_started,
            message=message,
        )


def _remove(path: Path) -> None:
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
