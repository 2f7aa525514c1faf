"""Point-in-time restore from the Litestream replica, proven before it replaces anything.

``litestream restore -o`` writes the database as it was at a moment into a scratch file *inside the backup dir*
(a ``.partial`` name that no listing takes for a backup, so a crash leaves debris the backup machinery already
clears). The scratch is switched to rollback-journal mode (no -wal/-shm beside it, like every backup), checked
in full (``integrity_check``, ``foreign_key_check``, the Alembic revision, the watched tables' row counts) and
only then becomes an ordinary verified backup ``<stem>_backup_YYYYMMDD_HHMMSS.db`` named for the restored
moment, with a manifest whose reason is ``replica`` and whose ``extra`` says which point it holds. From there the
swap is the one every restore goes through (``backup/restore.py``: the current file kept as ``_corrupted_<ts>``,
the journal, the check after the swap), with Litestream paused around it (``ReplicationPause``) so that it starts
a new lineage from the restored file and never replicates the damaged one over good history.

Anything that goes wrong before the swap (the replica unreachable or behind the moment, the disk full, the copy
failing its check) raises ``ReplicaRestoreError`` with nothing swapped and the scratch removed; the callers fall
back to a local backup and say why.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from rollbackd import __version__
from rollbackd.backup.catalog import PARTIAL_SUFFIX, BackupEntry, backup_name, inspect_backup
from rollbackd.backup.manifest import BackupManifest, manifest_path, write_manifest
from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import file_sha256, fsync_dir, fsync_file
from rollbackd.host.commands import CommandResult
from rollbackd.replication import litestream
from rollbackd.replication.pause import NoPause as NoPause  # re-exported: it was defined here before pause.py
from rollbackd.state.state_dir import StateDir
from rollbackd.target import database

log = logging.getLogger(__name__)

RESTORE_TIMEOUT = 600.0  # seconds for `litestream restore` (a 100 MB database from S3 takes a few)
LIST_TIMEOUT = 30.0  # seconds for `litestream restore -dry-run`
SPACE_MARGIN = 1.2  # the scratch may need the database's size and some; refuse before writing when short
METHOD = "litestream-restore"
REASON = "replica"


class ReplicaRestoreError(Exception):
    """A replica restore that did not happen; nothing was swapped. ``reason`` is one of: not_configured, missing
    (no litestream binary), unreachable, no_point (the replica has nothing at or before that moment), behind (it
    has not replicated up to the moment), no_space, verify_failed, io_error."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ReplicaCopy:
    """A verified copy of the database as the replica holds it at ``point`` (None: its newest moment)."""

    path: Path
    point: float | None
    replicated_until: float | None
    revision: str | None
    row_counts: dict[str, int | None]
    seconds: float
    check: str = "integrity_check + foreign_key_check"


def plan_point(service: ServiceConfig, point: float | None, *, state_dir: StateDir) -> list[str]:
    """What a replica restore would do, after asking the replica (``litestream restore -dry-run``) that it has the
    moment. Raise ReplicaRestoreError when it cannot (the same errors a restore would meet first)."""
    runner = _prepare(service, state_dir)
    _check_not_behind(service, runner, point)
    argv = runner.restore_argv(service.backups.dir / "plan.db", _aware(point))
    result = runner.run([*argv[:-1], "-dry-run", argv[-1]], timeout=LIST_TIMEOUT)
    if not result.ok:
        raise _litestream_error(service, result, point)
    db = service.database
    return [
        f"litestream restore the database as at {_describe_point(point)} into a scratch file in {service.backups.dir}",
        "check the copy: integrity_check, foreign_key_check, revision, row counts",
        f"keep it as a verified backup {db.stem}_backup_<moment>.db (manifest reason {REASON!r})",
        "pause replication",
        f"stop the service, keep {db.name} (and -wal/-shm) as {db.stem}_corrupted_<timestamp>{db.suffix}",
        "put the copy in place, check it, start the service",
        "resume replication (a new lineage from the restored file)",
    ]


