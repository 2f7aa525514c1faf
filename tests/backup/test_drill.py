"""Restore drills prove the newest backup restores; a backup that fails one is marked and never restored."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from rollbackd.backup.catalog import NoBackup, choose_backup, list_backups
from rollbackd.backup.drill import run_drill
from rollbackd.backup.manifest import manifest_path, read_manifest
from rollbackd.backup.snapshot import take_backup
from rollbackd.metrics import Metrics
from rollbackd.state.state_dir import StateDir

from .helpers import make_database, make_service

T0 = 1_736_000_000.0


def test_drill_passes_on_a_good_backup_and_records_it(tmp_path: Path, state_dir: StateDir, metrics: Metrics) -> None:
    service = make_service(tmp_path)
    make_database(service.database, players=12)
    backup = take_backup(service, reason="scheduled").path
    report = run_drill(service, state_dir=state_dir, clock=lambda: T0, metrics=metrics)
    assert report.ok and report.backup == backup.name
    assert "integrity ok" in report.detail and "foreign keys ok" in report.detail
    drill = read_manifest(backup).drill
    assert drill is not None and drill.ok and drill.at == T0
    assert (
        metrics.registry.get_sample_value("rollbackd_backup_last_drill_success_timestamp_seconds", {"service": "vbrpg"})
        == T0
    )
    assert list(os.scandir(state_dir.scratch)) == []  # the scratch copy is gone


def test_drill_fails_on_silently_rotten_bytes_and_marks_the_backup(
    tmp_path: Path, state_dir: StateDir, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    older = take_backup(service, reason="scheduled", clock=lambda: T0).path
    rotten = take_backup(service, reason="scheduled", clock=lambda: T0 + 3600).path
    info = rotten.stat()
    with rotten.open("r+b") as handle:
        handle.seek(info.st_size // 2)
        handle.write(b"\xde\xad\xbe\xef")
    os.utime(rotten, ns=(info.st_atime_ns, info.st_mtime_ns))  # bit rot: size and mtime unchanged
    assert choose_backup(list_backups(service.backups.dir, "vbrpg")).name == rotten.name  # looks fine cheaply
    report = run_drill(service, state_dir=state_dir, metrics=metrics)
    assert not report.ok and report.backup == rotten.name and "sha256" in report.detail
    assert any(record.levelname == "ERROR" and rotten.name in record.message for record in caplog.records)
    assert metrics.registry.get_sample_value("rollbackd_backup_drill_failures_total", {"service": "vbrpg"}) == 1
    entry = next(entry for entry in list_backups(service.backups.dir, "vbrpg").backups if entry.name == rotten.name)
    assert not entry.verified and "drill" in entry.problem
    assert choose_backup(list_backups(service.backups.dir, "vbrpg")).name == older.name  # never chosen again


def test_drill_fails_on_a_backup_with_foreign_key_violations(tmp_path: Path, state_dir: StateDir) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    with closing(sqlite3.connect(service.database, isolation_level=None)) as connection:  # FKs off: as a bad migration
        connection.execute("INSERT INTO game_room_participants (room_id, player_id) VALUES (999, 1)")
    take_backup(service, reason="scheduled")
    report = run_drill(service, state_dir=state_dir)
    assert not report.ok and "foreign_key_check" in report.detail


def test_drill_fails_when_counts_differ_from_the_manifest(tmp_path: Path, state_dir: StateDir) -> None:
    service = make_service(tmp_path)
    make_database(service.database, players=4)
    backup = take_backup(service, reason="scheduled").path
    data = json.loads(manifest_path(backup).read_text())
    data["row_counts"]["players"] = 5
    manifest_path(backup).write_text(json.dumps(data))
    report = run_drill(service, state_dir=state_dir)
    assert not report.ok and "row counts" in report.detail


def test_drill_without_any_backup_says_so(tmp_path: Path, state_dir: StateDir) -> None:
    service = make_service(tmp_path)
    with pytest.raises(NoBackup):
        run_drill(service, state_dir=state_dir)
