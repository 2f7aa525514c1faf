"""Create game_room_participants, with the room_id index that room lookups use.

Revision ID: 7b15d08e3f62
Revises: 4e2a9c71b0d3
Create Date: 2025-10-09 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7b15d08e3f62"
down_revision: str | Sequence[str] | None = "4e2a9c71b0d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "game_room_participants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("player_id", sa.Integer(), nullable=False),
        sa.Column("is_host", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("joined_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["game_rooms.id"],
            name="fk_game_room_participants_room_id_game_rooms",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["player_id"], ["players.id"], name="fk_game_room_participants_player_id_players"),
        sa.PrimaryKeyConstraint("id", name="pk_game_room_participants"),
    )
    op.create_index("ix_game_room_participants_room_id", "game_room_participants", ["room_id"])
    op.create_index(
        "ix_game_room_participants_player_id_room_id",
        "game_room_participants",
        ["player_id", "room_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_game_room_participants_player_id_room_id", table_name="game_room_participants")
    op.drop_index("ix_game_room_participants_room_id", table_name="game_room_participants")
    op.drop_table("game_room_participants")
