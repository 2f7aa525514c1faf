"""Restoring a backup the runbook's way: refuse bad input touching nothing, keep the old files, resume after a crash."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from rollbackd.backup.catalog import list_backups
from rollbackd.backup.manifest import manifest_path
from rollbackd.backup.restore import RestoreError, pending_restore, restore_backup, resume_interrupted_restore
from rollbackd.backup.restore_journal import Move, RestoreJournal, read_journal, write_journal
from rollbackd.backup.snapshot import take_backup
from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import file_sha256
from rollbackd.state.state_dir import StateDir
from rollbackd.target.control import ServiceControl

from .helpers import ExampleApp, make_database, make_service, rollbackd, rows

T0 = 1_736_000_000.0


def marker_control(tmp_path: Path) -> str:
    """A command control whose start/stop leave marks, for tests about the restore, not about the service."""
    start = ["sh", "-c", f"echo start >> {tmp_path / 'control.log'}"]
    stop = ["sh", "-c", f"echo stop >> {tmp_path / 'control.log'}"]
    return f'kind = "command"\nstart = {json.dumps(start)}\nstop = {json.dumps(stop)}'


def control_log(tmp_path: Path) -> list[str]:
    path = tmp_path / "control.log"
    return path.read_text().split() if path.exists() else []


def add_players(database: Path, *names: str) -> None:
    with closing(sqlite3.connect(database, isolation_level=None)) as connection:
        for name in names:
            connection.execute("INSERT INTO players (name) VALUES (?)", (name,))


def data_files(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name != "backups")


def tamper_keeping_size_and_mtime(path: Path) -> None:
    info = path.stat()
    with path.open("r+b") as handle:
        handle.seek(info.st_size - 100)
        handle.write(b"\x00garbage\x00")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def corrupt_with_a_consistent_manifest(backup: Path) -> None:
    """A backup whose bytes match its manifest but which SQLite finds broken (corrupted before it was described)."""
    with closing(sqlite3.connect(backup)) as connection:
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'players'").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    with backup.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\x0d" + b"\xff" * 200)
    data = json.loads(manifest_path(backup).read_text())
    data["sha256"] = file_sha256(backup)
    data["mtime_ns"] = backup.stat().st_mtime_ns
    manifest_path(backup).write_text(json.dumps(data))


@pytest.mark.e2e
def test_restore_refuses_bad_backups_and_touches_nothing(tmp_path: Path, example: ExampleApp) -> None:
    service_config = make_service(tmp_path, control=example.control_toml())
    assert service_config.database == example.database
    good = take_backup(service_config, reason="manual", clock=lambda: T0).path
    rotten = take_backup(service_config, reason="manual", clock=lambda: T0 + 60).path
    tamper_keeping_size_and_mtime(rotten)
    corrupt = take_backup(service_config, reason="manual", clock=lambda: T0 + 120).path
    corrupt_with_a_consistent_manifest(corrupt)
    outside = tmp_path / "outside.db"
    outside.write_bytes(good.read_bytes())
    escape = service_config.backups.dir / "vbrpg_backup_20250105_000000.db"
    escape.symlink_to(outside)
    example.cli(*example.start_argv()[1:])
    pid = example.running_pid()
    assert pid is not None
    config = tmp_path / "rollbackd.toml"
    before = example.database.read_bytes()
    files_before = data_files(example.database.parent)
    cases = {
        "../../etc/passwd": "without any path",
        escape.name: "leads out of",
        rotten.name: "sha256",
        corrupt.name: "it is corrupt",
    }
    for name, message in cases.items():
        result = rollbackd(config, "restore", "--yes", "--backup", name)
        assert result.returncode == 1, (name, result.stderr)
        assert message in result.stderr, (name, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert example.database.read_bytes() == before
        assert data_files(example.database.parent) == files_before
        assert example.running_pid() == pid
        assert httpx.get(f"{example.base_url}/health", timeout=10).status_code == 200
    assert read_journal(StateDir(tmp_path / "state").service_dir("vbrpg")) is None


@pytest.mark.e2e
def test_restore_with_command_control_on_the_real_example_service(tmp_path: Path, example: ExampleApp) -> None:
    service_config = make_service(tmp_path, control=example.control_toml())
    example.cli(*example.start_argv()[1:])
    old_pid = example.running_pid()
    backup = take_backup(service_config, reason="manual", clock=lambda: T0).path
    backed_up = {table: rows(backup, table) for table in ("players", "game_rooms", "game_room_participants")}
    created = httpx.post(f"{example.base_url}/api/rooms", json={"name": "after", "host_name": "late-host"}, timeout=10)
    assert created.status_code == 201, created.text
    code = created.json()["code"]
    result = rollbackd(tmp_path / "rollbackd.toml", "restore", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["outcome"] == "restored" and report["backup"] == backup.name
    assert report["service_started"] is True
    assert [step["name"] for step in report["steps"]] == [
        "stop service",
        "copy backup beside the database",
        "verify the copy",
        "quarantine old files and swap in the backup",
        "check the restored database",
        "start service",
    ]
    quarantined = [Path(path) for path in report["quarantined"]]
    assert quarantined and all("vbrpg_corrupted_" in path.name for path in quarantined)
    assert quarantined[0].name.endswith(".db")
    # The old database is kept, room included; the restored one is the backup, row for row.
    with closing(sqlite3.connect(f"file:{quarantined[0]}?mode=ro", uri=True)) as connection:
        assert connection.execute("SELECT count(*) FROM game_rooms WHERE code = ?", (code,)).fetchone()[0] == 1
    for table, expected in backed_up.items():
        assert rows(example.database, table) == expected
    new_pid = example.running_pid()
    assert new_pid is not None and new_pid != old_pid
    health = httpx.get(f"{example.base_url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["revision"] == "e6093b7a4c18"
    assert httpx.get(f"{example.base_url}/api/rooms/{code}", timeout=10).status_code == 404
    journal = read_journal(StateDir(tmp_path / "state").service_dir("vbrpg"))
    assert journal is not None and journal.state == "done"


@pytest.fixture
def restorable(tmp_path: Path) -> tuple[ServiceConfig, StateDir, Path]:
    service = make_service(tmp_path, control=marker_control(tmp_path))
    make_database(service.database, players=3)
    backup = take_backup(service, reason="manual", clock=lambda: T0).path
    add_players(service.database, "late-1", "late-2")
    state_dir = StateDir(tmp_path / "state")
    return service, state_dir, backup


def newest(service: ServiceConfig):  # type: ignore[no-untyped-def]
    entry = list_backups(service.backups.dir, service.database.stem).newest_verified()
    assert entry is not None
    return entry


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path: Path, restorable: tuple) -> None:  # type: ignore[type-arg]
    service, state_dir, backup = restorable
    before = service.database.read_bytes()
    report = restore_backup(
        service, newest(service), control=ServiceControl(service), state_dir=state_dir, dry_run=True
    )
    assert report.outcome == "planned"
    assert any("stop the service" in line for line in report.plan)
    assert any("vbrpg_corrupted_" in line for line in report.plan)
    assert service.database.read_bytes() == before
    assert control_log(tmp_path) == []
    assert read_journal(state_dir.service_dir("vbrpg")) is None


def test_control_none_is_refused_unless_the_service_was_stopped_by_hand(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    make_database(service.database, players=3)
    take_backup(service, reason="manual")
    add_players(service.database, "late")
    state_dir = StateDir(tmp_path / "state")
    with pytest.raises(RestoreError, match="--service-stopped") as caught:
        restore_backup(service, newest(service), control=ServiceControl(service), state_dir=state_dir)
    assert not caught.value.touched
    assert len(rows(service.database)) == 4
    report = restore_backup(
        service, newest(service), control=ServiceControl(service), state_dir=state_dir, service_stopped=True
    )
    assert report.outcome == "restored" and not report.service_started
    assert "start it yourself" in report.message
    assert len(rows(service.database)) == 3


def test_restore_keeps_the_wal_with_the_old_database(tmp_path: Path, restorable: tuple) -> None:  # type: ignore[type-arg]
    service, state_dir, backup = restorable
    wal = Path(f"{service.database}-wal")
    wal.write_bytes(b"frames of the old database")  # as a crashed service leaves it
    report = restore_backup(service, newest(service), control=ServiceControl(service), state_dir=state_dir)
    assert control_log(tmp_path) == ["stop", "start"]
    names = sorted(Path(path).name for path in report.quarantined)
    assert names == ["vbrpg_corrupted_" + names[0].split("_corrupted_")[1].split(".")[0] + suffix for suffix in (
        ".db", ".db-wal")]  # fmt: skip
    assert Path(report.quarantined[1]).read_bytes() == b"frames of the old database"
    assert not wal.exists() or wal.read_bytes() != b"frames of the old database"
    assert [row[1] for row in rows(service.database)] == ["player-1", "player-2", "player-3"]


def test_a_pending_restore_blocks_a_new_one(tmp_path: Path, restorable: tuple) -> None:  # type: ignore[type-arg]
    service, state_dir, backup = restorable
    journal = journal_for(service, backup, state="copying")
    write_journal(state_dir.service_dir("vbrpg"), journal)
    with pytest.raises(RestoreError, match="--resume"):
        restore_backup(service, newest(service), control=ServiceControl(service), state_dir=state_dir)
    assert pending_restore(service, state_dir) == journal


def journal_for(service: ServiceConfig, backup: Path, *, state: str, moves: tuple[Move, ...] = ()) -> RestoreJournal:
    manifest = json.loads(manifest_path(backup).read_text())
    return RestoreJournal(
        service="vbrpg", state=state, backup=backup.name, backup_path=str(backup), backup_sha256=manifest["sha256"],
        database=str(service.database), temp=str(service.database.with_name(".vbrpg.db.restore.partial")),
        moves=moves, journal_mode="wal", expected_revision=manifest["revision"],
        expected_counts=manifest["row_counts"], reason="manual", started_at=T0, control_kind="command",
        service_stopped_by_caller=False,
    )  # fmt: skip


def test_resume_undoes_a_restore_killed_while_copying(tmp_path: Path, restorable: tuple) -> None:  # type: ignore[type-arg]
    service, state_dir, backup = restorable
    before = service.database.read_bytes()
    journal = journal_for(service, backup, state="copying")
    Path(journal.temp).write_bytes(backup.read_bytes()[:5000])  # half a copy
    write_journal(state_dir.service_dir("vbrpg"), journal)
    report = resume_interrupted_restore(service, control=ServiceControl(service), state_dir=state_dir)
    assert report is not None and report.outcome == "undone"
    assert service.database.read_bytes() == before
    assert not Path(journal.temp).exists()
    assert control_log(tmp_path) == ["start"]  # it had been stopped: started again
    assert resume_interrupted_restore(service, control=ServiceControl(service), state_dir=state_dir) is None


def test_resume_finishes_a_restore_killed_between_the_quarantine_and_the_swap(
    tmp_path: Path,
    restorable: tuple,  # type: ignore[type-arg]
) -> None:
    service, state_dir, backup = restorable
    db = service.database
    old_rows = rows(db)
    wal = Path(f"{db}-wal")
    wal.write_bytes(b"old frames")
    temp = db.with_name(".vbrpg.db.restore.partial")
    temp.write_bytes(backup.read_bytes())
    with closing(sqlite3.connect(temp)) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
    moves = (
        Move(str(db), str(db.with_name("vbrpg_corrupted_20250104_141320.db"))),
        Move(str(wal), str(db.with_name("vbrpg_corrupted_20250104_141320.db-wal"))),
    )
    journal = journal_for(service, backup, state="swapping", moves=moves)
    write_journal(state_dir.service_dir("vbrpg"), journal)
    os.link(db, moves[0].target)  # the database linked aside, the WAL renamed aside, then the kill
    os.rename(wal, moves[1].target)
    report = resume_interrupted_restore(service, control=ServiceControl(service), state_dir=state_dir)
    assert report is not None and report.outcome == "restored"
    assert rows(db) == rows(backup)
    assert Path(moves[1].target).read_bytes() == b"old frames"
    os.unlink(moves[1].target)  # (not a real WAL: read the quarantined database without it)
    assert rows(Path(moves[0].target)) == old_rows
    assert not temp.exists()
    assert control_log(tmp_path) == ["start"]


def test_a_restored_file_that_fails_its_check_is_undone_and_the_old_database_comes_back(
    tmp_path: Path,
    restorable: tuple,  # type: ignore[type-arg]
) -> None:
    service, state_dir, backup = restorable
    old_rows = rows(service.database)
    files_before = data_files(service.database.parent)
    data = json.loads(manifest_path(backup).read_text())
    data["row_counts"]["players"] = 99  # the bytes still match their sha256; what was recorded about them does not
    manifest_path(backup).write_text(json.dumps(data))
    with pytest.raises(RestoreError, match="row counts") as caught:
        restore_backup(service, newest(service), control=ServiceControl(service), state_dir=state_dir)
    assert caught.value.reason == "verify_failed" and caught.value.touched
    assert rows(service.database) == old_rows
    assert data_files(service.database.parent) == files_before  # no quarantine copy, no temp left behind
    assert control_log(tmp_path) == ["stop", "start"]  # the service runs again, on its old database
    journal = read_journal(state_dir.service_dir("vbrpg"))
    assert journal is not None and journal.state == "undone"
