"""Taking a verified backup of a live SQLite database while the service keeps writing.

Method (measured, bench/RESULTS.md): SQLite's online backup API, stepped (1 % of the pages per step, for
progress), **while the source connection holds a read transaction**. Stepping alone never finishes under a live
writer: every commit by another connection restarts the copy (324 restarts in 30 s on 1 GiB). Holding the read
transaction pins one snapshot, so the steps run to the end with zero restarts and, in WAL mode, the writer never
waits (writer p99 5-8 ms; the copy itself 1.19x ``cp``, the fastest consistent method measured). In
rollback-journal mode the same read transaction holds a SHARED lock, so writers wait for the copy (no consistent
method avoids that); the source gets a busy timeout so the copy waits out a writer's commit instead of failing
with "database is locked".

The copy goes to ``.<stem>_backup_<ts>.db.<pid>.partial`` (a name no listing mistakes for a backup), created
0600, is switched to rollback-journal mode (so reading it never leaves -wal/-shm beside it), fsynced, checked with
``quick_check`` while its sha256 is computed in parallel (each ~0.7 s/GiB; the full ``integrity_check`` and
``foreign_key_check`` run in the restore drill, and before restoring a backup never drilled), described in a
manifest, and only then linked to its final name ``<stem>_backup_YYYYMMDD_HHMMSS.db``. A backup that fails any
step leaves no file that looks like a backup. The source is opened ``mode=ro`` through SQLite only: never
``os.open`` of the live database, which would drop this process's SQLite locks on it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from rollbackd import __version__
from rollbackd.backup.catalog import PARTIAL_SUFFIX, backup_name
from rollbackd.backup.manifest import BackupManifest, manifest_path, write_manifest
from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import file_sha256, fsync_dir, fsync_file
from rollbackd.host.processes import pid_alive
from rollbackd.metrics import Metrics
from rollbackd.target import database

METHOD = "backup-api-stepped-read-snapshot"
STEPS = 100  # progress reports per copy (1 %); the step size does not affect consistency, the read snapshot does
MIN_STEP_PAGES = 64
SOURCE_BUSY_TIMEOUT = 30.0  # seconds the copy waits for a rollback-mode writer's commit
SQLITE_FULL = 13
SQLITE_BUSY = 5
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26

Progress = Callable[[int, int], None]  # (pages copied, pages total)
Phase = Callable[[str], None]  # a phase begins ("copying vbrpg.db", "verifying the copy ..."): for the CLI's line


class BackupError(Exception):
    """A backup that was not taken. ``reason`` is a metric label: disk_full, low_space, source_unavailable,
    source_busy, source_corrupt, verify_failed, dir_unwritable, timeout, io_error; or stopping (given up at the
    daemon's stop, not counted as a failure)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: BackupManifest


@dataclass(frozen=True)
class SpaceCheck:
    free_bytes: int
    total_bytes: int
    needed_bytes: int

    @property
    def free_after(self) -> int:
        return self.free_bytes - self.needed_bytes


def take_backup(
    service: ServiceConfig,
    *,
    reason: str,
    clock: Callable[[], float] = time.time,
    progress: Progress | None = None,
    metrics: Metrics | None = None,
    check: str = "quick_check",
    phase: Phase | None = None,
) -> BackupResult:
    """Back up the service's database into its backup dir, with a manifest. Raise BackupError.

    Takes no ServiceLock: the CLI and the scheduler hold it around this call, the recovery engine already does.
    """
    started = time.monotonic()
    try:
        result = snapshot_database(
            service.database,
            service.backups.dir,
            tables=service.probes.rows.tables,
            reason=reason,
            min_free_bytes=service.backups.min_free_bytes,
            min_free_ratio=service.backups.min_free_ratio,
            timeout=service.backups.timeout,
            clock=clock,
            progress=progress,
            check=check,
            phase=phase,
        )
    except BackupError as error:
        if metrics is not None and error.reason != "stopping":  # given up at shutdown: not a failed backup
            metrics.backup_failures.labels(service=service.name, reason=error.reason).inc()
        raise
    if metrics is not None:
        metrics.backup_last_success_timestamp_seconds.labels(service=service.name).set(
            result.manifest.created_at + result.manifest.duration_seconds
        )
        metrics.backup_duration_seconds.labels(service=service.name).observe(time.monotonic() - started)
        metrics.backup_size_bytes.labels(service=service.name).set(result.manifest.size_bytes)
    return result


def snapshot_database(
    source: Path,
    backup_dir: Path,
    *,
    tables: list[str],
    reason: str,
    min_free_bytes: int = 0,
    min_free_ratio: float = 0.0,
    timeout: float = 3600.0,
    clock: Callable[[], float] = time.time,
    progress: Progress | None = None,
    check: str = "quick_check",
    phase: Phase | None = None,
) -> BackupResult:
    """Copy ``source`` consistently into ``backup_dir`` and verify the copy. Raise BackupError."""
    created_at = clock()
    started = time.monotonic()
    stem = source.stem
    _prepare_dir(backup_dir)
    remove_stale_partials(backup_dir, stem)
    if not source.is_file():
        raise BackupError("source_unavailable", f"database {source} does not exist")
    check_free_space(backup_dir, database_size(source), min_free_bytes, min_free_ratio)
    temp = backup_dir / f".{backup_name(stem, created_at)}.{os.getpid()}{PARTIAL_SUFFIX}"
    final: Path | None = None
    try:
        if phase is not None:
            phase(f"copying {source.name}")
        journal_mode = _copy(source, temp, timeout=timeout, progress=progress, deadline=started + timeout)
        if phase is not None:
            phase(f"verifying the copy ({check}, sha256)")
        fsync_file(temp)
        with ThreadPoolExecutor(max_workers=1) as pool:
            digest = pool.submit(file_sha256, temp)  # hashing overlaps the check: both are read-bound
            facts = _describe_copy(temp, tables, check)
            sha256 = digest.result()
        info = temp.stat()
        final = _free_name(backup_dir, stem, created_at)
        manifest = BackupManifest(
            name=final.name,
            source=str(source),
            reason=reason,
            created_at=created_at,
            duration_seconds=round(time.monotonic() - started, 6),
            method=METHOD,
            check=check,
            rollbackd_version=__version__,
            revision=facts.revision,
            row_counts=facts.row_counts,
            indexes=facts.indexes,
            schema_fingerprint=facts.schema_fingerprint,
            size_bytes=info.st_size,
            mtime_ns=info.st_mtime_ns,
            sha256=sha256,
            page_count=facts.page_count,
            page_size=facts.page_size,
            journal_mode=journal_mode,
        )
        # Manifest first, then the name: a crash in between leaves an orphan manifest, never an unverifiable .db.
        write_manifest(final, manifest)
        os.link(temp, final)  # unlike rename, never replaces an existing backup
        temp.unlink()
        fsync_dir(backup_dir)
    except BaseException as error:
        _discard(temp, final)
        if isinstance(error, BackupError) or not isinstance(error, Exception):
            raise
        raise _as_backup_error(error, source, backup_dir) from error
    return BackupResult(final, manifest)


def database_size(source: Path) -> int:
    """Bytes the copy may need: the database plus its WAL (stat only; never opens the live file)."""
    size = source.stat().st_size
    with contextlib.suppress(OSError):
        size += Path(f"{source}-wal").stat().st_size
    return size


def check_free_space(backup_dir: Path, needed: int, min_free_bytes: int, min_free_ratio: float) -> SpaceCheck:
    """Refuse (BackupError low_space) a backup that would leave less than the configured free space."""
    stats = os.statvfs(backup_dir)
    space = SpaceCheck(stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize, needed)
    floor = max(min_free_bytes, int(min_free_ratio * space.total_bytes))
    if space.free_after < floor:
        raise BackupError(
            "low_space",
            f"not enough free space in {backup_dir}: a backup needs about {_mib(needed)}, "
            f"{_mib(space.free_bytes)} free, and at least {_mib(floor)} must stay free "
            "(backups.min_free_bytes / min_free_ratio); backup skipped",
        )
    return space


def remove_stale_partials(backup_dir: Path, stem: str) -> list[Path]:
    """Remove temp files left by backups whose process died (kill -9, power loss); a live one's are kept."""
    removed = []
    for name in os.listdir(backup_dir):
        if not (name.startswith(f".{stem}_backup_") and PARTIAL_SUFFIX in name):
            continue
        pid_text = name.split(PARTIAL_SUFFIX)[0].rsplit(".", 1)[-1]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            (backup_dir / name).unlink()
            removed.append(backup_dir / name)
    return removed


# Under rollbackd.service (ProtectSystem=strict) every path outside the state dir and the drop-ins'
# ReadWritePaths= is a read-only mount, whatever its owner and mode: say so, not just "not writable".
READ_ONLY_HINT = "under systemd, add it to ReadWritePaths= in a drop-in of rollbackd.service"


def _prepare_dir(backup_dir: Path) -> None:
    try:
        backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        if error.errno == errno.EROFS:
            raise BackupError(
                "dir_unwritable", f"cannot create backup dir {backup_dir} on a read-only file system: {READ_ONLY_HINT}"
            ) from error
        raise BackupError("dir_unwritable", f"cannot create backup dir {backup_dir}: {error.strerror}") from error
    if not os.access(backup_dir, os.W_OK | os.X_OK):
        if _on_read_only_mount(backup_dir):
            raise BackupError(
                "dir_unwritable", f"backup dir {backup_dir} is on a read-only file system here: {READ_ONLY_HINT}"
            )
        raise BackupError("dir_unwritable", f"backup dir {backup_dir} is not writable")


def _on_read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _copy(source: Path, temp: Path, *, timeout: float, progress: Progress | None, deadline: float) -> str:
    """Copy one snapshot of ``source`` into ``temp``; return the source's journal mode."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)  # the temp, never the source
    os.close(fd)
    try:
        reader = database.connect_readonly(source, timeout=min(SOURCE_BUSY_TIMEOUT, timeout))
    except database.DatabaseUnavailable as error:
        raise BackupError("source_unavailable", str(error)) from error
    with contextlib.closing(reader):
        reader.isolation_level = None
        writer = sqlite3.connect(temp, isolation_level=None, check_same_thread=False)
        with contextlib.closing(writer):
            writer.execute("PRAGMA journal_mode = OFF")  # the copy is fsynced once, at the end
            writer.execute("PRAGMA synchronous = OFF")
            journal_mode = database.journal_mode(reader)
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()  # pins the snapshot
            step = max(MIN_STEP_PAGES, database.page_count(reader) // STEPS)
            try:
                reader.backup(writer, pages=step, progress=_progress_guard(progress, deadline))
            finally:
                reader.execute("COMMIT")
            writer.execute("PRAGMA journal_mode = DELETE")  # a WAL-mode header would put -wal/-shm beside it
    return journal_mode


def _progress_guard(progress: Progress | None, deadline: float) -> Callable[[int, int, int], None]:
    def report(status: int, remaining: int, total: int) -> None:
        if time.monotonic() > deadline:
            raise BackupError("timeout", "backup took longer than backups.timeout; abandoned")
        if progress is not None:
            progress(total - remaining, total)

    return report


@dataclass(frozen=True)
class _CopyFacts:
    revision: str | None
    row_counts: dict[str, int | None]
    indexes: tuple[str, ...]
    schema_fingerprint: str
    page_count: int
    page_size: int


def _describe_copy(temp: Path, tables: list[str], check: str) -> _CopyFacts:
    """Check the copy and read what the manifest records, all from the copy itself."""
    connection = sqlite3.connect(f"file:{quote(str(temp))}?mode=ro", uri=True, check_same_thread=False)
    with contextlib.closing(connection):
        pragma = "integrity_check" if check == "integrity_check" else "quick_check"
        rows = connection.execute(f"PRAGMA {pragma}").fetchall()
        if [tuple(row) for row in rows] != [("ok",)]:
            detail = "; ".join(str(row[0]) for row in rows[:5])
            raise BackupError("verify_failed", f"the copy failed {pragma}: {detail}")
        return _CopyFacts(
            revision=database.read_revision(connection),
            row_counts=database.count_rows(connection, tables),
            indexes=tuple(sorted(database.index_names(connection))),
            schema_fingerprint=database.schema_fingerprint(connection),
            page_count=database.page_count(connection),
            page_size=int(connection.execute("PRAGMA page_size").fetchone()[0]),
        )


def _free_name(backup_dir: Path, stem: str, created_at: float) -> Path:
    sequence = 0
    while True:
        candidate = backup_dir / backup_name(stem, created_at, sequence)
        if not candidate.exists() and not manifest_path(candidate).exists():
            return candidate
        sequence += 1


def _discard(temp: Path, final: Path | None) -> None:
    """Remove everything a failed backup wrote: the temp copy, its -wal/-shm, a manifest without its backup."""
    for path in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm"), Path(f"{temp}-journal")):
        with contextlib.suppress(OSError):
            path.unlink()
    if final is not None and not final.exists():
        with contextlib.suppress(OSError):
            manifest_path(final).unlink()


def _as_backup_error(error: Exception, source: Path, backup_dir: Path) -> BackupError:
    if isinstance(error, OSError):
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return BackupError("disk_full", f"backup dir {backup_dir} is full; the partial copy was removed")
        if error.errno == errno.EROFS:
            return BackupError(
                "dir_unwritable", f"backup dir {backup_dir} is on a read-only file system: {READ_ONLY_HINT}"
            )
        if error.errno in (errno.EACCES, errno.EPERM):
            return BackupError("dir_unwritable", f"cannot write in backup dir {backup_dir}: {error.strerror}")
        return BackupError("io_error", f"backup failed: {error}")
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        if code == SQLITE_FULL:
            return BackupError("disk_full", f"backup dir {backup_dir} is full; the partial copy was removed")
        if code == SQLITE_BUSY:
            return BackupError("source_busy", f"database {source} stayed locked by a writer: {error}")
        if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return BackupError("source_corrupt", f"database {source} cannot be read: {error}")
        return BackupError("io_error", f"backup of {source} failed: {error}")
    return BackupError("io_error", f"backup of {source} failed: {error}")


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"
