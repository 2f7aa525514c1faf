"""Seat AI agents: participants get is_ai and agent_name, and player_id becomes optional.

SQLite cannot relax NOT NULL in place, so Alembic's batch mode copies the table; nothing references
game_room_participants, so dropping the old copy (an implicit DELETE with foreign keys on) is safe.
The downgrade removes the AI agents' seats (they have no player to keep) and keeps every human seat.

Revision ID: 1c8f4a6e2d95
Revises: 7b15d08e3f62
Create Date: 2025-10-21 11:02:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "1c8f4a6e2d95"
down_revision: str | Sequence[str] | None = "7b15d08e3f62"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("game_room_participants") as batch:
        batch.add_column(sa.Column("is_ai", sa.Boolean(), server_default="0", nullable=False))
        batch.add_column(sa.Column("agent_name", sa.String(length=40), nullable=True))
        batch.alter_column("player_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM game_room_participants WHERE is_ai = 1 OR player_id IS NULL")
    with op.batch_alter_table("game_room_participants") as batch:
        batch.alter_column("player_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("agent_name")
        batch.drop_column("is_ai")