def fetch_point(
    service: ServiceConfig,
    point: float | None,
    *,
    state_dir: StateDir,
    expected_revision: str | None = None,
    clock: Callable[[], float] = time.time,
    scratch_dir: Path | None = None,
) -> ReplicaCopy:
    """Restore the replica's database at ``point`` into a scratch file in the backup dir (or ``scratch_dir``, for
    a drill that keeps nothing) and verify it.

    Raise ReplicaRestoreError; the scratch is removed then. The live database is never opened for writing.
    """
    started = time.monotonic()
    runner = _prepare(service, state_dir)
    until = _check_not_behind(service, runner, point)
    backup_dir = scratch_dir or service.backups.dir
    try:
        backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise ReplicaRestoreError("io_error", f"cannot create the backup dir {backup_dir}: {error}") from error
    _check_room(service, backup_dir)
    moment = point if point is not None else (until if until is not None else clock())
    scratch = backup_dir / f".{backup_name(service.database.stem, moment)}.{os.getpid()}{PARTIAL_SUFFIX}"
    _remove(scratch)
    try:
        result = runner.run(runner.restore_argv(scratch, _aware(point)), timeout=RESTORE_TIMEOUT)
        if not result.ok:
            raise _litestream_error(service, result, point)
        if not scratch.is_file():
            raise ReplicaRestoreError("no_point", f"litestream restore wrote no database for {service.name}")
        _to_rollback_journal(scratch)
        revision, counts = _verify(service, scratch, expected_revision)
    except OSError as error:
        _remove(scratch)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ReplicaRestoreError(
                "no_space", f"the backup dir {backup_dir} is full: nothing was swapped"
            ) from error
        raise ReplicaRestoreError("io_error", f"restoring from the replica failed: {error}") from error
    except sqlite3.Error as error:
        _remove(scratch)
        raise _sqlite_error(error, backup_dir) from error
    except BaseException:
        _remove(scratch)
        raise
    return ReplicaCopy(scratch, point, until, revision, counts, time.monotonic() - started)


def adopt_copy(service: ServiceConfig, copy: ReplicaCopy, *, clock: Callable[[], float] = time.time) -> BackupEntry:
    """Make the verified scratch an ordinary verified backup named for its moment. Raise ReplicaRestoreError."""
    backup_dir = service.backups.dir
    stem = service.database.stem
    moment = copy.point if copy.point is not None else (copy.replicated_until or clock())
    try:
        fsync_file(copy.path)
        info = copy.path.stat()
        with contextlib.closing(_connect_ro(copy.path)) as connection:
            indexes = tuple(sorted(database.index_names(connection)))
            fingerprint = database.schema_fingerprint(connection)
            pages = database.page_count(connection)
            page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
        final = _free_name(backup_dir, stem, moment)
        manifest = BackupManifest(
            name=final.name,
            source=str(service.database),
            reason=REASON,
            created_at=moment,
            duration_seconds=round(copy.seconds, 6),
            method=METHOD,
            check="integrity_check",
            rollbackd_version=__version__,
            revision=copy.revision,
            row_counts=dict(copy.row_counts),
            indexes=indexes,
            schema_fingerprint=fingerprint,
            size_bytes=info.st_size,
            mtime_ns=info.st_mtime_ns,
            sha256=file_sha256(copy.path),
            page_count=pages,
            page_size=page_size,
            journal_mode="wal",  # Litestream replicates only WAL databases: the service's file is in WAL mode
            extra={
                "replica_point": _iso(copy.point) if copy.point is not None else None,
                "replicated_until": _iso(copy.replicated_until) if copy.replicated_until is not None else None,
                "restored_at": _iso(clock()),
                "checks": copy.check,
            },
        )
        write_manifest(final, manifest)
        os.link(copy.path, final)
        copy.path.unlink()
        fsync_dir(backup_dir)
    except (OSError, sqlite3.Error) as error:
        _remove(copy.path)
        raise ReplicaRestoreError("io_error", f"cannot keep the replica's copy as a backup: {error}") from error
    entry = inspect_backup(final, stem)
    if not entry.verified:
        raise ReplicaRestoreError("verify_failed", f"the replica's copy {final.name} is not verified: {entry.problem}")
    return entry


# -- litestream -------------------------------------------------------------------------------------------------


def _prepare(service: ServiceConfig, state_dir: StateDir) -> litestream.Litestream:
    if service.replication is None:
        raise ReplicaRestoreError("not_configured", f"service {service.name!r} has no [service.replication]")
    try:
        return litestream.prepare(service, state_dir)
    except litestream.LitestreamMissing as error:
        raise ReplicaRestoreError("missing", str(error)) from error
    except litestream.CredentialsError as error:
        raise ReplicaRestoreError("unreachable", str(error)) from error
    except OSError as error:
        raise ReplicaRestoreError("io_error", f"cannot write the Litestream config: {error}") from error


def _check_not_behind(service: ServiceConfig, runner: litestream.Litestream, point: float | None) -> float | None:
    """The replica's newest moment; raise ReplicaRestoreError when it cannot be read (``unreachable``), holds
    nothing (``no_point``) or stops short of ``point`` (``behind``).

    Behind only by more than ``max_lag`` (and one second: Litestream lists times to the second): an idle database
    commits nothing for a while, and a moment after its last commit is the same database as that commit.
    """
    try:
        state = litestream.read_replica(runner, timeout=LIST_TIMEOUT)
    except litestream.ReplicaUnreachable as error:
        raise ReplicaRestoreError("unreachable", f"the replica of {service.name} cannot be read: {error}") from error
    until = state.newest_transaction
    if until is None:
        raise ReplicaRestoreError(
            "no_point", f"the replica of {service.name} holds nothing: not replicated yet, or its files are gone"
        )
    replication = service.replication
    if point is not None and replication is not None and until + replication.max_lag + 1.0 < point:
        raise ReplicaRestoreError(
            "behind",
            f"the replica of {service.name} holds writes up to {_iso(until)} only, {point - until:.0f}s short of "
            f"{_iso(point)} (replication.max_lag {replication.max_lag:g}s)",
        )
    return until


