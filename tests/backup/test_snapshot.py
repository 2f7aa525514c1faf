"""Taking a verified backup of a live database: consistent under a writer, verified, named, 0600, never partial."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from rollbackd.backup.catalog import backup_pattern, list_backups
from rollbackd.backup.manifest import read_manifest
from rollbackd.backup.snapshot import BackupError, remove_stale_partials, snapshot_database, take_backup
from rollbackd.metrics import Metrics
from rollbackd.target import database
from tests.support.tmpfs import mounted_tmpfs

from .helpers import REVISION, TABLES, Writer, grow_database, make_database, make_service, rows

FIXED_NOW = 1_736_000_000.0  # 2025-01-04 14:13:20 UTC


def backup_files(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder)) if folder.exists() else []


def assert_contiguous_players(path: Path) -> int:
    """The copy holds exactly players 1..N: one snapshot boundary of single-row transactions, no gap."""
    ids = [row[0] for row in rows(path)]
    assert ids == list(range(1, len(ids) + 1))
    return len(ids)


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_backup_while_a_writer_inserts_is_consistent_and_the_writer_never_fails(
    tmp_path: Path, journal_mode: str
) -> None:
    service = make_service(tmp_path)
    make_database(service.database, journal_mode=journal_mode, players=0, rooms=0)
    grow_database(service.database, 4)  # big enough that a copy spans many steps and many writer commits
    writer = Writer(service.database, interval=0.0005)
    try:
        writer.wait_for_rows(200)
        results = [take_backup(service, reason="manual") for _ in range(3)]
        before_stop = writer.process.poll()
    finally:
        report = writer.stop()
    assert before_stop is None
    assert report["errors"] == []
    counts = []
    for result in results:
        with closing(sqlite3.connect(f"file:{result.path}?mode=ro", uri=True)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        counts.append(assert_contiguous_players(result.path))
        assert result.manifest.row_counts["players"] == counts[-1]
        assert result.manifest.journal_mode == journal_mode
    assert counts == sorted(counts) and counts[-1] > 200
    assert counts[-1] < report["last_id"]  # the writer went on after the last backup


def test_backup_is_named_by_utc_time_mode_0600_and_described_by_its_manifest(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    make_database(service.database, players=7)
    result = take_backup(service, reason="manual", clock=lambda: FIXED_NOW)
    assert result.path.name == "vbrpg_backup_20250104_141320.db"
    assert result.path.parent == tmp_path / "app" / "data" / "backups"
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    manifest_file = result.path.with_name(result.path.name + ".json")
    assert stat.S_IMODE(manifest_file.stat().st_mode) == 0o600
    manifest = read_manifest(result.path)
    assert manifest == result.manifest
    assert manifest.revision == REVISION
    assert manifest.row_counts == {"game_rooms": 2, "players": 7, "game_room_participants": 7}
    assert set(manifest.indexes) == {"ix_game_room_participants_room_id", "ix_game_room_participants_player_id_room_id"}
    with closing(database.connect_readonly(service.database)) as source:
        assert manifest.schema_fingerprint == database.schema_fingerprint(source)
    assert manifest.size_bytes == result.path.stat().st_size
    assert manifest.page_count * manifest.page_size == manifest.size_bytes
    assert manifest.reason == "manual" and manifest.check == "quick_check"
    assert manifest.source == str(service.database)
    assert manifest.journal_mode == "wal"
    assert manifest.created_at == FIXED_NOW
    # The copy is in rollback-journal mode, so reading it never leaves -wal/-shm in the backup dir.
    with closing(sqlite3.connect(result.path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert backup_files(result.path.parent) == [result.path.name, manifest_file.name]


def test_two_backups_in_one_second_get_a_suffix(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    names = [take_backup(service, reason="scheduled", clock=lambda: FIXED_NOW).path.name for _ in range(3)]
    assert names == [
        "vbrpg_backup_20250104_141320.db",
        "vbrpg_backup_20250104_141320_1.db",
        "vbrpg_backup_20250104_141320_2.db",
    ]
    assert all(entry.verified for entry in list_backups(service.backups.dir, "vbrpg").backups)


def test_missing_database_is_reported_and_nothing_is_written(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    with pytest.raises(BackupError, match="does not exist") as caught:
        take_backup(service, reason="manual")
    assert caught.value.reason == "source_unavailable"
    assert backup_files(service.backups.dir) == []
    assert not service.database.exists()


def test_unwritable_backup_dir_is_reported(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    service.backups.dir.parent.mkdir(parents=True, exist_ok=True)
    service.backups.dir.write_text("a file where the backup dir should be")  # root ignores mode bits
    with pytest.raises(BackupError, match="backup dir") as caught:
        take_backup(service, reason="manual")
    assert caught.value.reason == "dir_unwritable"


def test_a_copy_that_fails_its_check_leaves_no_file(tmp_path: Path, metrics: Metrics) -> None:
    service = make_service(tmp_path)
    make_database(service.database, journal_mode="delete", players=400)
    with closing(sqlite3.connect(service.database)) as connection:
        root_page = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'players'").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    with service.database.open("r+b") as handle:  # test process: no SQLite connection of ours is open on it
        handle.seek((root_page - 1) * page_size + 8)
        handle.write(b"\xff" * 64)
    with pytest.raises(BackupError) as caught:
        take_backup(service, reason="manual", metrics=metrics)
    assert caught.value.reason in ("verify_failed", "source_corrupt")
    assert backup_files(service.backups.dir) == []
    failures = metrics.registry.get_sample_value(
        "rollbackd_backup_failures_total", {"service": "vbrpg", "reason": caught.value.reason}
    )
    assert failures == 1


def test_free_space_guard_refuses_up_front(tmp_path: Path, metrics: Metrics) -> None:
    service = make_service(tmp_path, backups={"min_free_bytes": 1 << 60})
    make_database(service.database)
    with pytest.raises(BackupError, match="not enough free space") as caught:
        take_backup(service, reason="scheduled", metrics=metrics)
    assert caught.value.reason == "low_space"
    assert backup_files(service.backups.dir) == []
    ratio = make_service(tmp_path, backups={"min_free_ratio": 0.9999})
    with pytest.raises(BackupError, match="min_free_ratio"):
        take_backup(ratio, reason="scheduled")


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small", "size=2m", "the disk-full path is untested") as mount_point:
        yield mount_point


@pytest.mark.root
def test_disk_filling_mid_copy_is_reported_and_leaves_no_partial_file(
    tmp_path: Path, small_tmpfs: Path, metrics: Metrics
) -> None:
    backup_dir = small_tmpfs / "backups"
    service = make_service(tmp_path, backups={"dir": str(backup_dir)})
    make_database(service.database)
    grow_database(service.database, 1)  # about 1.1 MiB: the guard lets it start in 2 MiB
    filler = small_tmpfs / "filler"

    def fill_the_disk(done: int, total: int) -> None:
        # Something else fills the disk while the copy runs (the guard can only look before).
        if not filler.exists():
            with contextlib.suppress(OSError), filler.open("wb") as handle:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()

    with pytest.raises(BackupError, match="full") as caught:
        snapshot_database(service.database, backup_dir, tables=TABLES, reason="scheduled", progress=fill_the_disk)
    assert caught.value.reason == "disk_full"
    assert backup_files(backup_dir) == []
    filler.unlink()
    assert take_backup(service, reason="scheduled").manifest.reason == "scheduled"  # with room again, it works
    # With a guard configured, a database that would not leave the floor free is refused before a byte is written.
    grow_database(service.database, 1)
    guarded = make_service(tmp_path, backups={"dir": str(backup_dir), "min_free_bytes": 512 * 1024})
    before = backup_files(backup_dir)
    with pytest.raises(BackupError) as refused:
        take_backup(guarded, reason="scheduled", metrics=metrics)
    assert refused.value.reason == "low_space"
    assert backup_files(backup_dir) == before
    assert (
        metrics.registry.get_sample_value(
            "rollbackd_backup_failures_total", {"service": "vbrpg", "reason": "low_space"}
        )
        == 1
    )


def test_stale_temp_files_of_dead_backups_are_removed_live_ones_kept(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    backup_dir = service.backups.dir
    backup_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = backup_dir / f".vbrpg_backup_20250101_000000.db.{dead.pid}.partial"
    stale_wal = backup_dir / f".vbrpg_backup_20250101_000000.db.{dead.pid}.partial-wal"
    live = backup_dir / f".vbrpg_backup_20250101_000000.db.{os.getppid()}.partial"
    for path in (stale, stale_wal, live):
        path.write_bytes(b"half a copy")
    listing = list_backups(backup_dir, "vbrpg")
    assert listing.backups == () and set(listing.partials) == {stale, stale_wal, live}
    assert not any(backup_pattern("vbrpg").match(path.name) for path in listing.partials)
    assert set(remove_stale_partials(backup_dir, "vbrpg")) == {stale, stale_wal}
    assert live.exists()


def test_progress_is_reported_up_to_the_total(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    grow_database(service.database, 2)
    seen: list[tuple[int, int]] = []
    snapshot_database(
        service.database, service.backups.dir, tables=TABLES, reason="manual", progress=lambda d, t: seen.append((d, t))
    )
    assert len(seen) >= 2
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1][0] == seen[-1][1]


def test_metrics_after_a_backup(tmp_path: Path, metrics: Metrics) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    result = take_backup(service, reason="manual", metrics=metrics, clock=lambda: FIXED_NOW)
    labels = {"service": "vbrpg"}
    assert metrics.registry.get_sample_value("rollbackd_backup_size_bytes", labels) == result.manifest.size_bytes
    assert metrics.registry.get_sample_value("rollbackd_backup_last_success_timestamp_seconds", labels) >= FIXED_NOW
    assert metrics.registry.get_sample_value("rollbackd_backup_duration_seconds_count", labels) == 1


@pytest.mark.root
def test_a_backup_dir_on_a_read_only_mount_is_reported_as_outside_read_write_paths(tmp_path: Path) -> None:
    # What ProtectSystem=strict makes of every path no ReadWritePaths= names: a read-only mount, whatever the
    # owner and mode (tests/systemd proves the same line under the real unit).
    with mounted_tmpfs(tmp_path / "read-only", "ro,size=1m", "the read-only path is untested") as mount_point:
        make_database(make_service(tmp_path).database)
        for backup_dir, expected in (
            (mount_point, f"backup dir {mount_point} is on a read-only file system here: under systemd, add it"),
            (mount_point / "backups", f"cannot create backup dir {mount_point / 'backups'} on a read-only file"),
        ):
            service = make_service(tmp_path, backups={"dir": str(backup_dir)})
            with pytest.raises(BackupError) as caught:
                take_backup(service, reason="scheduled")
            assert caught.value.reason == "dir_unwritable"
            assert str(caught.value).startswith(expected), caught.value
            assert "ReadWritePaths= in a drop-in of rollbackd.service" in str(caught.value)
