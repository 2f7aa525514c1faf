"""Restore drills: proving, on a schedule, that the newest backup really restores.

A backup nobody restored is a hope. The drill copies it into ``state_dir/scratch`` (checking the sha256 of the
bytes it copies), runs the full ``integrity_check`` and ``foreign_key_check`` (the snapshot ran only the 7x
cheaper ``quick_check``), compares revision and row counts with the manifest, and records the result in the
manifest. A backup that fails its drill is no longer verified: it is never chosen for a restore, and it is
logged at error level and counted in ``rollbackd_backup_drill_failures_total``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from rollbackd.backup.catalog import BackupEntry, NoBackup, list_backups
from rollbackd.backup.manifest import DrillResult, ManifestError, read_manifest, write_manifest
from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import copy_hashed
from rollbackd.metrics import Metrics
from rollbackd.state.state_dir import StateDir
from rollbackd.target import database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrillReport:
    backup: str
    ok: bool
    detail: str
    at: float
    seconds: float


def run_drill(
    service: ServiceConfig,
    *,
    state_dir: StateDir,
    entry: BackupEntry | None = None,
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
) -> DrillReport:
    """Drill ``entry`` (default: the newest verified backup) and record the result in its manifest.

    Raise NoBackup when there is no verified backup to drill.
    """
    if entry is None:
        entry = list_backups(service.backups.dir, service.database.stem).newest_verified()
        if entry is None:
            raise NoBackup(f"no verified backup of {service.name!r} to drill")
    at = clock()
    started = time.monotonic()
    scratch = state_dir.scratch / f"drill-{service.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, mode=0o700)
    try:
        ok, detail = _drill(service, entry, scratch / entry.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = DrillReport(entry.name, ok, detail, at, time.monotonic() - started)
    try:
        manifest = read_manifest(entry.path)
        write_manifest(entry.path, manifest.with_drill(DrillResult(at, ok, detail)))
    except (ManifestError, OSError) as error:
        report = DrillReport(entry.name, False, f"{detail}; and the manifest could not be updated: {error}", at, 0.0)
    if report.ok:
        log.info("restore drill of %s passed: %s", entry.name, detail)
        if metrics is not None:
            metrics.backup_last_drill_success_timestamp_seconds.labels(service=service.name).set(at)
    else:
        log.error("restore drill of %s FAILED: %s (the backup is no longer trusted)", entry.name, report.detail)
        if metrics is not None:
            metrics.backup_drill_failures.labels(service=service.name).inc()
    return report


def _drill(service: ServiceConfig, entry: BackupEntry, copy: Path) -> tuple[bool, str]:
    manifest = entry.manifest
    if manifest is None:
        return False, "no manifest"
    try:
        sha256 = copy_hashed(entry.path, copy)
    except OSError as error:
        return False, f"cannot copy the backup: {error}"
    if sha256 != manifest.sha256:
        return False, "sha256 differs from the manifest: the backup's bytes changed"
    try:
        connection = sqlite3.connect(f"file:{quote(str(copy))}", uri=True)
        with contextlib.closing(connection):
            integrity = [str(row[0]) for row in connection.execute("PRAGMA integrity_check").fetchall()]
            if integrity != ["ok"]:
                return False, f"integrity_check: {'; '.join(integrity[:3])}"
            violations = connection.execute("PRAGMA foreign_key_check").fetchall()
            if violations:
                return False, f"foreign_key_check: {len(violations)} violation(s), first in table {violations[0][0]}"
            revision = database.read_revision(connection)
            counts = database.count_rows(connection, list(manifest.row_counts))
    except sqlite3.Error as error:
        return False, f"SQLite cannot read the restored copy: {error}"
    if revision != manifest.revision:
        return False, f"revision {revision} differs from the manifest's {manifest.revision}"
    if counts != manifest.row_counts:
        return False, f"row counts {counts} differ from the manifest's {manifest.row_counts}"
    total = sum(count or 0 for count in counts.values())
    return True, f"integrity ok, foreign keys ok, revision {revision}, {total} rows as recorded"
