"""What players do with rooms: create, join, leave, add and remove AI agents, delete; and remove a player.

Each function works inside the caller's session and transaction; the write functions expect the write lock
(`Database.writing`), which makes their check-then-insert steps race-free under SQLite.
"""

import secrets
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vbrpg_example.models import DEFAULT_MAX_PLAYERS, GameRoom, GameRoomParticipant, Player

# No 0/O or 1/I: codes are read aloud and typed by players.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
_CODE_ATTEMPTS = 20


class RoomError(Exception):
    """A request that the room's state does not allow."""


class RoomNotFound(RoomError):
    """No room has this code."""


class ParticipantNotFound(RoomError):
    """The room has no such player or agent."""


class RoomConflict(RoomError):
    """The room is full, the player is already seated, or the code is taken."""


class PlayerNotFound(RoomError):
    """No player has this name."""


@dataclass(frozen=True)
class Seat:
    """A participant as the API shows it, with the player's name resolved."""

    participant: GameRoomParticipant
    player_name: str | None


def new_room_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def find_room(session: Session, code: str) -> GameRoom:
    """Return the room with `code`. Raise RoomNotFound."""
    room = session.scalars(select(GameRoom).where(GameRoom.code == code.upper())).one_or_none()
    if room is None:
        raise RoomNotFound(f"room {code} not found")
    return room


def list_seats(session: Session, room: GameRoom) -> list[Seat]:
    """Return the room's participants in joining order.

    The `WHERE room_id = ?` lookup is the query the runbook's Scenario 4 watches: it uses
    ix_game_room_participants_room_id, and scans the whole table without it.
    """
    rows = session.execute(
        select(GameRoomParticipant, Player.name)
        .outerjoin(Player, Player.id == GameRoomParticipant.player_id)
        .where(GameRoomParticipant.room_id == room.id)
        .order_by(GameRoomParticipant.id)
    ).all()
    return [Seat(participant, player_name) for participant, player_name in rows]


def create_room(
    session: Session,
    name: str,
    host_name: str,
    max_players: int = DEFAULT_MAX_PLAYERS,
    code: str | None = None,
) -> GameRoom:
    """Create a room with the host seated in it. Raise RoomConflict if the asked-for code is taken."""
    if code is not None:
        code = code.upper()
        if _code_taken(session, code):
            raise RoomConflict(f"room code {code} is taken")
    else:
        code = _free_code(session)
    room = GameRoom(code=code, name=name, max_players=max_players, status="waiting")
    session.add(room)
    session.flush()
    host = _player_named(session, host_name)
    session.add(GameRoomParticipant(room_id=room.id, player_id=host.id, is_host=True, is_ai=False))
    session.flush()
    return room


def join_room(session: Session, code: str, player_name: str) -> Seat:
    """Seat the named player (created on first sight). Raise RoomNotFound or RoomConflict."""
    room = find_room(session, code)
    player = _player_named(session, player_name)
    seated = session.scalars(
        select(GameRoomParticipant.id).where(
            GameRoomParticipant.player_id == player.id, GameRoomParticipant.room_id == room.id
        )
    ).first()
    if seated is not None:
        raise RoomConflict(f"{player_name} is already in room {room.code}")
    _ensure_free_seat(session, room)
    participant = GameRoomParticipant(room_id=room.id, player_id=player.id, is_host=False, is_ai=False)
    session.add(participant)
    session.flush()
    return Seat(participant, player.name)


def leave_room(session: Session, code: str, player_name: str) -> str | None:
    """Unseat the named player; if they hosted, the longest-seated human becomes host.

    Return the host's name afterwards (None if no human is left). Raise RoomNotFound or ParticipantNotFound.
    """
    room = find_room(session, code)
    participant = session.scalars(
        select(GameRoomParticipant)
        .join(Player, Player.id == GameRoomParticipant.player_id)
        .where(GameRoomParticipant.room_id == room.id, Player.name == player_name)
    ).one_or_none()
    if participant is None:
        raise ParticipantNotFound(f"{player_name} is not in room {room.code}")
    was_host = participant.is_host
    session.delete(participant)
    session.flush()
    humans = [seat for seat in list_seats(session, room) if not seat.participant.is_ai]
    if was_host and humans:
        humans[0].participant.is_host = True
    return next((seat.player_name for seat in humans if seat.participant.is_host), None)


