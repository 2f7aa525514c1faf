"""The state DB: its own Alembic migrations, and the runbook's history table."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

import rollbackd.state.history
from rollbackd.state.history import STATE_SCHEMA_HEAD, History, StateUpgradeError


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
