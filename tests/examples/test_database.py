"""The service's SQLite connections: foreign keys enforced, WAL by default, a missing file never created."""

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.support.vbrpg_service import database_rows
from vbrpg_example.database import Database
from vbrpg_example.sqlite_connection import DatabaseMissing, connect


def test_migrated_database_is_in_wal_mode(database: Path) -> None:
    assert database_rows(database, "PRAGMA journal_mode") == [("wal",)]


def test_service_connections_enforce_foreign_keys(database: Path) -> None:
    pool = Database(database, busy_timeout_seconds=1.0)
    try:
        with pytest.raises(IntegrityError, match="FOREIGN KEY constraint failed"), pool.writing() as session:
            session.execute(text("INSERT INTO game_room_participants (room_id, player_id) VALUES (999, 999)"))
    finally:
        pool.dispose()

    assert database_rows(database, "SELECT count(*) FROM game_room_participants") == [(0,)]


def test_write_transactions_take_the_write_lock_up_front(database: Path) -> None:
    pool = Database(database, busy_timeout_seconds=0.0)
    other = connect(database, busy_timeout_seconds=0.0)
    try:
        with pool.writing() as session:
            session.execute(text("SELECT count(*) FROM game_rooms"))  # a read, yet the lock is taken
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
        pool.dispose()


def test_a_missing_database_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"

    with pytest.raises(DatabaseMissing):
        connect(missing)

    assert not missing.exists()
