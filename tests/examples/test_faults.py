"""Each injected fault produces the symptom of the runbook scenario it stands for."""

import os
import shutil
import signal
import sqlite3
import subprocess
from importlib.resources import files
from pathlib import Path

import httpx
import pytest

from tests.support.vbrpg_service import (
    CLEAN_HEAD,
    FAULT_REVISIONS,
    VBRPG_EXAMPLE,
    ExampleService,
    database_revision,
    database_rows,
    process_gone,
    run_cli,
)

ROOM_LOOKUP_PLAN = "EXPLAIN QUERY PLAN SELECT * FROM game_room_participants WHERE room_id = 1"


def inject(fault: str, database: Path, app_dir: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("fault", fault, "--db", database, "--app-dir", app_dir, *extra)


def seed(database: Path, rooms: int = 200, players: int = 300) -> None:
    result = run_cli(
        "seed",
        "--db",
        database,
        "--rooms",
        rooms,
        "--players",
        players,
        "--participants-per-room",
        "3",
        "--agents-per-room",
        "1",
    )
    assert result.returncode == 0, result.stderr


def script_names(app_dir: Path) -> set[str]:
    return {path.name for path in (app_dir / "alembic" / "versions").glob("*.py")}


def test_faults_lists_every_fault_with_a_description() -> None:
    result = run_cli("faults")

    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == [
        "fk-violation",
        "schema-skew",
        "data-loss",
        "drop-index",
        "bad-downgrade",
        "corrupt",
        "lock",
        "kill",
    ]


def test_fk_violation_fails_the_upgrade_and_leaves_the_revision(database: Path, app_dir: Path) -> None:
    seed(database, rooms=5, players=10)

    result = inject("fk-violation", database, app_dir)

    assert result.returncode == 3
    assert "sqlalchemy.exc.IntegrityError: (sqlite3.IntegrityError) FOREIGN KEY constraint failed" in result.stdout
    assert database_revision(database) == CLEAN_HEAD
    # SQLite DDL is not rolled back: the table the failed migration created stays behind, empty, and the
    # foreign key held, so there are no orphans for foreign_key_check to find.
    assert database_rows(database, "SELECT count(*) FROM room_tags") == [(0,)]
    assert database_rows(database, "PRAGMA foreign_key_check") == []
    rerun = run_cli("migrate", "--db", database, "--app-dir", app_dir)
    assert rerun.returncode == 3
    assert "table room_tags already exists" in rerun.stderr


def test_schema_skew_leaves_the_database_ahead_of_the_code(
    service: ExampleService, database: Path, app_dir: Path, tmp_path: Path
) -> None:
    vault = tmp_path / "vault"

    result = inject("schema-skew", database, app_dir, "--stash", vault)

    assert result.returncode == 0, result.stderr
    skewed = FAULT_REVISIONS["schema-skew"]
    assert database_revision(database) == skewed
    assert not any(name.startswith(skewed) for name in script_names(app_dir))
    health = service.client().get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "error"
    assert health.json()["revision"] == skewed
    assert "unknown to the code" in health.json()["reason"]

    # With the script back (as from a script vault) its downgrade works and health recovers.
    for script in vault.iterdir():
        shutil.copy(script, app_dir / "alembic" / "versions")
    downgrade = run_cli("migrate", "--db", database, "--app-dir", app_dir, CLEAN_HEAD)
    assert downgrade.returncode == 0, downgrade.stderr
    assert database_rows(database, "SELECT count(*) FROM pragma_table_info('players') WHERE name = 'display_name'") == [
        (0,)
    ]
    run_cli("fault", "reset", "--app-dir", app_dir)
    assert service.client().get("/health").json() == {
        "status": "ok",
        "revision": CLEAN_HEAD,
        "code_head": CLEAN_HEAD,
    }


def test_data_loss_deletes_most_rooms_and_players_for_good(database: Path, app_dir: Path) -> None:
    seed(database)
    rooms_before = database_rows(database, "SELECT count(*) FROM game_rooms")[0][0]
    players_before = database_rows(database, "SELECT count(*) FROM players")[0][0]

    result = inject("data-loss", database, app_dir)

    assert result.returncode == 0, result.stderr
    rooms_after = database_rows(database, "SELECT count(*) FROM game_rooms")[0][0]
    players_after = database_rows(database, "SELECT count(*) FROM players")[0][0]
    assert rooms_after <= 0.2 * rooms_before
    assert players_after <= 0.2 * players_before
    downgrade = run_cli("migrate", "--db", database, "--app-dir", app_dir, "-1")
    assert downgrade.returncode == 0, downgrade.stderr
    assert database_rows(database, "SELECT count(*) FROM game_rooms")[0][0] == rooms_after


def test_drop_index_turns_room_lookups_into_scans(database: Path, app_dir: Path) -> None:
    seed(database, rooms=50, players=100)
    assert "USING INDEX ix_game_room_participants_room_id" in str(database_rows(database, ROOM_LOOKUP_PLAN))

    result = inject("drop-index", database, app_dir)

    assert result.returncode == 0, result.stderr
    assert database_revision(database) == FAULT_REVISIONS["drop-index"]
    assert (
        database_rows(database, "SELECT name FROM sqlite_master WHERE name = 'ix_game_room_participants_room_id'") == []
    )
    assert database_rows(database, ROOM_LOOKUP_PLAN)[0][-1] == "SCAN game_room_participants"
    downgrade = run_cli("migrate", "--db", database, "--app-dir", app_dir, "-1")
    assert downgrade.returncode == 0, downgrade.stderr
    assert "USING INDEX ix_game_room_participants_room_id" in str(database_rows(database, ROOM_LOOKUP_PLAN))


def test_bad_downgrade_upgrades_cleanly_and_cannot_be_rolled_back(database: Path, app_dir: Path) -> None:
    result = inject("bad-downgrade", database, app_dir)
    assert result.returncode == 0, result.stderr
    assert database_revision(database) == FAULT_REVISIONS["bad-downgrade"]

    downgrade = run_cli("migrate", "--db", database, "--app-dir", app_dir, "-1")

    assert downgrade.returncode == 3
    assert "no such index: ix_players_last_seen" in downgrade.stderr
    assert database_revision(database) == FAULT_REVISIONS["bad-downgrade"]


def test_corrupt_fails_integrity_check_and_health(service: ExampleService, database: Path) -> None:
    seed(database, rooms=2000, players=100)
    code = database_rows(database, "SELECT code FROM game_rooms ORDER BY id DESC LIMIT 1")[0][0]

    result = run_cli("fault", "corrupt", "--db", database)

    assert result.returncode == 0, result.stderr
    for check in ("PRAGMA integrity_check", "PRAGMA quick_check"):
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            database_rows(database, check)
    health = service.client().get("/health")
    assert health.status_code == 503
    assert "malformed" in health.json()["reason"]
    assert service.client().get(f"/api/rooms/{code}").status_code == 503


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_lock_holds_the_write_lock_until_it_exits(database: Path, journal_mode: str) -> None:
    database_rows(database, f"PRAGMA journal_mode = {journal_mode}")
    holder = subprocess.Popen(
        [*VBRPG_EXAMPLE, "fault", "lock", "--db", str(database), "--seconds", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        announcement = holder.stdout.readline() if holder.stdout else ""
        assert f"pid {holder.pid} holding the write lock" in announcement, holder.stderr and holder.stderr.read()
        contender = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                contender.execute("BEGIN IMMEDIATE")
            assert contender.execute("SELECT count(*) FROM game_rooms").fetchone() == (0,)  # readers still read

            holder.send_signal(signal.SIGTERM)  # ends the hold early, releasing cleanly
            assert holder.wait(30) == 0
            contender.execute("BEGIN IMMEDIATE")
            contender.execute("ROLLBACK")
        finally:
            contender.close()
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate()
    assert database_rows(database, "SELECT name FROM sqlite_master WHERE name LIKE 'vbrpg_example_lock%'") == []


def test_kill_takes_the_service_down(service: ExampleService) -> None:
    assert service.pidfile is not None
    pid = int(service.pidfile.read_text())

    result = run_cli("fault", "kill", "--pidfile", service.pidfile)

    assert result.returncode == 0, result.stderr
    assert process_gone(pid)
    assert service.process.wait(10) == -signal.SIGKILL
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.base_url}/health", timeout=5)
    again = run_cli("fault", "kill", "--pidfile", service.pidfile)
    assert again.returncode == 5
    assert "no running vbrpg-example service" in again.stderr


def test_reset_removes_exactly_the_fault_scripts(database: Path, app_dir: Path) -> None:
    clean = script_names(app_dir)
    inject("drop-index", database, app_dir)
    # A script the team wrote, without the fault marker, must survive the reset.
    own_script = app_dir / "alembic" / "versions" / "0a1b2c3d4e5f_team_change.py"
    own_script.write_text('"""A change of the team\'s own."""\n')

    result = run_cli("fault", "reset", "--app-dir", app_dir)

    assert result.returncode == 0, result.stderr
    assert script_names(app_dir) == clean | {own_script.name}
    assert "1 fault script(s) removed" in result.stdout


def test_faults_refuse_without_an_app_dir_and_never_touch_the_template(database: Path) -> None:
    template = Path(str(files("vbrpg_example") / "template"))
    scripts_before = script_names(template)

    without = run_cli("fault", "drop-index", "--db", database)
    into_template = run_cli("fault", "drop-index", "--db", database, "--app-dir", template)

    assert without.returncode == into_template.returncode == 2
    assert "--app-dir" in without.stderr
    assert "packaged template" in into_template.stderr
    assert script_names(template) == scripts_before
    assert database_revision(database) == CLEAN_HEAD