def add_agent(session: Session, code: str, agent_name: str | None = None) -> Seat:
    """Seat an AI agent. Raise RoomNotFound or RoomConflict (game started, room full)."""
    room = find_room(session, code)
    seats_taken = _ensure_free_seat(session, room)
    participant = GameRoomParticipant(
        room_id=room.id,
        player_id=None,
        is_host=False,
        is_ai=True,
        agent_name=agent_name or f"AI-{seats_taken + 1}",
    )
    session.add(participant)
    session.flush()
    return Seat(participant, None)


def remove_agent(session: Session, code: str, agent_id: int | None = None) -> Seat:
    """Unseat the AI agent `agent_id`, or the most recently added one.

    Raise RoomNotFound or ParticipantNotFound.
    """
    room = find_room(session, code)
    query = select(GameRoomParticipant).where(
        GameRoomParticipant.room_id == room.id, GameRoomParticipant.is_ai.is_(True)
    )
    if agent_id is not None:
        query = query.where(GameRoomParticipant.id == agent_id)
    agent = session.scalars(query.order_by(GameRoomParticipant.id.desc()).limit(1)).first()
    if agent is None:
        wanted = f"AI agent {agent_id}" if agent_id is not None else "an AI agent"
        raise ParticipantNotFound(f"room {room.code} has no {wanted}")
    session.delete(agent)
    session.flush()
    return Seat(agent, None)


def delete_room(session: Session, code: str) -> int:
    """Delete the room and its participants; return how many participants went with it. Raise RoomNotFound."""
    room = find_room(session, code)
    removed = session.execute(delete(GameRoomParticipant).where(GameRoomParticipant.room_id == room.id))
    session.delete(room)
    session.flush()
    return int(removed.rowcount)  # type: ignore[attr-defined]


def remove_player(session: Session, name: str) -> None:
    """Delete the player called `name` (a smoke test's throwaway player, a departed user). Raise PlayerNotFound,
    or RoomConflict while they are still seated in a room (leave it, or delete the room, first)."""
    player = session.scalars(select(Player).where(Player.name == name)).one_or_none()
    if player is None:
        raise PlayerNotFound(f"player {name} not found")
    seated = session.scalars(
        select(GameRoom.code)
        .join(GameRoomParticipant, GameRoomParticipant.room_id == GameRoom.id)
        .where(GameRoomParticipant.player_id == player.id)
    ).first()
    if seated is not None:
        raise RoomConflict(f"{name} is still seated in room {seated}")
    session.delete(player)
    session.flush()


def _player_named(session: Session, name: str) -> Player:
    player = session.scalars(select(Player).where(Player.name == name)).one_or_none()
    if player is None:
        player = Player(name=name)
        session.add(player)
        session.flush()
    return player


def _ensure_free_seat(session: Session, room: GameRoom) -> int:
    """Return how many seats are taken. Raise RoomConflict if the game has started or no seat is free."""
    if room.status != "waiting":
        raise RoomConflict(f"room {room.code} is {room.status}, not waiting for players")
    taken = session.scalar(
        select(func.count()).select_from(GameRoomParticipant).where(GameRoomParticipant.room_id == room.id)
    )
    taken = int(taken or 0)
    if taken >= room.max_players:
        raise RoomConflict(f"room {room.code} is full ({taken}/{room.max_players})")
    return taken


def _code_taken(session: Session, code: str) -> bool:
    return session.scalar(select(GameRoom.id).where(GameRoom.code == code)) is not None


def _free_code(session: Session) -> str:
    for _ in range(_CODE_ATTEMPTS):
        code = new_room_code()
        if not _code_taken(session, code):
            return code
    raise RoomConflict(f"no free room code after {_CODE_ATTEMPTS} attempts")
