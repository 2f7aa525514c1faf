"""Read-only questions to a real SQLite file."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from rollbackd.target.database import (
    SCAN_CACHE_KIB,
    DatabaseUnavailable,
    connect_readonly,
    count_rows,
    index_names,
    read_revision,
    schema_fingerprint,
)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "vbrpg.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(
            """
            CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);
            INSERT INTO alembic_version VALUES ('a1b2c3d4e5f6');
            CREATE TABLE players (id INTEGER PRIMARY KEY, name TEXT UNIQUE);
            CREATE INDEX ix_players_name ON players (name);
            INSERT INTO players (name) VALUES ('ann'), ('bob');
            """
        )
    connection.close()
    return path


def test_reads_revision_counts_and_indexes(database: Path) -> None:
    connection = connect_readonly(database)
    assert read_revision(connection) == "a1b2c3d4e5f6"
    assert count_rows(connection, ["players", "game_rooms"]) == {"players": 2, "game_rooms": None}
    assert index_names(connection) == {"ix_players_name"}
    connection.close()


def test_readonly_connection_cannot_write(database: Path) -> None:
    connection = connect_readonly(database)
    with pytest.raises(sqlite3.OperationalError):
        connection.execute("DELETE FROM players")
    connection.close()


def test_a_scanning_connection_has_the_small_page_cache_and_others_sqlites_default(database: Path) -> None:
    with closing(sqlite3.connect(database)) as plain:
        default = plain.execute("PRAGMA cache_size").fetchone()[0]
    with closing(connect_readonly(database, cache_kib=SCAN_CACHE_KIB)) as scanning:
        assert scanning.execute("PRAGMA cache_size").fetchone()[0] == -SCAN_CACHE_KIB != default
        assert count_rows(scanning, ["players"]) == {"players": 2}
    with closing(connect_readonly(database)) as connection:
        assert connection.execute("PRAGMA cache_size").fetchone()[0] == default


def test_missing_database_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        connect_readonly(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_fingerprint_changes_with_schema_only(database: Path) -> None:
    def fingerprint() -> str:
        with closing(connect_readonly(database)) as connection:
            return schema_fingerprint(connection)

    before = fingerprint()
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO players (name) VALUES ('cy')")
    connection.close()
    assert fingerprint() == before
    with sqlite3.connect(database) as connection:
        connection.execute("DROP INDEX ix_players_name")
    connection.close()
    assert fingerprint() != before


def test_unversioned_database_has_no_revision(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
    connection.close()
    with closing(connect_readonly(path)) as connection:
        assert read_revision(connection) is None
