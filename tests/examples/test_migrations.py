"""The clean migrations: the runbook's "test rollback" drill keeps the data, plain alembic works on an
init-app dir, and `migrate` works out the direction by itself."""

import os
import subprocess
import sys
from pathlib import Path

from tests.support.vbrpg_service import CLEAN_HEAD, CLEAN_REVISIONS, database_revision, database_rows, run_cli

ALEMBIC = (sys.executable, "-m", "alembic")


def alembic(
    app_dir: Path, *arguments: str, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run plain `alembic -c APP_DIR/alembic.ini ARGUMENTS` from the app dir, as the runbook does."""
    return subprocess.run(
        [*ALEMBIC, "-c", str(app_dir / "alembic.ini"), *arguments],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(environment or {})},
    )


def seeded_rows(database: Path) -> list[tuple[object, ...]]:
    return database_rows(
        database,
        "SELECT r.code, p.name, s.is_host FROM game_room_participants s "
        "JOIN game_rooms r ON r.id = s.room_id JOIN players p ON p.id = s.player_id ORDER BY s.id",
    )


def test_upgrade_downgrade_one_upgrade_keeps_the_data(tmp_path: Path) -> None:
    database = tmp_path / "vbrpg.db"
    app_dir = tmp_path / "app"
    assert run_cli("init-app", app_dir, "--db", database).returncode == 0
    assert alembic(app_dir, "upgrade", "head").returncode == 0
    assert (
        run_cli(
            "seed",
            "--db",
            database,
            "--rooms",
            "20",
            "--players",
            "30",
            "--participants-per-room",
            "3",
            "--agents-per-room",
            "1",
        ).returncode
        == 0
    )
    before = seeded_rows(database)

    for step in (("downgrade", "-1"), ("upgrade", "head")):
        result = alembic(app_dir, *step)
        assert result.returncode == 0, result.stderr

    assert database_revision(database) == CLEAN_HEAD
    assert seeded_rows(database) == before
    assert database_rows(database, "SELECT count(*) FROM game_room_participants WHERE is_ai = 1") == [(20,)]
    assert database_rows(database, "PRAGMA foreign_key_check") == []


def test_every_downgrade_step_keeps_rooms_players_and_human_seats(database: Path, app_dir: Path) -> None:
    assert (
        run_cli(
            "seed",
            "--db",
            database,
            "--rooms",
            "10",
            "--players",
            "10",
            "--participants-per-room",
            "2",
            "--agents-per-room",
            "2",
        ).returncode
        == 0
    )
    before = seeded_rows(database)

    for expected in reversed(CLEAN_REVISIONS[1:-1]):
        result = run_cli("migrate", "--db", database, "--app-dir", app_dir, "-1")
        assert result.returncode == 0, result.stderr
        assert database_revision(database) == expected
        assert seeded_rows(database) == before
    result = run_cli("migrate", "--db", database, "--app-dir", app_dir)

    assert result.returncode == 0, result.stderr
    assert database_revision(database) == CLEAN_HEAD
    assert seeded_rows(database) == before
    assert database_rows(database, "SELECT name FROM sqlite_master WHERE name = 'ix_game_room_participants_room_id'")


def test_migrate_to_a_revision_goes_down_or_up_as_needed(database: Path, app_dir: Path) -> None:
    down = run_cli("migrate", "--db", database, "--app-dir", app_dir, CLEAN_REVISIONS[1])
    assert down.returncode == 0, down.stderr
    assert database_revision(database) == CLEAN_REVISIONS[1]

    up = run_cli("migrate", "--db", database, "--app-dir", app_dir, CLEAN_REVISIONS[2])
    assert up.returncode == 0, up.stderr
    assert database_revision(database) == CLEAN_REVISIONS[2]

    to_base = run_cli("migrate", "--db", database, "--app-dir", app_dir, "base")
    assert to_base.returncode == 0, to_base.stderr
    assert database_revision(database) is None


def test_env_py_takes_the_database_from_x_before_vbrpg_db(tmp_path: Path, app_dir: Path) -> None:
    from_x, from_environment = tmp_path / "from-x.db", tmp_path / "from-env.db"

    by_x = alembic(app_dir, "-x", f"db={from_x}", "upgrade", "head", environment={"VBRPG_DB": str(from_environment)})
    by_environment = alembic(app_dir, "upgrade", "+1", environment={"VBRPG_DB": str(from_environment)})

    assert by_x.returncode == 0 and by_environment.returncode == 0, by_x.stderr + by_environment.stderr
    assert database_revision(from_x) == CLEAN_HEAD
    assert database_revision(from_environment) == CLEAN_REVISIONS[0]


def test_journal_mode_of_a_new_database_can_be_a_rollback_journal(tmp_path: Path, template_app_dir: Path) -> None:
    database = tmp_path / "journal.db"

    result = run_cli("migrate", "--db", database, "--app-dir", template_app_dir, "--journal-mode", "delete")

    assert result.returncode == 0, result.stderr
    assert database_rows(database, "PRAGMA journal_mode") == [("delete",)]


def test_migrate_without_app_dir_uses_the_packaged_scripts(tmp_path: Path) -> None:
    database = tmp_path / "packaged.db"

    result = run_cli("migrate", "--db", database)

    assert result.returncode == 0, result.stderr
    assert database_revision(database) == CLEAN_HEAD
