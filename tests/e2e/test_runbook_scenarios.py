"""The runbook's scenarios, hands-off: a real service, a real daemon, a fault injected, the outcome checked.

Each test starts the example service (rollbackd controls it with the `command` kind), seeds it, starts
`rollbackd run`, injects one of the example's faults and asserts through rollbackd's CLI and state DB and the
service's own HTTP API. No timing assertions: each waits for the outcome with a generous deadline.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.rollbackd_daemon import wait_for
from tests.support.stack import Stack, running_stack
from tests.support.vbrpg_service import CLEAN_HEAD, FAULT_REVISIONS

pytestmark = pytest.mark.e2e


def assert_rows_intact(after: dict[str, int], before: dict[str, int]) -> None:
    """Every room, player and seat is back, and no more: the verification's smoke steps remove the room and the
    two players they create (AI agents are seats, not players), so a recovery leaves the counts as they were."""
    assert after == before


def test_service_killed_without_deploy_is_restarted_and_schema_untouched(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        before = stack.counts()
        assert stack.fault("kill").returncode == 0
        incident = stack.settled_incident("process-down")
        assert incident.outcome == "recovered", incident.notes
        assert [action.action for action in incident.actions] == ["restart"]
        assert stack.health() == 200
        assert stack.revision() == CLEAN_HEAD
        assert_rows_intact(stack.counts(), before)
        assert stack.state() == "ok"


def test_data_loss_after_migration_restores_pre_migration_backup_and_blocks_it(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        before = stack.counts()
        assert stack.fault("data-loss").returncode == 0
        incident = stack.settled_incident("data-loss")
        assert incident.outcome == "recovered", incident.notes
        assert [action.action for action in incident.actions] == ["restore"]
        assert incident.revision_before == FAULT_REVISIONS["data-loss"]
        assert stack.revision() == CLEAN_HEAD
        assert_rows_intact(stack.counts(), before)
        assert stack.health() == 200
        # The damaged file is kept, as the runbook's `mv vbrpg.db vbrpg_dataloss_<ts>.db`.
        assert list((stack.workdir / "data").glob("vbrpg_corrupted_*.db"))
        blocked = stack.status()["services"]["vbrpg"]["blocked_revisions"]  # type: ignore[index]
        assert blocked == [FAULT_REVISIONS["data-loss"]]

        # The runbook: "DO NOT run migration again until bug is fixed". The same deploy again is stopped: the
        # script is moved out of the versions dir before `alembic upgrade head` can run it.
        again = stack.fault("data-loss")
        assert stack.revision() == CLEAN_HEAD, again.stdout + again.stderr
        assert_rows_intact(stack.counts(), before)
        held = stack.settled_incident("blocked-revision-arrived")
        assert held.outcome == "hold"
        assert wait_for(lambda: stack.state() == "hold", "HOLD after the blocked migration came back")
        versions = stack.workdir / "alembic" / "versions"
        assert not list(versions.glob(f"{FAULT_REVISIONS['data-loss']}_*.py"))
        assert list((stack.state_dir / "services" / "vbrpg" / "quarantine").glob("*.py"))


def test_corrupted_database_is_restored_from_newest_verified_backup(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        before = stack.counts()
        assert stack.fault("corrupt").returncode == 0
        incident = stack.settled_incident("integrity-failed")
        assert incident.outcome == "recovered", incident.notes
        assert [action.action for action in incident.actions] == ["restore"]
        assert stack.query("PRAGMA integrity_check") == [("ok",)]
        assert_rows_intact(stack.counts(), before)
        assert stack.health() == 200
        assert list((stack.workdir / "data").glob("vbrpg_corrupted_*.db"))


def test_database_ahead_of_code_is_downgraded_through_the_vault(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        before = stack.counts()
        assert stack.fault("schema-skew").returncode == 0
        incident = stack.settled_incident("schema-ahead")
        assert incident.outcome == "recovered", incident.notes
        assert [action.action for action in incident.actions] == ["downgrade"]
        assert stack.revision() == CLEAN_HEAD
        assert_rows_intact(stack.counts(), before)
        assert stack.health() == 200
        # The script is gone from the code: the downgrade ran it from the vault.
        skew = FAULT_REVISIONS["schema-skew"]
        assert not list((stack.workdir / "alembic" / "versions").glob(f"{skew}_*.py"))
        assert list((stack.state_dir / "vault" / "vbrpg").glob(f"{skew}_*.py"))


def test_fk_violation_mid_deploy_is_undone_to_the_pre_deploy_revision(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        before = stack.counts()
        failed = stack.fault("fk-violation")
        assert failed.returncode != 0
        assert "FOREIGN KEY constraint failed" in failed.stdout + failed.stderr
        incident = stack.settled_incident("migration-failed")
        assert incident.outcome == "recovered", incident.notes
        # The downgrade to the pre-deploy revision cannot drop the partial table SQLite kept; the restore does.
        assert [action.action for action in incident.actions][-1] == "restore"
        assert stack.revision() == CLEAN_HEAD
        assert stack.query("SELECT name FROM sqlite_master WHERE name = 'room_tags'") == []
        assert_rows_intact(stack.counts(), before)
        assert stack.health() == 200


def test_index_drop_with_latency_over_bound_downgrades_one_revision(tmp_path: Path) -> None:
    # 600k participants: a room lookup scans ~25 ms without its index (far more on a loaded machine), ~3 ms with
    # it; the bound sits between. The verification measures again until the restarted service has warmed up.
    options = {"rooms": 150_000, "players": 300_000, "participants_per_room": 4, "latency_bound": "15ms"}
    with running_stack(tmp_path, **options) as stack:
        assert stack.fault("drop-index").returncode == 0
        incident = stack.settled_incident("slow-after-index-drop", timeout=120)
        assert incident.outcome == "recovered", incident.notes
        assert [action.action for action in incident.actions] == ["downgrade"]
        assert stack.revision() == CLEAN_HEAD
        plan = stack.query("EXPLAIN QUERY PLAN SELECT * FROM game_room_participants WHERE room_id = 1")
        assert "ix_game_room_participants_room_id" in str(plan)
        items = {item["name"]: item for item in incident.verifications[-1].items}
        assert items["performance"]["ok"]


def test_permanent_fault_takes_exactly_max_actions_then_holds(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        stop = threading.Event()

        def keep_killing() -> None:
            """The service dies again a moment after every recovery: restarting never helps for long."""
            while not stop.is_set():
                if stack.health() == 200 and stack.state() == "ok":
                    stack.fault("kill")
                stop.wait(1.0)

        killer = threading.Thread(target=keep_killing, daemon=True)
        killer.start()
        try:
            wait_for(lambda: stack.state() == "hold", f"HOLD\n{stack.log_tail()}", timeout=180)
            actions = stack.actions()
            assert actions == [("restart", "success")] * 3
            time.sleep(10)  # the fault goes on; nothing more may happen
            assert stack.actions() == actions
            assert stack.state() == "hold"
            assert "flap limit" in stack.incidents()[-1].notes
        finally:
            stop.set()
            killer.join(timeout=30)
        # The runbook's history table, as rollbackd wrote it.
        table = stack.rollbackd("history", "--markdown").stdout.splitlines()
        assert table[0] == "| Date | Version Rolled Back | Reason | Time to Recover | Notes |"
        assert len(table) == 2 + 4  # three recoveries and the incident that ended in HOLD
        assert sum("restart; verified" in row for row in table) == 3
        # A person looks, fixes the cause, and lifts HOLD; the service is back under rollbackd's care.
        assert stack.rollbackd("resume", "vbrpg").returncode == 0
        assert wait_for(lambda: stack.state() in ("ok", "degraded"), "the state after resume")


def test_noise_below_thresholds_causes_no_action(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        seen_states: set[str] = set()
        deadline = time.monotonic() + 60
        round_ = 0
        lock: Stack | None = None
        with stack.client() as client:
            while time.monotonic() < deadline:
                round_ += 1
                if round_ % 5 == 1:
                    client.post("/chaos", json={"health_503_count": 1})  # a single 503
                elif round_ % 5 == 3:
                    client.post("/chaos", json={"api_delay_seconds": 0.15})  # jitter far under the bound
                else:
                    client.delete("/chaos")
                if round_ % 15 == 7:
                    stack.fault("lock", "--seconds", "3")  # a lock held well under the threshold
                    lock = stack
                state = stack.state()
                if state:
                    seen_states.add(state)
                time.sleep(1.0)
            client.delete("/chaos")
        assert lock is not None
        assert stack.actions() == []
        assert seen_states <= {"ok", "degraded"}, seen_states
        assert stack.state() in ("ok", "degraded")


def test_dry_run_records_the_decision_and_touches_nothing(tmp_path: Path) -> None:
    with running_stack(tmp_path, dry_run=True) as stack:
        assert stack.fault("data-loss").returncode == 0
        incident = stack.settled_incident("data-loss")
        assert incident.outcome == "dry_run"
        assert [(action.action, action.outcome) for action in incident.actions] == [("restore", "dry_run")]
        assert any("vbrpg_backup_" in step for step in incident.actions[0].detail["would"])
        time.sleep(3)
        assert stack.revision() == FAULT_REVISIONS["data-loss"]
        assert stack.counts()["game_rooms"] == 0
        assert not list((stack.workdir / "data").glob("vbrpg_corrupted_*.db"))
        assert stack.health() == 200
