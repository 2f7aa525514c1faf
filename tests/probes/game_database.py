"""A small database with the runbook's tables, made with plain sqlite3 (the example service makes the real one)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

SCHEMA = """
CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);
CREATE TABLE players (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE game_rooms (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL);
CREATE TABLE game_room_participants (
    id INTEGER PRIMARY KEY,
    room_id INTEGER NOT NULL REFERENCES game_rooms (id),
    player_id INTEGER NOT NULL REFERENCES players (id),
    is_ai BOOLEAN NOT NULL DEFAULT 0
);
CREATE INDEX ix_game_room_participants_room_id ON game_room_participants (room_id);
"""


def make_game_database(path: Path, *, revision: str = "7b15d08e3f62", rooms: int = 50, mode: str = "wal") -> Path:
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(f"PRAGMA journal_mode={mode}")
        connection.executescript(SCHEMA)
        connection.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        for room in range(rooms):
            connection.execute("INSERT INTO players (id, name) VALUES (?, ?)", (room + 1, f"player-{room}" * 4))
            connection.execute(
                "INSERT INTO game_rooms (id, code, name) VALUES (?, ?, ?)", (room + 1, f"R{room:05d}", "room " * 20)
            )
            connection.execute(
                "INSERT INTO game_room_participants (room_id, player_id) VALUES (?, ?)", (room + 1, room + 1)
            )
        connection.commit()
    return path


def execute(path: Path, *statements: str) -> None:
    """Run statements on a read-write connection with foreign keys off (as a careless migration would)."""
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA foreign_keys = OFF")
        for statement in statements:
            connection.execute(statement)
        connection.commit()
