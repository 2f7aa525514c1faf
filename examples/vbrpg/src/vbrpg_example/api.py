"""The rooms API: the runbook's "core functionality" checklist, one endpoint per step.

Handlers are plain functions (FastAPI runs them in its thread pool) because the database work is blocking
SQLite I/O; the chaos delay, when enabled, is awaited before a handler runs. Room errors become 404/409
answers in `app.py`, so the handlers read as the happy path.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, status

from vbrpg_example import rooms
from vbrpg_example.database import Database
from vbrpg_example.models import GameRoom
from vbrpg_example.schemas import (
    AddAgent,
    CreateRoom,
    DeleteResult,
    LeaveResult,
    ParticipantView,
    PlayerAction,
    PlayerRemoved,
    RoomView,
)


def build_rooms_router(database: Database, before_request: Callable[[], Awaitable[None]]) -> APIRouter:
    """Return the /api/rooms routes bound to `database`; `before_request` runs first (the chaos delay)."""
    router = APIRouter(prefix="/api/rooms", tags=["rooms"], dependencies=[Depends(before_request)])

    @router.post("", status_code=status.HTTP_201_CREATED)
    def create_room(request: CreateRoom) -> RoomView:
        with database.writing() as session:
            room = rooms.create_room(session, request.name, request.host_name, request.max_players, request.code)
            return _room_view(room, rooms.list_seats(session, room))

    @router.get("/{code}")
    def get_room(code: str) -> RoomView:
        with database.reading() as session:
            room = rooms.find_room(session, code)
            return _room_view(room, rooms.list_seats(session, room))

    @router.post("/{code}/join", status_code=status.HTTP_201_CREATED)
    def join_room(code: str, request: PlayerAction) -> ParticipantView:
        with database.writing() as session:
            return ParticipantView.of(rooms.join_room(session, code, request.player_name))

    @router.post("/{code}/leave")
    def leave_room(code: str, request: PlayerAction) -> LeaveResult:
        with database.writing() as session:
            host = rooms.leave_room(session, code, request.player_name)
            return LeaveResult(code=code.upper(), left=request.player_name, host=host)

    @router.post("/{code}/agents", status_code=status.HTTP_201_CREATED)
    def add_agent(code: str, request: Annotated[AddAgent | None, Body()] = None) -> ParticipantView:
        agent_name = request.agent_name if request is not None else None
        with database.writing() as session:
            return ParticipantView.of(rooms.add_agent(session, code, agent_name))

    @router.delete("/{code}/agents")
    def remove_agent(code: str, agent_id: int | None = None) -> ParticipantView:
        with database.writing() as session:
            return ParticipantView.of(rooms.remove_agent(session, code, agent_id))

    @router.delete("/{code}")
    def delete_room(code: str) -> DeleteResult:
        with database.writing() as session:
            removed = rooms.delete_room(session, code)
            return DeleteResult(code=code.upper(), participants_removed=removed)

    return router


def _room_view(room: GameRoom, seats: list[rooms.Seat]) -> RoomView:
    return RoomView(
        code=room.code,
        name=room.name,
        status=room.status,
        max_players=room.max_players,
        created_at=room.created_at,
        participants=[ParticipantView.of(seat) for seat in seats],
    )


def build_players_router(database: Database, before_request: Callable[[], Awaitable[None]]) -> APIRouter:
    """Return the /api/players routes: removing a player, so a smoke test can leave no rows behind."""
    router = APIRouter(prefix="/api/players", tags=["players"], dependencies=[Depends(before_request)])

    @router.delete("/{name}")
    def remove_player(name: str) -> PlayerRemoved:
        with database.writing() as session:
            rooms.remove_player(session, name)
            return PlayerRemoved(name=name)

    return router
