"""`rollbackd migrate`: a deploy with a pre-deploy backup, a verification window and the runbook's way back, against
the real example service (run detached by its `command` control), its fault migrations and real Alembic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from rollbackd.backup.pre_deploy import read_pre_deploy
from rollbackd.state.service_lock import ServiceLock
from tests.support.deploy_app import CLEAN_REVISION, DeployApp
from tests.support.vbrpg_service import CLEAN_HEAD

pytestmark = pytest.mark.e2e

WINDOW = "2"  # seconds of verification after the upgrade: three rounds of the checklist


def migrate_json(app: DeployApp, *arguments: str) -> tuple[int, dict[str, Any], str]:
    result = app.rollbackd("migrate", "--json", "--window", WINDOW, *arguments)
    return result.returncode, json.loads(result.stdout), result.stderr


def step_names(report: dict[str, Any]) -> list[str]:
    return [step["step"] for step in report["steps"]]


def start_migrate(app: DeployApp, *arguments: str) -> subprocess.Popen[str]:
    """`rollbackd migrate` in the background, its lines readable as they are printed."""
    return subprocess.Popen(
        [sys.executable, "-m", "rollbackd", "--config", str(app.config), "migrate", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_until(process: subprocess.Popen[str], text: str) -> str:
    """Lines of stdout up to and including the first one containing ``text``; fail if it exits first."""
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"exited without printing {text!r}: {''.join(seen)}{process.communicate()[1]}")


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    """The rest of stdout and all of stderr, once it exits. Read through the same text buffer as read_until:
    communicate() reads the pipe itself and would lose lines that buffer already holds."""
    assert process.stdout is not None and process.stderr is not None
    try:
        rest, errors = process.stdout.read(), process.stderr.read()
        process.wait(timeout=240)
        return rest, errors
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


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


def test_ctrl_c_in_the_verification_window_rolls_the_deploy_back_and_a_second_is_ignored(
    served: DeployApp,
) -> None:
    served.add_clean_migration()
    counts = served.counts()
    migrate = start_migrate(served, "--window", "120")
    try:
        output = read_until(migrate, "verify 1/3")  # upgraded, restarted, first round verified: now in the window
        migrate.send_signal(signal.SIGINT)
        output += read_until(migrate, "SIGINT: stopping the deploy at the next safe point")
        migrate.send_signal(signal.SIGINT)
    finally:
        rest, errors = finish(migrate)
    output += rest
    assert migrate.returncode == 1, output + errors
    assert "SIGINT again: the deploy is being stopped safely" in output
    interrupted = f"the deploy to {CLEAN_REVISION} was interrupted (SIGINT) before verification round 2"
    assert f"[FAIL] interrupted: {interrupted}" in output
    assert output.splitlines()[-1].startswith("vbrpg: ROLLED BACK: ")
    assert served.revision() == CLEAN_HEAD and served.counts() == counts
    assert "description" not in {row[1] for row in served.query("PRAGMA table_info(game_rooms)")}
    assert served.health().json()["revision"] == CLEAN_HEAD
    history = served.history()
    try:
        (deploy,) = history.deploys("vbrpg")
        incident = history.incident(deploy.incident_id)
        assert (incident.signal, incident.outcome) == ("interrupted", "recovered")
        assert [(action.action, action.outcome) for action in incident.actions] == [("downgrade", "success")]
        assert deploy.outcome == "rolled_back"
    finally:
        history.close()


def test_ctrl_c_while_waiting_for_the_lock_touches_nothing(app: DeployApp) -> None:
    app.add_clean_migration()
    lock = ServiceLock(app.state_dir, "vbrpg", "rollbackd restore (incident 9)")
    lock.acquire()
    try:
        migrate = start_migrate(app, "--lock-wait", "200")
        try:
            read_until(migrate, "waiting up to 200s: rollbackd restore (incident 9) held by pid")
            migrate.send_signal(signal.SIGINT)
        finally:
            _, errors = finish(migrate)  # at once: the wait is not a thread that outlives the interrupt
    finally:
        lock.release()
    assert migrate.returncode == 130, errors
    assert "interrupted before the deploy began; nothing was touched" in errors
    assert app.revision() == CLEAN_HEAD and not app.backup_dir.exists()
    history = app.history()
    try:
        assert history.deploys("vbrpg") == []
    finally:
        history.close()


def test_force_deploys_a_blocked_revision_and_says_so(served: DeployApp) -> None:
    served.add_clean_migration()
    history = served.history()
    try:
        history.block_revision("vbrpg", CLEAN_REVISION, "data loss (blocked by hand for this test)", None)
    finally:
        history.close()
    refused = served.rollbackd("migrate")
    assert refused.returncode == 1 and served.revision() == CLEAN_HEAD
    assert f"revision {CLEAN_REVISION} is blocked (no incident): data loss (blocked by hand" in refused.stdout
    forced = served.rollbackd("migrate", "--force", "--window", WINDOW)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "deploying it anyway (--force)" in forced.stdout
    assert served.revision() == CLEAN_REVISION


def test_bad_target_is_a_usage_error(app: DeployApp) -> None:
    result = app.rollbackd("migrate", "--to", "deadbeef")
    assert result.returncode == 2 and "no such revision" in result.stderr
    assert not app.backup_dir.exists()
