"""Request and response bodies of the rooms API, validated at the edge so the room logic sees clean values."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from vbrpg_example.models import DEFAULT_MAX_PLAYERS
from vbrpg_example.rooms import Seat

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
RoomName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
RoomCode = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z0-9]{6}$")]


class CreateRoom(BaseModel):
    name: RoomName
    host_name: Name
    max_players: int = Field(default=DEFAULT_MAX_PLAYERS, ge=2, le=64)
    code: RoomCode | None = None


class PlayerAction(BaseModel):
    player_name: Name


class AddAgent(BaseModel):
    agent_name: Name | None = None


class ParticipantView(BaseModel):
    id: int
    is_ai: bool
    is_host: bool
    player_name: str | None
    agent_name: str | None
    joined_at: datetime

    @classmethod
    def of(cls, seat: Seat) -> "ParticipantView":
        participant = seat.participant
        return cls(
            id=participant.id,
            is_ai=participant.is_ai,
            is_host=participant.is_host,
            player_name=seat.player_name,
            agent_name=participant.agent_name,
            joined_at=participant.joined_at,
        )


class RoomView(BaseModel):
    code: str
    name: str
    status: str
    max_players: int
    created_at: datetime
    participants: list[ParticipantView]


class LeaveResult(BaseModel):
    code: str
    left: str
    host: str | None


class DeleteResult(BaseModel):
    code: str
    participants_removed: int


class PlayerRemoved(BaseModel):
    name: str
