"""Rotation keeps exactly what the policy says, never the last verified backup, and never touches unverified ones."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rollbackd.backup.catalog import BackupEntry, backup_name, list_backups
from rollbackd.backup.manifest import BackupManifest, manifest_path
from rollbackd.backup.rotation import RetentionPolicy, plan_rotation, prune_backups
from rollbackd.backup.snapshot import take_backup
from rollbackd.metrics import Metrics

from .helpers import make_database, make_service

DEFAULTS = RetentionPolicy(keep_last=24, keep_hourly=0, keep_daily=7, keep_weekly=4, deploy_window=900)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def entry(moment: float, *, revision: str = "r1", reason: str = "scheduled", verified: bool = True) -> BackupEntry:
    name = backup_name("vbrpg", moment)
    manifest = BackupManifest(
        name=name, source="/data/vbrpg.db", reason=reason, created_at=moment, duration_seconds=0.1,
        method="test", check="quick_check", rollbackd_version="0", revision=revision, row_counts={}, indexes=(),
        schema_fingerprint="", size_bytes=1, mtime_ns=0, sha256="", page_count=1, page_size=1, journal_mode="wal",
    )  # fmt: skip
    if not verified:
        return BackupEntry(name, Path(name), moment, 1, None, "unverified", "no manifest")
    return BackupEntry(name, Path(name), moment, 1, manifest, "verified")


def stamps(names: list[str]) -> set[str]:
    """vbrpg_backup_20250315_120000.db -> 2025-03-15 12:00"""
    result = set()
    for name in names:
        moment = datetime.strptime(name[len("vbrpg_backup_") : len("vbrpg_backup_") + 15], "%Y%m%d_%H%M%S")
        result.add(moment.strftime("%Y-%m-%d %H:%M"))
    return result


def hours(start: str, end: str) -> set[str]:
    moment, last = datetime.fromisoformat(start), datetime.fromisoformat(end)
    found = set()
    while moment <= last:
        found.add(moment.strftime("%Y-%m-%d %H:%M"))
        moment += timedelta(hours=1)
    return found


def test_a_year_of_hourly_backups_keeps_exactly_last_24_daily_7_weekly_4() -> None:
    expected = {
        # Saturday 2025-03-15 12:00, ISO week 11 (Mon 03-10 .. Sun 03-16)
        "2025-03-15 12:00": hours("2025-03-14 13:00", "2025-03-15 12:00")
        | {f"2025-03-{day:02d} 23:00" for day in range(9, 15)}  # daily: 03-09 .. 03-14 (and today's newest)
        | {"2025-03-02 23:00", "2025-02-23 23:00"},  # weekly: W09 and W08 end on Sundays (W10's is 03-09)
        # Wednesday 2025-12-31 23:00 is in ISO week 2026-W01
        "2025-12-31 23:00": hours("2025-12-31 00:00", "2025-12-31 23:00")
        | {f"2025-12-{day:02d} 23:00" for day in range(25, 31)}
        | {"2025-12-21 23:00", "2025-12-14 23:00"},
    }
    on_disk: list[BackupEntry] = []
    unverified = entry(at("2025-02-01T10:30:00"), verified=False)
    moment = at("2025-01-01T00:00:00")
    checked = []
    while moment <= at("2025-12-31T23:00:00"):
        on_disk.append(entry(moment))
        if moment == unverified.created_at - 1800:
            on_disk.append(unverified)
        plan = plan_rotation(on_disk, DEFAULTS, now=moment)
        assert set(plan.unverified) == ({unverified.name} if unverified in on_disk else set())
        removed = set(plan.remove)
        on_disk = [backup for backup in on_disk if backup.name not in removed]
        label = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M")
        if label in expected:
            assert stamps(plan.keep) == expected[label], label
            checked.append(label)
        moment += 3600
    assert checked == list(expected)
    assert unverified in on_disk  # a year later, still there: never deleted automatically, never counted


def test_keep_hourly_keeps_the_newest_of_each_recent_hour() -> None:
    backups = [entry(at("2025-05-05T08:00:00") + minutes * 60) for minutes in range(0, 240, 20)]  # 08:00..11:40
    plan = plan_rotation(backups, RetentionPolicy(keep_last=1, keep_hourly=3), now=at("2025-05-05T12:00:00"))
    assert stamps(plan.keep) == {"2025-05-05 11:40", "2025-05-05 10:40", "2025-05-05 09:40"}


def test_the_newest_verified_backup_is_kept_even_when_no_rule_would() -> None:
    lonely = entry(at("2024-01-01T00:00:00"))
    newer_but_broken = entry(at("2025-06-01T00:00:00"), verified=False)
    plan = plan_rotation([lonely, newer_but_broken], RetentionPolicy(keep_last=1), now=at("2025-06-02T00:00:00"))
    assert plan.keep == [lonely.name]
    assert plan.unverified == [newer_but_broken.name]
    assert plan.remove == []
    reasons = {decision.name: decision.reasons for decision in plan.decisions}
    assert "newest verified backup" in reasons[lonely.name]


def test_the_newest_backup_of_each_reachable_revision_is_kept() -> None:
    old_a = entry(at("2025-01-01T00:00:00"), revision="a")
    newest_a = entry(at("2025-01-02T00:00:00"), revision="a")
    b = entry(at("2025-01-03T00:00:00"), revision="b")
    policy = RetentionPolicy(keep_last=1)
    now = at("2025-02-01T00:00:00")
    assert plan_rotation([old_a, newest_a, b], policy, now=now).keep == [b.name]
    plan = plan_rotation([old_a, newest_a, b], policy, now=now, reachable_revisions={"a", "gone"})
    assert plan.keep == [newest_a.name, b.name]
    assert plan.remove == [old_a.name]


def test_pre_deploy_backups_are_kept_through_the_deploy_window() -> None:
    deploy = entry(at("2025-01-01T12:00:00"), reason="pre-deploy")
    later = [entry(at("2025-01-01T12:01:00") + index * 60) for index in range(3)]
    policy = RetentionPolicy(keep_last=1, deploy_window=900)
    inside = plan_rotation([deploy, *later], policy, now=at("2025-01-01T12:14:59"))
    assert deploy.name in inside.keep
    after = plan_rotation([deploy, *later], policy, now=at("2025-01-01T12:15:01"))
    assert deploy.name in after.remove
    pinned = plan_rotation(
        [deploy, *later], policy, now=at("2025-01-01T12:15:01"), pinned={deploy.name: "recorded pre-deploy"}
    )
    assert deploy.name in pinned.keep


def test_prune_removes_backups_and_their_manifests_and_dry_run_touches_nothing(
    tmp_path: Path, metrics: Metrics
) -> None:
    service = make_service(tmp_path, backups={"keep_last": 2, "keep_daily": 0, "keep_weekly": 0})
    make_database(service.database)
    start = at("2025-01-01T00:00:00")
    paths = [take_backup(service, reason="scheduled", clock=lambda t=t: start + t * 3600).path for t in range(5)]
    orphan = service.backups.dir / "vbrpg_backup_20240101_000000.db.json"
    orphan.write_text("{}")
    bare = service.backups.dir / "vbrpg_backup_20240102_000000.db"
    bare.write_bytes(b"copied in by hand")
    before = sorted(os.listdir(service.backups.dir))
    dry = prune_backups(service, now=start + 5 * 3600, dry_run=True, metrics=metrics)
    assert dry.removed == tuple(path.name for path in paths[:3])
    assert sorted(os.listdir(service.backups.dir)) == before
    result = prune_backups(service, now=start + 5 * 3600, metrics=metrics)
    assert result.removed == dry.removed
    assert result.orphan_manifests_removed == (orphan.name,)
    for path in paths[:3]:
        assert not path.exists() and not manifest_path(path).exists()
    listing = list_backups(service.backups.dir, "vbrpg")
    assert [backup.name for backup in listing.verified] == [path.name for path in paths[3:]]
    assert bare.exists()  # unverified: reported, never deleted automatically
    assert metrics.registry.get_sample_value("rollbackd_backups_pruned_total", {"service": "vbrpg"}) == 3
