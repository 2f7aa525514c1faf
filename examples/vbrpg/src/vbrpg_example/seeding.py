"""Bulk data for demos and latency measurements: a million participants in seconds.

Rows go in with executemany in one write transaction on the raw driver (no ORM objects), with explicit
ids taken under the write lock so participants can reference rows of the same batch. Foreign keys stay on.
"""

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vbrpg_example.errors import UsageError
from vbrpg_example.models import DEFAULT_MAX_PLAYERS
from vbrpg_example.rooms import new_room_code
from vbrpg_example.sqlite_connection import connect


class SeedError(UsageError):
    """The requested shape cannot be seeded."""


@dataclass(frozen=True)
class TableCounts:
    players: int
    rooms: int
    participants: int
    agents: int

    def __str__(self) -> str:
        return (
            f"players={self.players} rooms={self.rooms} participants={self.participants} "
            f"(of which AI agents={self.agents})"
        )


def count_rows(connection: sqlite3.Connection) -> TableCounts:
    def scalar(query: str) -> int:
        return int(connection.execute(query).fetchone()[0])

    return TableCounts(
        players=scalar("SELECT count(*) FROM players"),
        rooms=scalar("SELECT count(*) FROM game_rooms"),
        participants=scalar("SELECT count(*) FROM game_room_participants"),
        agents=scalar("SELECT count(*) FROM game_room_participants WHERE is_ai = 1"),
    )


def seed(
    database_path: Path,
    rooms: int,
    players: int,
    participants_per_room: int = 0,
    agents_per_room: int = 0,
) -> tuple[TableCounts, TableCounts]:
    """Add `players` players and `rooms` rooms, each seating `participants_per_room` of the new players
    (the first one hosts) and `agents_per_room` AI agents. Return (rows added, rows now in the tables).

    Raise SeedError for an impossible shape, sqlite3.Error if the schema is not at head.
    """
    if min(rooms, players, participants_per_room, agents_per_room) < 0:
        raise SeedError("counts must not be negative")
    if participants_per_room > players and rooms > 0:
        raise SeedError(f"cannot seat {participants_per_room} distinct players per room out of {players}")
    connection = connect(database_path)
    try:
        connection.execute("BEGIN IMMEDIATE")
        first_player = _next_id(connection, "players")
        first_room = _next_id(connection, "game_rooms")
        taken_codes = {row[0] for row in connection.execute("SELECT code FROM game_rooms")}
        connection.executemany(
            "INSERT INTO players (id, name) VALUES (?, ?)",
            ((first_player + index, f"player-{first_player + index:07d}") for index in range(players)),
        )
        seats = participants_per_room + agents_per_room
        capacity = max(DEFAULT_MAX_PLAYERS, seats)
        connection.executemany(
            "INSERT INTO game_rooms (id, code, name, status, max_players) VALUES (?, ?, ?, 'waiting', ?)",
            (
                (first_room + index, _unused_code(taken_codes), f"room-{first_room + index:07d}", capacity)
                for index in range(rooms)
            ),
        )
        connection.executemany(
            "INSERT INTO game_room_participants (room_id, player_id, is_host, is_ai) VALUES (?, ?, ?, 0)",
            _human_seats(first_room, rooms, first_player, players, participants_per_room),
        )
        connection.executemany(
            "INSERT INTO game_room_participants (room_id, is_ai, agent_name) VALUES (?, 1, ?)",
            _agent_seats(first_room, rooms, participants_per_room, agents_per_room),
        )
        connection.execute("COMMIT")
        added = TableCounts(players, rooms, rooms * seats, rooms * agents_per_room)
        return added, count_rows(connection)
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    finally:
        connection.close()


def _next_id(connection: sqlite3.Connection, table: str) -> int:
    row = connection.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()  # noqa: S608 - fixed names
    return int(row[0])


def _unused_code(taken: set[str]) -> str:
    code = new_room_code()
    while code in taken:
        code = new_room_code()
    taken.add(code)
    return code


def _human_seats(
    first_room: int, rooms: int, first_player: int, players: int, per_room: int
) -> Iterator[tuple[int, int, int]]:
    """Seat players round-robin: room r gets players r*K .. r*K+K-1 (mod players), distinct within a room."""
    for room_index in range(rooms):
        for seat in range(per_room):
            player_index = (room_index * per_room + seat) % players
            yield first_room + room_index, first_player + player_index, int(seat == 0)


def _agent_seats(first_room: int, rooms: int, humans: int, per_room: int) -> Iterator[tuple[int, str]]:
    for room_index in range(rooms):
        for seat in range(per_room):
            yield first_room + room_index, f"AI-{humans + seat + 1}"
