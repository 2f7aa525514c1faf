# vbrpg-example fault: bad-downgrade (irreversible migration). `vbrpg-example fault reset` removes this file.
"""Track when players were last seen.

The upgrade is fine. The bug is in the downgrade, which nobody ran before the deploy: it drops an index
by a name that was never created, so `alembic downgrade` fails with "no such index" and the rollback has
to come from a backup.

Revision ID: 6b3f9e1d7c52
Revises: (the app dir's head when injected)
Create Date: 2025-11-17 09:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "6b3f9e1d7c52"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("players", sa.Column("last_seen_at", sa.DateTime(), nullable=True))
    op.create_index("ix_players_last_seen_at", "players", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_players_last_seen", table_name="players")
    op.drop_column("players", "last_seen_at")
