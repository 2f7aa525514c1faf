"""`rollbackd rehearse`: the runbook's "test migrations locally" (upgrade, downgrade -1, upgrade) on a copy of
the live data, with the real example app, its fault migrations and real Alembic subprocesses."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollbackd.actions.alembic_runner import redirect_database, redirected_environment
from rollbackd.deploy.rehearse import remove_stale_workspaces
from tests.support.deploy_app import CLEAN_REVISION, DeployApp, make_deploy_app
from tests.support.vbrpg_service import CLEAN_HEAD

HOLDER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("INSERT INTO players (name) VALUES ('held-open writer')")
print("ready", flush=True)
sys.stdin.read()
connection.close()
"""


@contextlib.contextmanager
def held_open(database: Path) -> Iterator[None]:
    """Another process with the database open after one write, as a live service keeps it: -wal and -shm exist."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        yield
    finally:
        process.stdin.close()
        process.wait(timeout=30)
        process.stdout.close()


def file_marks(database: Path) -> dict[str, tuple[bool, int, str]]:
    """(exists, size, sha256) of the database and its -wal; (exists, size, "") of its -shm (readers write there)."""
    marks = {}
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{database}{suffix}")
        if not path.exists():
            marks[suffix] = (False, 0, "")
            continue
        digest = "" if suffix == "-shm" else hashlib.sha256(path.read_bytes()).hexdigest()
        marks[suffix] = (True, path.stat().st_size, digest)
    return marks


pytestmark = pytest.mark.e2e


def rehearse_json(app: DeployApp, *arguments: str) -> tuple[int, dict[str, Any], str]:
    result = app.rollbackd("rehearse", "--json", *arguments)
    return result.returncode, json.loads(result.stdout), result.stderr


def scratch_is_empty(app: DeployApp) -> bool:
    return not any((app.state_dir / "scratch").iterdir())


def test_rehearsal_of_a_clean_migration_passes_and_the_live_database_stays_byte_identical(served: DeployApp) -> None:
    served.add_clean_migration()
    with held_open(served.database):
        before = file_marks(served.database)
        assert before["-wal"][0] and before["-shm"][0]  # WAL mode, with a writer's frames in the -wal
        code, report, progress = rehearse_json(served)
        after = file_marks(served.database)
    assert code == 0, progress
    assert report["ok"] and report["pending"] == [CLEAN_REVISION] and report["from_revision"] == CLEAN_HEAD
    (revision,) = report["revisions"]
    assert revision["reversible"] is True and revision["rows_lost_by_downgrade"] == {}
    assert revision["rows_lost_by_upgrade"] == {} and revision["data_loss"] == {}
    assert [step["step"] for step in revision["steps"]] == ["upgrade", "downgrade", "upgrade again"]
    assert all(step["exit_code"] == 0 and step["checks"]["integrity"] == ["ok"] for step in revision["steps"])
    assert "description" not in served.query("SELECT sql FROM sqlite_master WHERE name = 'game_rooms'")[0][0]
    assert after == before  # the database's and the -wal's bytes, the -shm's presence and size
    assert served.revision() == CLEAN_HEAD and not served.backup_dir.exists()
    assert scratch_is_empty(served)
    assert "proved: the service's Alembic reads the scratch copy" in progress


def test_rehearsal_reports_the_foreign_key_violation_and_the_partial_schema_it_leaves(app: DeployApp) -> None:
    revision_id = app.add_fault_migration("fk-violation")
    code, report, _ = rehearse_json(app)
    assert code == 1 and not report["ok"]
    (revision,) = report["revisions"]
    assert revision["revision"] == revision_id and revision["reversible"] is None
    (upgrade,) = revision["steps"]
    assert upgrade["exit_code"] != 0 and "FOREIGN KEY constraint failed" in upgrade["output_tail"]
    assert "room_tags" in revision["problems"][0] and "partial schema" in revision["problems"][0]
    assert "room_tags" not in app.tables() and app.revision() == CLEAN_HEAD


def test_rehearsal_flags_the_rows_a_data_loss_migration_drops(app: DeployApp) -> None:
    app.add_fault_migration("data-loss")
    counts = app.counts()
    code, report, _ = rehearse_json(app)
    assert code == 1
    (revision,) = report["revisions"]
    assert revision["rows_lost_by_upgrade"] == counts  # every room, seat and player
    assert set(revision["data_loss"]) == set(counts) and report["data_loss_threshold"] == 0.5
    assert revision["reversible"] is True  # the schema comes back; the rows do not
    assert any(problem.startswith("DATA LOSS") for problem in revision["problems"])
    assert app.counts() == counts


def test_rehearsal_marks_a_migration_whose_downgrade_raises_irreversible(app: DeployApp) -> None:
    app.add_fault_migration("bad-downgrade")
    code, report, _ = rehearse_json(app)
    assert code == 1
    (revision,) = report["revisions"]
    assert revision["reversible"] is False
    upgrade, downgrade = revision["steps"]
    assert upgrade["exit_code"] == 0 and revision["indexes_added"] == ["ix_players_last_seen_at"]
    assert downgrade["exit_code"] != 0 and "no such index: ix_players_last_seen" in downgrade["output_tail"]
    assert revision["problems"][0].startswith("not reversible")
    assert app.revision() == CLEAN_HEAD


def test_rehearsal_takes_each_pending_revision_in_order_and_reports_its_indexes(app: DeployApp) -> None:
    app.add_clean_migration()
    drop_index = app.add_fault_migration("drop-index", on=CLEAN_REVISION)
    code, report, progress = rehearse_json(app)
    assert code == 0, progress
    assert report["pending"] == [CLEAN_REVISION, drop_index]
    first, second = report["revisions"]
    assert (first["from_revision"], second["from_revision"]) == (CLEAN_HEAD, CLEAN_REVISION)
    assert first["indexes_dropped"] == [] and second["indexes_dropped"] == ["ix_game_room_participants_room_id"]
    assert second["reversible"] is True
    code, report, _ = rehearse_json(app, "--to", CLEAN_REVISION[:6])
    assert code == 0 and report["pending"] == [CLEAN_REVISION]


def test_scripts_with_two_heads_need_a_target(app: DeployApp) -> None:
    app.add_clean_migration()
    app.add_fault_migration("drop-index")  # also on the old head: two heads
    code, report, _ = rehearse_json(app)
    assert code == 2 and "2 heads" in report["error"] and "--to" in report["error"]


def test_nothing_to_rehearse_at_the_code_head(app: DeployApp) -> None:
    result = app.rollbackd("rehearse")
    assert result.returncode == 0
    assert f"nothing to rehearse: the database is at {CLEAN_HEAD}" in result.stdout


def test_a_database_variable_in_the_alembic_environment_is_pointed_at_the_scratch_copy(tmp_path: Path) -> None:
    app = make_deploy_app(tmp_path, alembic_env={"VBRPG_DB": "data/vbrpg.db"})  # env.py prefers it to the ini
    app.add_clean_migration()
    before = file_marks(app.database)
    code, report, progress = rehearse_json(app)
    assert code == 0, progress
    assert report["revisions"][0]["reversible"] is True
    assert file_marks(app.database)[""] == before[""] and app.revision() == CLEAN_HEAD
    # Nobody had the WAL database open, so it had no -wal/-shm: reading it (any reader) makes SQLite create them.
    assert set(report["live_written_meanwhile"]) == {
        "an empty -wal appeared (SQLite's WAL read protocol)",
        "a -shm appeared (SQLite's WAL read protocol)",
    }


def test_rehearsal_refuses_when_env_py_ignores_the_scratch_database(app: DeployApp) -> None:
    env_py = app.app_dir / "alembic" / "env.py"
    text = env_py.read_text()
    first_line = '    database = x_arguments.get("db") or os.environ.get("VBRPG_DB")'
    hard_coded = text.replace(first_line, f"    return 'sqlite:///{app.database}'\n{first_line}")
    assert hard_coded != text
    env_py.write_text(hard_coded)  # an env.py that always migrates the live file, whatever the ini says
    app.add_fault_migration("data-loss")
    counts = app.counts()
    before = file_marks(app.database)
    code, report, stderr = rehearse_json(app)
    assert code == 2
    assert "did not read the scratch copy" in report["error"] and "sqlalchemy.url" in report["error"]
    assert app.revision() == CLEAN_HEAD and app.counts() == counts
    assert file_marks(app.database) == before
    assert scratch_is_empty(app)


def test_values_that_name_the_live_database_are_rewritten_and_others_kept(tmp_path: Path) -> None:
    live = tmp_path / "app" / "data" / "vbrpg.db"
    scratch = tmp_path / "state" / "scratch" / "vbrpg.db"
    cwd = tmp_path / "app"
    os.makedirs(live.parent)
    link = tmp_path / "link.db"
    link.symlink_to(live)
    assert redirect_database(str(live), live, scratch, cwd) == str(scratch)
    assert redirect_database("data/vbrpg.db", live, scratch, cwd) == str(scratch)
    assert redirect_database("./data/../data/vbrpg.db", live, scratch, cwd) == str(scratch)
    assert redirect_database(str(link), live, scratch, cwd) == str(scratch)
    assert redirect_database("sqlite:///data/vbrpg.db", live, scratch, cwd) == f"sqlite:///{scratch}"
    assert redirect_database(f"sqlite:///{live}?timeout=5", live, scratch, cwd) == f"sqlite:///{scratch}?timeout=5"
    assert redirect_database("db=data/vbrpg.db", live, scratch, cwd) == f"db={scratch}"
    for unrelated in ("data/other.db", "1", "", "/usr/bin:/bin", "--verbose"):
        assert redirect_database(unrelated, live, scratch, cwd) == unrelated
    environment = redirected_environment({"VBRPG_DB": str(live), "HOME": "/root"}, live, scratch, cwd)
    assert environment == {"VBRPG_DB": str(scratch), "HOME": "/root"}


def test_scratch_copies_of_dead_rehearsals_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f"rehearse-vbrpg-{dead_pid}-abc123"
    running = tmp_path / f"rehearse-vbrpg-{os.getpid()}-def456"
    other_service = tmp_path / f"rehearse-other-{dead_pid}-ghi789"
    for folder in (left, running, other_service):
        (folder / "copy").mkdir(parents=True)
    assert remove_stale_workspaces(tmp_path, "vbrpg") == [left]
    assert not left.exists() and running.exists() and other_service.exists()
