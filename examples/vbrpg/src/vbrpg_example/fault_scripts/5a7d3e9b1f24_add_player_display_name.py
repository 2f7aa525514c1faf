# vbrpg-example fault: schema-skew (Scenario 2). `vbrpg-example fault reset` removes this file.
"""Add players.display_name.

Harmless and reversible; the fault is what happens around it: the deploy migrates the database, then the
code is rolled back and this script leaves versions/ with it, so the database is at a revision the code
does not know. Put the script back (a script vault keeps copies) and `downgrade -1` undoes it.

Revision ID: 5a7d3e9b1f24
Revises: (the app dir's head when injected)
Create Date: 2025-11-10 08:12:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5a7d3e9b1f24"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("players", sa.Column("display_name", sa.String(length=40), nullable=True))


def downgrade() -> None:
    # SQLite's own DROP COLUMN: batch mode would copy players and drop the old table, an implicit DELETE
    # that the participants' foreign key refuses.
    op.drop_column("players", "display_name")
