# vbrpg-example fault: drop-index (Scenario 4). `vbrpg-example fault reset` removes this file.
"""Drop ix_game_room_participants_room_id as redundant with the (player_id, room_id) unique index.

The bug: a composite index serves lookups on its leading column only; room_id is its second column, so
`WHERE room_id = ?` (every GET /api/rooms/{code}) now scans the whole participants table.

Revision ID: 2d6f8a0c4e19
Revises: (the app dir's head when injected)
Create Date: 2025-11-14 13:30:00
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "2d6f8a0c4e19"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_game_room_participants_room_id", table_name="game_room_participants")


def downgrade() -> None:
    op.create_index("ix_game_room_participants_room_id", "game_room_participants", ["room_id"])
