"""Which backups are verified, and choosing one: only verified backups inside the backup dir are ever chosen."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from rollbackd.backup.catalog import (
    BackupRefused,
    NoBackup,
    choose_backup,
    list_backups,
    parse_moment,
    resolve_backup_name,
    verify_backup,
)
from rollbackd.backup.manifest import manifest_path
from rollbackd.backup.snapshot import take_backup
from rollbackd.config.model import ServiceConfig

from .helpers import make_database, make_service

T0 = 1_736_000_000.0  # 2025-01-04 14:13:20 UTC


@pytest.fixture
def service(tmp_path: Path) -> ServiceConfig:
    service = make_service(tmp_path)
    make_database(service.database)
    return service


def take_three(service: ServiceConfig) -> list[Path]:
    return [take_backup(service, reason="scheduled", clock=lambda t=t: T0 + t).path for t in (0, 3600, 7200)]


def flip_a_byte_keeping_size_and_mtime(path: Path) -> None:
    """Silent corruption (bit rot, a bad disk): the bytes change, size and mtime do not."""
    info = path.stat()
    with path.open("r+b") as handle:
        handle.seek(info.st_size // 2)
        byte = handle.read(1)
        handle.seek(info.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_listing_reports_each_kind_of_unverified_backup(service: ServiceConfig) -> None:
    first, second, third = take_three(service)
    backup_dir = service.backups.dir
    bare = backup_dir / "vbrpg_backup_20250101_000000.db"
    bare.write_bytes(first.read_bytes())  # copied in by hand: no manifest
    manifest_path(second).write_text("{not json")
    with third.open("ab") as handle:
        handle.write(b"appended")
    foreign = backup_dir / "manual_backup_20250101_000000.db"  # the runbook's manual name: not ours, not listed
    foreign.write_bytes(b"x")
    listing = list_backups(backup_dir, "vbrpg")
    problems = {entry.name: entry.problem for entry in listing.backups}
    assert set(problems) == {first.name, second.name, third.name, bare.name}
    assert problems[first.name] == ""
    assert "no manifest" in problems[bare.name]
    assert "unreadable manifest" in problems[second.name]
    assert "size" in problems[third.name]
    assert [entry.name for entry in listing.verified] == [first.name]
    assert [entry.name for entry in listing.backups] == [bare.name, first.name, second.name, third.name]


def test_sha256_is_checked_on_demand_and_a_touch_is_forgiven_by_verify(service: ServiceConfig) -> None:
    good, rotten, touched = take_three(service)
    flip_a_byte_keeping_size_and_mtime(rotten)
    os.utime(touched, (T0, T0))
    cheap = {entry.name: entry for entry in list_backups(service.backups.dir, "vbrpg").backups}
    assert cheap[rotten.name].verified  # the cheap listing cannot see bit rot...
    assert "modified" in cheap[touched.name].problem
    full = {entry.name: entry for entry in list_backups(service.backups.dir, "vbrpg", verify=True).backups}
    assert "sha256" in full[rotten.name].problem  # ...the sha256 check does
    assert full[touched.name].verified and full[good.name].verified
    rechecked = verify_backup(cheap[touched.name])
    assert rechecked.verified
    assert list_backups(service.backups.dir, "vbrpg").backups[2].verified  # mtime recorded: trusted again


def test_a_failed_drill_makes_a_backup_unverified(service: ServiceConfig) -> None:
    path = take_three(service)[-1]
    data = json.loads(manifest_path(path).read_text())
    data["drill"] = {"at": "2025-01-04T20:00:00+00:00", "ok": False, "detail": "integrity_check: page 3 broken"}
    manifest_path(path).write_text(json.dumps(data))
    entry = list_backups(service.backups.dir, "vbrpg").backups[-1]
    assert not entry.verified and "failed its restore drill" in entry.problem


def test_choose_newest_before_and_by_revision(service: ServiceConfig) -> None:
    first, second, third = take_three(service)
    listing = list_backups(service.backups.dir, "vbrpg")
    assert choose_backup(listing).name == third.name
    assert choose_backup(listing, before=T0 + 3600).name == first.name
    assert choose_backup(listing, before=parse_moment("20250104_151321")).name == second.name
    assert choose_backup(listing, revision="e6093b7a4c18").name == third.name
    assert choose_backup(listing, name=second.name).name == second.name
    with pytest.raises(NoBackup, match="before"):
        choose_backup(listing, before=T0)
    with pytest.raises(NoBackup, match="revision"):
        choose_backup(listing, revision="0000dead")


def test_unverified_backups_are_never_chosen(service: ServiceConfig) -> None:
    first, second, third = take_three(service)
    manifest_path(third).unlink()
    listing = list_backups(service.backups.dir, "vbrpg")
    assert choose_backup(listing).name == second.name  # the newest *verified* one
    with pytest.raises(BackupRefused, match="unverified"):
        choose_backup(listing, name=third.name)


def test_parse_moment_accepts_the_backup_stamp_and_iso() -> None:
    assert parse_moment("20250104_141320") == T0
    assert parse_moment("2025-01-04T14:13:20") == T0
    assert parse_moment("2025-01-04T15:13:20+01:00") == T0
    with pytest.raises(ValueError, match="YYYYMMDD_HHMMSS"):
        parse_moment("yesterday")


def test_names_with_paths_and_symlinks_out_of_the_dir_are_refused(service: ServiceConfig, tmp_path: Path) -> None:
    (good,) = take_three(service)[:1]
    backup_dir = service.backups.dir
    for name in ("../../etc/passwd", "/etc/passwd", "sub/vbrpg_backup_20250101_000000.db", "..", ""):
        with pytest.raises(BackupRefused, match="without any path"):
            resolve_backup_name(backup_dir, name, "vbrpg")
    outside = tmp_path / "elsewhere.db"
    outside.write_bytes(good.read_bytes())
    (backup_dir / "vbrpg_backup_20250102_000000.db").symlink_to(outside)
    with pytest.raises(BackupRefused, match="leads out of"):
        resolve_backup_name(backup_dir, "vbrpg_backup_20250102_000000.db", "vbrpg")
    (backup_dir / "passwd-link.db").symlink_to("/etc/passwd")
    with pytest.raises(BackupRefused, match="leads out of"):
        resolve_backup_name(backup_dir, "passwd-link.db", "vbrpg")
    with pytest.raises(BackupRefused, match="not a backup name"):
        resolve_backup_name(backup_dir, "notes.txt", "vbrpg")
    assert resolve_backup_name(backup_dir, good.name, "vbrpg") == good


def test_junk_with_a_forged_manifest_matching_its_sha256_is_not_verified(service: ServiceConfig) -> None:
    path = take_three(service)[-1]
    path.write_bytes(b"not a database at all, ".ljust(path.stat().st_size, b"x"))
    data = json.loads(manifest_path(path).read_text())
    data["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    data["mtime_ns"] = path.stat().st_mtime_ns
    manifest_path(path).write_text(json.dumps(data))
    assert list_backups(service.backups.dir, "vbrpg").backups[-1].verified  # size, mtime: all the cheap check has
    [forged] = [
        entry for entry in list_backups(service.backups.dir, "vbrpg", verify=True).backups if entry.path == path
    ]
    assert not forged.verified
    assert "SQLite cannot read it: file is not a database" in forged.problem
    assert not verify_backup(forged).verified
    assert [entry.verified for entry in list_backups(service.backups.dir, "vbrpg", verify=True).backups[:2]] == [
        True,
        True,
    ]


def test_a_name_ending_in_a_newline_is_not_a_backup(service: ServiceConfig) -> None:
    path = take_three(service)[-1]
    odd = path.with_name(path.name + "\n")
    shutil.copy2(path, odd)
    shutil.copy2(manifest_path(path), manifest_path(odd))
    names = [entry.name for entry in list_backups(service.backups.dir, "vbrpg", verify=True).backups]
    assert odd.name not in names and path.name in names
    with pytest.raises(BackupRefused, match="not a backup name"):
        resolve_backup_name(service.backups.dir, odd.name, "vbrpg")
