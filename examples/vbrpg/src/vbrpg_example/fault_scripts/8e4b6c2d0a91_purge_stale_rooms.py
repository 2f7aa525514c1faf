# vbrpg-example fault: data-loss (Scenario 3). `vbrpg-example fault reset` removes this file.
"""Purge rooms idle for more than 30 days (never a game in play), then players left without a room.

The bug: '+30 days' where '-30 days' was meant, so every room created before a month from now, that is
every room not in play, goes, and with them their participants and then nearly every player. The
downgrade cannot bring the rows back: only the pre-migration backup can.

Revision ID: 8e4b6c2d0a91
Revises: (the app dir's head when injected)
Create Date: 2025-11-12 22:03:00
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "8e4b6c2d0a91"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STALE_ROOMS = "SELECT id FROM game_rooms WHERE status != 'playing' AND created_at < datetime('now', '+30 days')"


def upgrade() -> None:
    op.execute(f"DELETE FROM game_room_participants WHERE room_id IN ({STALE_ROOMS})")  # noqa: S608 - constant
    op.execute(f"DELETE FROM game_rooms WHERE id IN ({STALE_ROOMS})")  # noqa: S608 - constant
    op.execute(
        "DELETE FROM players WHERE id NOT IN (SELECT player_id FROM game_room_participants WHERE player_id IS NOT NULL)"
    )


def downgrade() -> None:
    # Deleted rows cannot be recreated from nothing; restore the pre-migration backup instead.
    pass