def _litestream_error(service: ServiceConfig, result: CommandResult, point: float | None) -> ReplicaRestoreError:
    if result.exit_code is None:
        why = "timed out" if result.timed_out else result.error
        return ReplicaRestoreError("unreachable", f"litestream restore of {service.name}: {why}")
    output = result.output_tail
    lines = [line for line in output.splitlines() if line.strip()]
    last = lines[-1].removeprefix("Error: ") if lines else "no output"
    lowered = output.lower()
    if "no space left" in lowered or "disk quota" in lowered:
        return ReplicaRestoreError("no_space", f"the backup dir {service.backups.dir} is full: {last}")
    if "no matching backup" in lowered or "no snapshots" in lowered or "no backups" in lowered:
        moment = f"at or before {_iso(point)}" if point is not None else "at all"
        return ReplicaRestoreError("no_point", f"the replica of {service.name} holds nothing {moment} ({last})")
    return ReplicaRestoreError("unreachable", f"litestream restore of {service.name} failed: {last}")


# -- the copy ---------------------------------------------------------------------------------------------------


def _check_room(service: ServiceConfig, folder: Path) -> None:
    """Refuse before writing when ``folder`` cannot hold a copy the size of the database (when known)."""
    needed = 0
    for path in (service.database, Path(f"{service.database}-wal")):
        with contextlib.suppress(OSError):
            needed += path.stat().st_size
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < needed * SPACE_MARGIN:
        raise ReplicaRestoreError(
            "no_space",
            f"not enough space in {folder} for the replica's copy: about {int(needed * SPACE_MARGIN)} "
            f"bytes needed, {free} free; nothing was swapped",
        )


def _to_rollback_journal(path: Path) -> None:
    """Fold the restored file's WAL into it and leave no -wal/-shm beside it, like every backup."""
    connection = sqlite3.connect(path)
    with contextlib.closing(connection):
        connection.execute("PRAGMA journal_mode = DELETE").fetchone()
    fsync_file(path)


def _verify(
    service: ServiceConfig, path: Path, expected_revision: str | None
) -> tuple[str | None, dict[str, int | None]]:
    """The full checks a restore source must pass. Raise ReplicaRestoreError ``verify_failed``."""
    with contextlib.closing(_connect_ro(path)) as connection:
        integrity = [str(row[0]) for row in connection.execute("PRAGMA integrity_check").fetchall()]
        if integrity != ["ok"]:
            raise ReplicaRestoreError("verify_failed", f"the replica's copy fails integrity_check: {integrity[:3]}")
        violations = connection.execute("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise ReplicaRestoreError(
                "verify_failed",
                f"the replica's copy fails foreign_key_check: {len(violations)} violation(s), first in table "
                f"{violations[0][0]}",
            )
        revision = database.read_revision(connection)
        counts = database.count_rows(connection, service.probes.rows.tables)
    if expected_revision is not None and revision != expected_revision:
        raise ReplicaRestoreError(
            "verify_failed", f"the replica's copy is at revision {revision}, not the expected {expected_revision}"
        )
    missing = sorted(table for table, count in counts.items() if count is None)
    if missing:
        raise ReplicaRestoreError("verify_failed", f"the replica's copy has no table {', '.join(missing)}")
    return revision, counts


def _sqlite_error(error: sqlite3.Error, backup_dir: Path) -> ReplicaRestoreError:
    if (getattr(error, "sqlite_errorcode", 0) & 0xFF) == 13:  # SQLITE_FULL
        return ReplicaRestoreError("no_space", f"the backup dir {backup_dir} is full: nothing was swapped")
    return ReplicaRestoreError("verify_failed", f"SQLite cannot read the replica's copy: {error}")


def _connect_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)


def _free_name(backup_dir: Path, stem: str, moment: float) -> Path:
    sequence = 0
    while True:
        candidate = backup_dir / backup_name(stem, moment, sequence)
        if not candidate.exists() and not manifest_path(candidate).exists():
            return candidate
        sequence += 1


def _remove(path: Path) -> None:
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-journal", ".tmp"))):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


def _aware(moment: float | None) -> datetime | None:
    return datetime.fromtimestamp(moment, UTC) if moment is not None else None


def _describe_point(point: float | None) -> str:
    return _iso(point) if point is not None else "its newest moment"
