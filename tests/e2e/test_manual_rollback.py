"""`rollbackd rollback` by hand: the runbook's `alembic downgrade -1` and backup restore, with the daemon's safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollbackd.state.history import History
from tests.support.stack import Stack
from tests.support.vbrpg_service import CLEAN_HEAD, FAULT_REVISIONS

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    stack = Stack(tmp_path)
    try:
        stack.set_up()
        yield stack
    finally:
        stack.tear_down()


def test_downgrade_one_step_by_hand_takes_a_safety_backup_and_verifies(stack: Stack) -> None:
    assert stack.fault("drop-index").returncode == 0
    assert stack.revision() == FAULT_REVISIONS["drop-index"]
    result = stack.rollbackd("rollback", "vbrpg", "--steps", "1", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"]
    assert report["action"]["revision_after"] == CLEAN_HEAD
    assert stack.revision() == CLEAN_HEAD
    assert "ix_game_room_participants_room_id" in str(stack.query("PRAGMA index_list(game_room_participants)"))
    backups = list((stack.workdir / "data" / "backups").glob("vbrpg_backup_*.db"))
    assert backups, "the downgrade must take a safety backup first"
    history = History(stack.state_dir / "rollbackd.db")
    try:
        [incident] = history.incidents("vbrpg")
    finally:
        history.close()
    assert (incident.rule, incident.automatic, incident.outcome) == ("manual", False, "recovered")
    assert [action.action for action in incident.actions] == ["downgrade"]
    assert any("alembic" in " ".join(command["argv"]) for command in incident.actions[0].commands)


def test_restore_dry_run_shows_the_plan_and_touches_nothing(stack: Stack) -> None:
    assert stack.rollbackd("backup", "vbrpg").returncode == 0
    before = stack.database.read_bytes()
    result = stack.rollbackd("rollback", "vbrpg", "--restore", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "vbrpg_backup_" in result.stdout
    assert "vbrpg_corrupted_<timestamp>.db" in result.stdout
    assert stack.database.read_bytes() == before
    assert not list((stack.workdir / "data").glob("vbrpg_corrupted_*"))


def test_rollback_refuses_a_backup_that_does_not_exist(stack: Stack) -> None:
    result = stack.rollbackd("rollback", "vbrpg", "--restore", "--backup", "vbrpg_backup_20000101_000000.db")
    assert result.returncode == 1
    assert "no verified backup named" in result.stdout + result.stderr
    assert stack.revision() == CLEAN_HEAD
    assert stack.health() == 200


def test_rollback_to_an_unknown_revision_is_refused_before_anything_is_touched(stack: Stack) -> None:
    backups = stack.workdir / "data" / "backups"
    before = sorted(path.name for path in backups.glob("*")) if backups.exists() else []
    pid = (stack.workdir / "run" / "vbrpg.pid").read_text().strip()
    for arguments in (["--to", "deadbeef0000"], ["--to", "deadbeef0000", "--json"], ["--steps", "99"]):
        result = stack.rollbackd("rollback", "vbrpg", *arguments)
        assert result.returncode == 2, (arguments, result.stdout + result.stderr)
        assert "nothing was touched" in result.stderr
        assert "Traceback" not in result.stderr
    assert "'deadbeef0000' is in neither" in stack.rollbackd("rollback", "vbrpg", "--to", "deadbeef0000").stderr
    # No safety backup, the service never stopped (the same process answers), no incident recorded.
    assert (sorted(path.name for path in backups.glob("*")) if backups.exists() else []) == before
    assert (stack.workdir / "run" / "vbrpg.pid").read_text().strip() == pid
    assert stack.health() == 200
    assert stack.revision() == CLEAN_HEAD
    assert stack.incidents() == []
    # A revision the scripts know, by a unique prefix, still goes through the plan.
    plan = stack.rollbackd("rollback", "vbrpg", "--to", CLEAN_HEAD[:6], "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr


def test_a_restore_by_hand_says_each_phase_as_it_begins(stack: Stack) -> None:
    assert stack.rollbackd("backup", "vbrpg").returncode == 0
    result = stack.rollbackd("rollback", "vbrpg", "--restore")
    assert result.returncode == 0, result.stdout + result.stderr
    # Not a terminal: one plain line per phase on stderr, no bar; the report on stdout.
    assert result.stderr == "restore: carrying out the plan ...\nverifying checklist ...\n"
    assert "[  ok] " in result.stdout and "recovered (rollbackd history)" in result.stdout
