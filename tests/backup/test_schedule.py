"""The daemon's backup loop: start-up backup, interval backups with rotation, pre-deploy backups, fallbacks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rollbackd.backup.catalog import list_backups
from rollbackd.backup.pre_deploy import read_pre_deploy
from rollbackd.backup.schedule import BackupScheduler
from rollbackd.backup.snapshot import take_backup
from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.state.service_lock import ServiceLock
from rollbackd.state.state_dir import StateDir
from rollbackd.target.watch import DeployEvent

from .helpers import REVISION, make_database, make_service, rollbackd


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def with_scheduler(scheduler: BackupScheduler, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(scheduler.run())
        try:
            await scenario()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


def reasons(service: ServiceConfig) -> list[str | None]:
    return [entry.reason for entry in list_backups(service.backups.dir, "vbrpg").backups]


def test_a_fresh_daemon_backs_up_at_once_and_drills_it(tmp_path: Path, state_dir: StateDir, metrics: Metrics) -> None:
    service = make_service(tmp_path, backups={"every": "1h"})
    make_database(service.database)
    scheduler = BackupScheduler(service, state_dir=state_dir, metrics=metrics)

    async def scenario() -> None:
        await until(lambda: scheduler.last_drill is not None)

    with_scheduler(scheduler, scenario)
    assert reasons(service) == ["startup"]
    assert scheduler.last_drill is not None and scheduler.last_drill.ok
    assert metrics.registry.get_sample_value("rollbackd_backups", {"service": "vbrpg"}) == 1


def test_interval_backups_are_rotated(tmp_path: Path, state_dir: StateDir, metrics: Metrics) -> None:
    service = make_service(
        tmp_path, backups={"every": "1s", "keep_last": 2, "keep_daily": 0, "keep_weekly": 0, "drill_every": "0s"}
    )
    make_database(service.database)
    scheduler = BackupScheduler(service, state_dir=state_dir, metrics=metrics)

    def pruned() -> float:
        return metrics.registry.get_sample_value("rollbackd_backups_pruned_total", {"service": "vbrpg"}) or 0

    async def scenario() -> None:
        await until(lambda: pruned() >= 2)

    with_scheduler(scheduler, scenario)
    on_disk = reasons(service)
    assert "scheduled" in on_disk and len(on_disk) == 2
    assert scheduler.last_drill is None  # drill_every = 0 disables drills


def test_a_deploy_event_takes_a_pre_deploy_backup_and_records_it(tmp_path: Path, state_dir: StateDir) -> None:
    service = make_service(tmp_path, backups={"every": "1h", "drill_every": "0s"})
    make_database(service.database)
    take_backup(service, reason="scheduled")  # fresh: no start-up backup needed
    scheduler = BackupScheduler(service, state_dir=state_dir)
    event = DeployEvent("vbrpg", "migration", (str(tmp_path / "app/alembic/versions/abc_new.py"),), time.time())

    async def scenario() -> None:
        await until(lambda: scheduler.known_revision is not None)  # loaded: the loop is waiting
        scheduler.on_deploy_event(event)
        await until(lambda: "pre-deploy" in reasons(service))

    with_scheduler(scheduler, scenario)
    assert reasons(service) == ["scheduled", "pre-deploy"]
    record = read_pre_deploy(state_dir.service_dir("vbrpg"))
    assert record is not None and record.source == "watcher" and record.from_revision == REVISION
    assert record.pre_deploy_backup == list_backups(service.backups.dir, "vbrpg").backups[-1].name


def test_revision_change_without_pre_deploy_backup_records_a_fallback(tmp_path: Path, state_dir: StateDir) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    first = take_backup(service, reason="scheduled", clock=lambda: time.time() - 7200).path
    take_backup(service, reason="scheduled", clock=lambda: time.time() - 3600)
    scheduler = BackupScheduler(service, state_dir=state_dir)
    record = asyncio.run(scheduler.on_revision_change(REVISION, "ffff0000"))
    assert record is not None and record.source == "fallback" and record.from_revision == REVISION
    assert record.pre_deploy_backup != first.name  # the newest before the change
    written = read_pre_deploy(state_dir.service_dir("vbrpg"))
    assert written is not None and written.pre_deploy_backup == record.pre_deploy_backup
    assert written.source == "fallback" and written.to_revision == "ffff0000"


def test_revision_change_after_a_pre_deploy_backup_keeps_it(tmp_path: Path, state_dir: StateDir) -> None:
    config = tmp_path / "rollbackd.toml"
    service = make_service(tmp_path)
    make_database(service.database)
    assert rollbackd(config, "backup", "--reason", "pre-deploy").returncode == 0
    hook = read_pre_deploy(state_dir.service_dir("vbrpg"))
    assert hook is not None and hook.source == "cli"
    scheduler = BackupScheduler(service, state_dir=state_dir)
    assert asyncio.run(scheduler.on_revision_change(REVISION, "ffff0000")) is None
    assert read_pre_deploy(state_dir.service_dir("vbrpg")) == hook


def test_a_backup_is_postponed_while_another_actor_holds_the_service(tmp_path: Path, state_dir: StateDir) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    scheduler = BackupScheduler(service, state_dir=state_dir)
    with ServiceLock(state_dir.root, "vbrpg", "restore"):
        assert asyncio.run(scheduler.backup_now("scheduled")) is None
    assert reasons(service) == []
    assert asyncio.run(scheduler.backup_now("scheduled")) is not None


def test_a_backup_still_copying_when_the_daemon_stops_gives_up_and_leaves_nothing(
    tmp_path: Path, state_dir: StateDir, metrics: Metrics
) -> None:
    service = make_service(tmp_path)
    make_database(service.database, players=2000)
    scheduler = BackupScheduler(service, state_dir=state_dir, metrics=metrics)
    scheduler.abandon_after(0)  # the stop's wait is already over: the copy gives up after its first step
    assert asyncio.run(scheduler.backup_now("pre-deploy")) is None
    assert reasons(service) == [] and list(service.backups.dir.iterdir()) == []  # no backup, no temp, no manifest
    assert scheduler.last_error is None  # not a failure to alert on
    failures = metrics.registry.get_sample_value(
        "rollbackd_backup_failures_total", {"service": "vbrpg", "reason": "stopping"}
    )
    assert failures is None
    scheduler.abandon_after(3600)  # a stop that waits long enough lets it finish
    assert asyncio.run(scheduler.backup_now("pre-deploy")) is not None
    assert reasons(service) == ["pre-deploy"]
