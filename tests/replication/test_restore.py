"""Point-in-time restores from a real Litestream file replica, through the executor the daemon uses: verified in
scratch first, swapped in the runbook's way with replication paused, and replication going on from the restored
file (a second restore holds what was written after the first)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rollbackd.backup.catalog import list_backups
from rollbackd.backup.snapshot import take_backup
from rollbackd.config.model import ServiceConfig
from rollbackd.policy.conditions import DeployWindow, Reading
from rollbackd.policy.engine import ActionContext, ActionOutcome, Decision
from rollbackd.policy.rules import Rule, Rung
from rollbackd.replication.restore import ReplicaRestoreError, fetch_point
from rollbackd.state.history import History
from rollbackd.state.state_dir import StateDir
from tests.backup.helpers import REVISION, grow_database, make_database, make_service
from tests.backup.test_restore import add_players, control_log, marker_control
from tests.support.executor import executor_for
from tests.support.tmpfs import mounted_tmpfs

from .litestream_child import LitestreamChild, players


def replicated_service(tmp_path: Path, **extra: str) -> ServiceConfig:
    settings = ", ".join(f'{key} = "{value}"' for key, value in {"sync_interval": "200ms", **extra}.items())
    replication = f'replication = {{ {settings}, replicas = [{{ type = "file", path = "{tmp_path / "offsite"}" }}] }}'
    return make_service(tmp_path, control=marker_control(tmp_path), extra=replication)


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[ServiceConfig, StateDir, LitestreamChild]]:
    service = replicated_service(tmp_path)
    make_database(service.database, players=3)
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    child = LitestreamChild(service, state_dir, tmp_path / "litestream.log")
    child.start()
    try:
        yield service, state_dir, child
    finally:
        child.stop()


def run_rung(
    service: ServiceConfig,
    state_dir: StateDir,
    child: LitestreamChild,
    rung: Rung,
    deploy: DeployWindow | None = None,
) -> ActionOutcome:
    history = History(state_dir.history_db)
    history.upgrade()
    try:
        executor = executor_for(service, state_dir, history, replication=child)
        reading = Reading("operator", time.time(), "a test asks for a restore", {"rows_before": {"players": 6}})
        decision = Decision(service.name, Rule("manual", "operator", (rung,), "test", priority=0), reading, deploy)
        return asyncio.run(executor.execute(rung, ActionContext(service.name, None, decision, automatic=False)))
    finally:
        history.close()


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


@pytest.mark.e2e
def test_restore_write_restore_again_holds_the_write(tmp_path: Path, replicated: tuple) -> None:  # type: ignore[type-arg]
    service, state_dir, child = replicated
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    add_players(service.database, "kept")
    child.wait_replicated(scratch, "kept")
    good = time.time()
    add_players(service.database, "after-the-point")
    child.wait_replicated(scratch, "after-the-point")

    first = run_rung(service, state_dir, child, Rung("restore", f"replica:at:{good!r}"))

    assert first.ok, first.summary
    assert first.detail["source"] == "replica" and first.detail["point"].startswith(iso(good)[:19])
    assert players(service.database) == {f"player-{n}" for n in (1, 2, 3)} | {"kept"}
    assert first.detail["rows_lost_estimate"] == {"players": 2}  # 6 before the "fault", 4 at the point
    quarantined = [Path(path) for path in first.detail["restore"]["quarantined"]]
    assert "after-the-point" in players(quarantined[0])  # the replaced file is kept, its last row in it
    backup = list_backups(service.backups.dir, service.database.stem).newest_verified()
    assert backup is not None and backup.name == first.backup_used and backup.reason == "replica"
    assert backup.manifest is not None and backup.manifest.extra["replica_point"].startswith(iso(good)[:19])
    assert control_log(tmp_path) == ["stop", "start"] and child.pauses == 1

    add_players(service.database, "written-after-the-restore")
    child.wait_replicated(scratch, "written-after-the-restore")
    second = run_rung(service, state_dir, child, Rung("restore", "replica:newest"))

    assert second.ok, second.summary
    restored = players(service.database)
    assert {"kept", "written-after-the-restore"} <= restored
    assert "after-the-point" not in restored  # the new lineage: the replaced file's history never came back


def test_a_replica_behind_the_moment_falls_back_to_the_local_backup_and_says_why(
    tmp_path: Path,
    replicated: tuple,  # type: ignore[type-arg]
) -> None:
    service, state_dir, child = replicated
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    add_players(service.database, "replicated")
    child.wait_replicated(scratch, "replicated")
    local = take_backup(service, reason="manual")
    child.stop()  # replication stops: whatever is written now never reaches the replica
    add_players(service.database, "never-replicated")
    later = time.time() + 3600  # a moment the replica cannot have reached (max_lag is 30 s)

    outcome = run_rung(service, state_dir, child, Rung("restore", f"replica:at:{later!r}"))

    assert outcome.ok, outcome.summary
    assert outcome.detail["source"] == "local" and outcome.backup_used == local.manifest.name
    assert outcome.detail["replica_refused"]["reason"] == "behind"
    assert "short of" in outcome.detail["replica_refused"]["message"]


def test_a_moment_before_the_replica_began_is_refused_with_nothing_written(
    tmp_path: Path,
    replicated: tuple,  # type: ignore[type-arg]
) -> None:
    service, state_dir, child = replicated
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    add_players(service.database, "replicated")
    child.wait_replicated(scratch, "replicated")
    before = service.database.read_bytes()

    with pytest.raises(ReplicaRestoreError) as refused:
        fetch_point(service, time.time() - 86400, state_dir=state_dir)

    assert refused.value.reason == "no_point"
    assert os.listdir(service.backups.dir) == []  # no scratch left behind, no backup made
    assert service.database.read_bytes() == before


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small", "size=1m", "the disk-full path is untested") as mount_point:
        yield mount_point


@pytest.mark.root
def test_a_full_scratch_disk_is_a_clear_error_and_nothing_is_swapped(tmp_path: Path, small_tmpfs: Path) -> None:
    replication = f'replication = {{ replicas = [{{ type = "file", path = "{tmp_path / "offsite"}" }}] }}'
    service = make_service(
        tmp_path, control=marker_control(tmp_path), extra=replication, backups={"dir": str(small_tmpfs / "b")}
    )
    make_database(service.database, players=3)
    grow_database(service.database, 2)  # 2 MiB: more than the 1 MiB the backup dir has
    state_dir = StateDir(tmp_path / "state")
    child = LitestreamChild(service, state_dir, tmp_path / "litestream.log")
    child.start()
    try:
        add_players(service.database, "last")
        child.wait_replicated(tmp_path, "last")
    finally:
        child.stop()
    before = service.database.read_bytes()

    # The guard refuses before writing a byte when the database's size is known ...
    with pytest.raises(ReplicaRestoreError) as guarded:
        fetch_point(service, None, state_dir=state_dir)
    assert guarded.value.reason == "no_space" and "nothing was swapped" in str(guarded.value)
    # ... and when it is not (the database is gone), the disk filling up mid-restore says the same.
    service.database.rename(tmp_path / "aside.db")
    with pytest.raises(ReplicaRestoreError) as full:
        fetch_point(service, None, state_dir=state_dir)
    assert full.value.reason == "no_space", full.value
    assert os.listdir(small_tmpfs / "b") == []
    assert (tmp_path / "aside.db").read_bytes() == before and control_log(tmp_path) == []


def window(opened_at: float, from_revision: str) -> DeployWindow:
    return DeployWindow(1, opened_at, opened_at + 900, "migration_arrived", from_revision, None)


@pytest.mark.e2e
def test_in_a_deploy_window_the_replica_goes_back_to_just_before_the_upgrade(
    tmp_path: Path,
    replicated: tuple,  # type: ignore[type-arg]
) -> None:
    service, state_dir, child = replicated
    pre_deploy = take_backup(service, reason="pre-deploy")
    add_players(service.database, "after-the-pre-deploy-backup")
    child.wait_replicated(tmp_path, "after-the-pre-deploy-backup")
    opened = time.time()
    add_players(service.database, "during-the-deploy")
    child.wait_replicated(tmp_path, "during-the-deploy")

    outcome = run_rung(service, state_dir, child, Rung("restore", "replica:pre_deploy"), window(opened, REVISION))

    assert outcome.ok, outcome.summary
    assert outcome.detail["source"] == "replica" and "deploy window opened" in outcome.detail["point_basis"]
    restored = players(service.database)
    assert "after-the-pre-deploy-backup" in restored  # kept: the pre-deploy backup alone would have lost it
    assert "during-the-deploy" not in restored
    # A copy at another revision than the one before the deploy is refused; a local backup from before the
    # window is restored instead: the newest, which is the first restore's verified copy (kept as a backup,
    # named for its moment), newer than the pre-deploy one.
    wrong = run_rung(service, state_dir, child, Rung("restore", "replica:pre_deploy"), window(opened, "0ther"))
    assert wrong.ok and wrong.detail["source"] == "local"
    assert wrong.backup_used == outcome.backup_used != pre_deploy.manifest.name
    assert wrong.detail["replica_refused"]["reason"] == "verify_failed"


def test_a_replica_that_is_gone_is_refused_and_the_local_backup_restored(
    tmp_path: Path,
    replicated: tuple,  # type: ignore[type-arg]
) -> None:
    service, state_dir, child = replicated
    add_players(service.database, "replicated")
    child.wait_replicated(tmp_path, "replicated")
    local = take_backup(service, reason="manual")
    child.stop()
    shutil.rmtree(tmp_path / "offsite")  # the other disk is gone (unmounted, wiped)

    outcome = run_rung(service, state_dir, child, Rung("restore", "replica:proven_good"))

    assert outcome.ok, outcome.summary
    assert outcome.detail["source"] == "local" and outcome.backup_used == local.manifest.name
    assert outcome.detail["replica_refused"]["reason"] == "no_point"
    assert "its files are gone" in outcome.detail["replica_refused"]["message"]
    assert not list(service.backups.dir.glob(".*.partial*"))
