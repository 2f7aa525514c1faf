"""The state DB: its own Alembic migrations, and the runbook's history table."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

import rollbackd.state.history
from rollbackd.state.history import STATE_SCHEMA_HEAD, History, RecordNotFound, StateUpgradeError


def test_schema_head_constant_matches_the_migration_scripts() -> None:
    settings = Config()
    settings.set_main_option("script_location", str(Path(rollbackd.state.history.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(settings).get_heads() == [STATE_SCHEMA_HEAD]


def test_upgrade_creates_the_state_db_once_with_owner_only_permissions(tmp_path: Path) -> None:
    history = History(tmp_path / "state" / "rollbackd.db")
    try:
        assert history.schema_revision() is None
        history.upgrade()
        assert history.schema_revision() == STATE_SCHEMA_HEAD
        history.upgrade()  # at head: nothing to do
        assert (tmp_path / "state" / "rollbackd.db").stat().st_mode & 0o777 == 0o600
    finally:
        history.close()


UPGRADE_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
from rollbackd.state.history import History
history = History(Path(sys.argv[1]))
history.upgrade_in_child()
print(history.schema_revision(), "alembic" in sys.modules)
"""


def test_the_daemons_upgrade_runs_alembic_in_a_child_and_never_imports_it(tmp_path: Path) -> None:
    database = tmp_path / "state" / "rollbackd.db"
    for _ in range(2):  # the second time there is nothing to upgrade
        result = subprocess.run(
            [sys.executable, "-c", UPGRADE_IN_A_FRESH_PROCESS, str(database)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [STATE_SCHEMA_HEAD, "False"]
    assert database.stat().st_mode & 0o777 == 0o600


def test_a_state_db_from_a_newer_release_is_refused_with_alembics_reason(tmp_path: Path) -> None:
    database = tmp_path / "rollbackd.db"
    with closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('0009_from_a_newer_release')")
    history = History(database)
    try:
        with pytest.raises(StateUpgradeError, match="Can't locate revision identified by '0009_from_a_newer_release'"):
            history.upgrade_in_child()
        assert history.schema_revision() == "0009_from_a_newer_release"  # untouched
    finally:
        history.close()


def test_history_rows_read_like_the_runbook_table(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    history = History(tmp_path / "rollbackd.db", clock=lambda: now[0])
    try:
        history.upgrade()
        incident = history.open_incident(
            "vbrpg", "data-loss", "rows_dropped", "Data loss after migration to bad1", {}, revision_before="bad1"
        )
        action = history.start_action("vbrpg", "restore", incident, detail={})
        now[0] += 9.5
        history.finish_action(action, "success", detail={})
        history.record_verification("vbrpg", incident, action, True, [{"name": "service health", "ok": True}])
        history.block_revision("vbrpg", "bad1", "data loss", incident)
        history.close_incident(
            incident,
            "recovered",
            revision_after="good0",
            backup_used="vbrpg_backup_x.db",
            notes="revision bad1 blocked",
        )
        [row] = history.history_rows("vbrpg")
        assert row.version_rolled_back == "bad1 → good0"
        assert row.time_to_recover == 9.5
        assert row.notes == "restore; restored vbrpg_backup_x.db; verified; revision bad1 blocked"
        assert set(history.blocked_revisions("vbrpg")) == {"bad1"}
        assert history.unblock_revision("vbrpg", "bad1")
        assert history.blocked_revisions("vbrpg") == {}
    finally:
        history.close()


def test_many_threads_writing_at_once_each_get_their_turn(tmp_path: Path) -> None:
    """The daemon calls the history from its worker threads and now and then from its event loop: one shared
    connection, every call one whole transaction, none lost or interleaved."""
    history = History(tmp_path / "rollbackd.db")
    try:
        history.upgrade()

        def recover(service: str) -> None:
            for attempt in range(15):
                incident = history.open_incident(service, "rule", "signal", f"attempt {attempt}", {"n": attempt})
                action = history.start_action(service, "restart", incident, detail={"attempt": attempt})
                history.finish_action(action, "success", commands=[{"argv": ["true"]}], detail={"done": True})
                history.close_incident(incident, "recovered")

        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(recover, [f"service{number}" for number in range(6)]))
        for number in range(6):
            incidents = history.incidents(f"service{number}", limit=100)
            assert sorted(incident.evidence["n"] for incident in incidents) == list(range(15))
            assert all(incident.outcome == "recovered" for incident in incidents)
            assert all(
                [action.detail["attempt"] for action in incident.actions] == [incident.evidence["n"]]
                for incident in incidents
            )
            assert history.automatic_actions_since(f"service{number}", 0) == 15
    finally:
        history.close()


def test_records_read_back_with_their_types_and_unknown_ids_are_refused(tmp_path: Path) -> None:
    history = History(tmp_path / "rollbackd.db", clock=lambda: 1_000.0)
    try:
        history.upgrade()
        incident_id = history.open_incident("vbrpg", "rule", "signal", "why", {"rows": {"players": 3}}, dry_run=True)
        action_id = history.start_action("vbrpg", "restore", incident_id, automatic=False, detail={"a": 1})
        history.interrupt_action(action_id, {"interrupted": {"end_state": "gone"}})
        incident = history.incident(incident_id)
        assert (incident.outcome, incident.dry_run, incident.automatic) == ("dry_run", True, True)
        assert incident.evidence == {"rows": {"players": 3}}
        [action] = incident.actions
        assert action.automatic is False and action.outcome == "interrupted" and action.duration == 0.0
        assert action.detail == {"a": 1, "interrupted": {"end_state": "gone"}}
        assert history.automatic_actions_since("vbrpg", 0) == 0  # manual actions do not count against the guard

        deploy_id = history.open_deploy("vbrpg", "migrate", 60.0, from_revision="r1", detail={"k": "v"})
        history.update_deploy(deploy_id, to_revision="r2", outcome="ok")
        [deploy] = history.deploys("vbrpg")
        assert (deploy.to_revision, deploy.outcome, deploy.closes_at, deploy.detail) == (
            "r2",
            "ok",
            1_060.0,
            {"k": "v"},
        )
        with pytest.raises(TypeError, match="no column"):
            history.update_deploy(deploy_id, **{"outcome = 'ok'; --": "x"})
        with pytest.raises(RecordNotFound):
            history.update_deploy(deploy_id + 1, outcome="ok")
        with pytest.raises(RecordNotFound):
            history.incident(incident_id + 1)
        with pytest.raises(RecordNotFound):
            history.close_incident(incident_id + 1, "recovered")
    finally:
        history.close()


def test_hold_survives_and_a_resume_is_asked_for_only_in_hold(tmp_path: Path) -> None:
    now = [10.0]
    history = History(tmp_path / "rollbackd.db", clock=lambda: now[0])
    try:
        history.upgrade()
        assert history.load_state("vbrpg") is None
        assert not history.request_resume("vbrpg")
        history.save_state("vbrpg", "hold", "restore failed")
        now[0] = 20.0
        assert history.request_resume("vbrpg")
        history.save_state("vbrpg", "hold", "restore failed again")  # same state: since and the request stay
        state = history.load_state("vbrpg")
        assert state is not None and (state.since, state.resume_requested_at) == (10.0, 20.0)
        history.save_state("vbrpg", "ok", "resumed")
        state = history.load_state("vbrpg")
        assert state is not None and (state.state, state.since, state.resume_requested_at) == ("ok", 20.0, None)
    finally:
        history.close()


def test_the_state_db_module_loads_without_sqlalchemy() -> None:
    code = "import sys, rollbackd.state.history; print(sorted(m for m in sys.modules if m.startswith('sqlalchemy')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_processes_upgrading_a_new_state_db_at_once_all_succeed(tmp_path: Path) -> None:
    """The daemon's first start and a `rollbackd status` polling it both find no schema: one upgrades, the
    other waits for it and finds the schema at head (before, one failed "table incidents already exists")."""
    path = tmp_path / "state" / "rollbackd.db"
    code = (
        "import sys; from pathlib import Path; from rollbackd.state.history import History; "
        "History(Path(sys.argv[1])).upgrade()"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE)  # noqa: S603 - ours
        for _ in range(4)
    ]
    errors = [child.communicate(timeout=120)[1].decode() for child in children]
    assert [child.returncode for child in children] == [0, 0, 0, 0], errors
    assert History(path).schema_revision() == STATE_SCHEMA_HEAD
