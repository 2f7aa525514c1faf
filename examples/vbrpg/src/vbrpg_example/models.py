"""The game's tables as the code at head expects them; the migrations build the same schema step by step.

Constraint names follow one convention so that Alembic's batch mode (SQLite's copy-and-move ALTER) can find
and recreate them, and so that the runbook's `ix_game_room_participants_room_id` has a predictable name.
"""

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, MetaData, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEFAULT_MAX_PLAYERS = 8
_EAGER_DEFAULTS = {"eager_defaults": True}


class Base(DeclarativeBase):
    """Declarative base; every model fetches its server defaults (created_at, status) on INSERT via
    RETURNING, so a new row is complete without a second query."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Player(Base):
    """A human player, known by a unique name (the example has no accounts)."""

    __tablename__ = "players"
    __mapper_args__ = _EAGER_DEFAULTS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.current_timestamp())


class GameRoom(Base):
    """A room players join by its six-character code."""

    __tablename__ = "game_rooms"
    __mapper_args__ = _EAGER_DEFAULTS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(6), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.current_timestamp())
    status: Mapped[str] = mapped_column(String(16), server_default="waiting")
    max_players: Mapped[int] = mapped_column(Integer, server_default=str(DEFAULT_MAX_PLAYERS))


class GameRoomParticipant(Base):
    """A seat in a room: a human player (player_id set) or an AI agent (is_ai, agent_name, no player)."""

    __tablename__ = "game_room_participants"
    __mapper_args__ = _EAGER_DEFAULTS
    __table_args__ = (
        # Looking up a room's participants is the hot path the runbook's Scenario 4 is about.
        Index("ix_game_room_participants_room_id", "room_id"),
        # One seat per player per room; player_id leads, so this index does not serve room lookups.
        Index("ix_game_room_participants_player_id_room_id", "player_id", "room_id", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("game_rooms.id", ondelete="CASCADE"))
    player_id: Mapped[int | None] = mapped_column(ForeignKey("players.id"))
    is_host: Mapped[bool] = mapped_column(Boolean, server_default="0")
    joined_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.current_timestamp())
    is_ai: Mapped[bool] = mapped_column(Boolean, server_default="0")
    agent_name: Mapped[str | None] = mapped_column(String(40))
