"""Give rooms a status (waiting, playing, finished) and a seat limit.

The downgrade drops the columns with SQLite's own ALTER TABLE DROP COLUMN, not batch mode: batch mode
would copy game_rooms and drop the old table, and with foreign keys on that DROP is an implicit DELETE
that cascades to every participant.

Revision ID: e6093b7a4c18
Revises: 1c8f4a6e2d95
Create Date: 2025-11-04 10:27:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "e6093b7a4c18"
down_revision: str | Sequence[str] | None = "1c8f4a6e2d95"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("game_rooms", sa.Column("status", sa.String(length=16), server_default="waiting", nullable=False))
    op.add_column("game_rooms", sa.Column("max_players", sa.Integer(), server_default="8", nullable=False))


def downgrade() -> None:
    op.drop_column("game_rooms", "max_players")
    op.drop_column("game_rooms", "status")
