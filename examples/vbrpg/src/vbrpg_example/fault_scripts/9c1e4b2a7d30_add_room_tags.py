# vbrpg-example fault: fk-violation (Scenario 1). `vbrpg-example fault reset` removes this file.
"""Add room tags, tag open rooms, and feature the lobby room.

The bug: the lobby has id 0 in the developers' fixtures and does not exist in production, so the last
insert breaks the foreign key and the upgrade fails with
`sqlalchemy.exc.IntegrityError: (sqlite3.IntegrityError) FOREIGN KEY constraint failed`.
The CREATE TABLE and CREATE INDEX before it are not rolled back (SQLite DDL runs outside the migration's
transaction here): room_tags stays behind, empty, while alembic_version keeps the previous revision.

Revision ID: 9c1e4b2a7d30
Revises: (the app dir's head when injected)
Create Date: 2025-11-08 17:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "9c1e4b2a7d30"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The lobby's id in the developers' fixtures.
FEATURE_LOBBY = "INSERT INTO room_tags (room_id, tag) VALUES (0, 'featured')"


def upgrade() -> None:
    op.create_table(
        "room_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=24), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["room_id"], ["game_rooms.id"], name="fk_room_tags_room_id_game_rooms", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_room_tags"),
    )
    op.create_index("ix_room_tags_room_id", "room_tags", ["room_id"])
    op.execute("INSERT INTO room_tags (room_id, tag) SELECT id, 'open' FROM game_rooms WHERE status = 'waiting'")
    op.execute(FEATURE_LOBBY)


def downgrade() -> None:
    op.drop_index("ix_room_tags_room_id", table_name="room_tags")
    op.drop_table("room_tags")
