"""`rollbackd migrate`: a deploy with a pre-deploy backup, a verification window and the runbook's way back, against
the real example service (run detached by its `command` control), its fault migrations and real Alembic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rollbackd.backup.pre_deploy import read_pre_deploy
from rollbackd.service_lock import ServiceLock
from tests.support.vbrpg_service import CLEAN_HEAD

from .deploy_app import CLEAN_REVISION, DeployApp

pytestmark = pytest.mark.e2e

WINDOW = "2"  # seconds of verification after the upgrade: three rounds of the checklist


def migrate_json(app: DeployApp, *arguments: str) -> tuple[int, dict[str, Any], str]:
    result = app.rollbackd("migrate", "--json", "--window", WINDOW, *arguments)
    return result.returncode, json.loads(result.stdout), result.stderr


def step_names(report: dict[str, Any]) -> list[str]:
    return [step["step"] for step in report["steps"]]


def test_clean_migration_is_rehearsed_deployed_verified_and_recorded(served: DeployApp) -> None:
    served.add_clean_migration()
    counts = served.counts()
    rehearsal = served.rollbackd("rehearse")
    assert rehearsal.returncode == 0, rehearsal.stdout + rehearsal.stderr
    result = served.rollbackd("migrate", "--rehearse", "--window", WINDOW)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[  ok] plan: ") and lines[-1].startswith("vbrpg: OK: migrated")
    assert any("[  ok] verify 3/3: verified" in line for line in lines)
    assert served.revision() == CLEAN_REVISION and served.counts()["game_rooms"] >= counts["game_rooms"]
    assert served.health().json()["revision"] == CLEAN_REVISION  # restarted: the service runs on the new schema
    history = served.history()
    try:
        (deploy,) = history.deploys("vbrpg")
        assert (deploy.trigger, deploy.outcome) == ("migrate", "ok")
        assert (deploy.from_revision, deploy.to_revision) == (CLEAN_HEAD, CLEAN_REVISION)
        assert deploy.pre_deploy_backup and (served.backup_dir / deploy.pre_deploy_backup).exists()
        assert history.open_deploy_window("vbrpg") is not None  # the daemon keeps watching, with the fallback
        assert history.incidents("vbrpg") == []
    finally:
        history.close()
    record = read_pre_deploy(served.state_dir / "services" / "vbrpg")
    assert record is not None and record.pre_deploy_backup == deploy.pre_deploy_backup
    assert record.from_revision == CLEAN_HEAD
    again = served.rollbackd("migrate")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_failed_upgrade_is_undone_and_the_service_is_healthy_at_the_pre_deploy_revision(served: DeployApp) -> None:
    revision = served.add_fault_migration("fk-violation")
    rehearsal = served.rollbackd("rehearse")
    assert rehearsal.returncode == 1 and "FOREIGN KEY constraint failed" in rehearsal.stdout
    counts = served.counts()
    code, report, steps = migrate_json(served)
    assert code == 1, steps
    assert report["outcome"] == "rolled_back" and report["revision_after"] == CLEAN_HEAD
    assert "FOREIGN KEY constraint failed" in steps
    # The failed upgrade left room_tags behind at the old revision: the downgrade had nothing to run, its
    # verification caught the foreign schema, and the pre-deploy backup was restored.
    assert served.revision() == CLEAN_HEAD and "room_tags" not in served.tables()
    assert served.counts() == counts
    assert served.health().status_code == 200
    history = served.history()
    try:
        incident = history.incident(report["incident"])
        assert (incident.rule, incident.signal, incident.outcome) == ("migrate", "migration_failed", "recovered")
        assert [(action.action, action.outcome) for action in incident.actions] == [
            ("downgrade", "success"),
            ("restore", "success"),
        ]
        assert [verification.ok for verification in incident.verifications] == [False, True]
        assert incident.backup_used == report["pre_deploy_backup"]
        (deploy,) = history.deploys("vbrpg")
        assert (deploy.outcome, deploy.incident_id, deploy.to_revision) == ("rolled_back", incident.id, revision)
    finally:
        history.close()


def test_data_loss_in_the_window_restores_the_backup_blocks_the_revision_and_refuses_it_next_time(
    served: DeployApp,
) -> None:
    revision = served.add_fault_migration("data-loss")
    rehearsal = served.rollbackd("rehearse")
    assert rehearsal.returncode == 1 and "DATA LOSS" in rehearsal.stdout
    counts = served.counts()
    code, report, steps = migrate_json(served)
    assert code == 1, steps
    assert report["outcome"] == "rolled_back" and report["blocked"] == [revision]
    assert "verify 1/3" in step_names(report) and "downgrade" in step_names(report)  # skipped, said so
    assert served.counts() == counts and served.revision() == CLEAN_HEAD  # every row back
    history = served.history()
    try:
        incident = history.incident(report["incident"])
        assert (incident.signal, incident.outcome) == ("rows_dropped", "recovered")
        assert (incident.revision_before, incident.revision_after) == (revision, CLEAN_HEAD)  # version rolled back
        assert [action.action for action in incident.actions] == ["restore"]
        blocked = history.blocked_revisions("vbrpg")[revision]
        assert blocked.incident_id == incident.id and "data loss" in blocked.reason
    finally:
        history.close()
    refused = served.rollbackd("migrate")
    assert refused.returncode == 1
    assert f"revision {revision} is blocked (incident {report['incident']})" in refused.stdout
    assert "--force" in refused.stdout
    assert len(list(served.backup_dir.glob("*.db"))) == 1  # refused before the pre-deploy backup


def test_verification_failure_with_a_broken_downgrade_falls_back_to_restore(served: DeployApp) -> None:
    served.add_fault_migration("bad-downgrade")
    rehearsal = served.rollbackd("rehearse", "--json")
    assert rehearsal.returncode == 1 and json.loads(rehearsal.stdout)["revisions"][0]["reversible"] is False
    # Post-deployment health checks fail: the service (not restarted, --no-restart) answers 503.
    served.chaos(health_503_count=10_000)
    code, report, steps = migrate_json(served, "--no-restart")
    assert code == 1, steps
    assert "restart" not in step_names(report)
    assert report["outcome"] == "rolled_back" and report["revision_after"] == CLEAN_HEAD
    assert "no such index: ix_players_last_seen" in steps
    assert served.revision() == CLEAN_HEAD and served.health().status_code == 200  # restarted by the restore
    columns = {row[1] for row in served.query("PRAGMA table_info(players)")}
    assert "last_seen_at" not in columns
    history = served.history()
    try:
        incident = history.incident(report["incident"])
        assert incident.signal == "verification_failed"
        downgrade, restore = incident.actions
        assert (downgrade.action, downgrade.outcome, restore.action, restore.outcome) == (
            "downgrade",
            "failed",
            "restore",
            "success",
        )
        alembic = [command for command in downgrade.commands if "downgrade" in command["argv"]]
        assert alembic and alembic[0]["exit_code"] != 0 and "no such index" in alembic[0]["output_tail"]
    finally:
        history.close()


def test_migrate_waits_for_the_daemon_then_gives_up_touching_nothing(app: DeployApp) -> None:
    app.add_clean_migration()
    lock = ServiceLock(app.state_dir, "vbrpg", "rollbackd restore (incident 7)")
    lock.acquire()
    try:
        result = app.rollbackd("migrate", "--lock-wait", "0.5")
    finally:
        lock.release()
    assert result.returncode == 4
    assert "rollbackd restore (incident 7) held by pid" in result.stderr and "nothing was migrated" in result.stderr
    assert app.revision() == CLEAN_HEAD and not app.backup_dir.exists()


def test_bad_target_is_a_usage_error(app: DeployApp) -> None:
    result = app.rollbackd("migrate", "--to", "deadbeef")
    assert result.returncode == 2 and "no such revision" in result.stderr
    assert not app.backup_dir.exists()
