"""The first state schema: incidents, actions, verifications, blocked revisions, service states, deploys.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("service", sa.String(64), nullable=False, index=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("explanation", sa.Text, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False, index=True),
        sa.Column("closed_at", sa.Float),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("automatic", sa.Boolean, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("in_deploy_window", sa.Boolean, nullable=False),
        sa.Column("revision_before", sa.String(128)),
        sa.Column("revision_after", sa.String(128)),
        sa.Column("backup_used", sa.String(255)),
        sa.Column("time_to_recover", sa.Float),
        sa.Column("notes", sa.Text, nullable=False),
    )
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), index=True),
        sa.Column("service", sa.String(64), nullable=False, index=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("automatic", sa.Boolean, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False, index=True),
        sa.Column("finished_at", sa.Float),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("commands", sa.JSON, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_table(
        "verifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), index=True),
        sa.Column("action_id", sa.Integer, sa.ForeignKey("actions.id")),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("items", sa.JSON, nullable=False),
    )
    op.create_table(
        "blocked_revisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id")),
        sa.Column("blocked_at", sa.Float, nullable=False),
        sa.Column("unblocked_at", sa.Float),
        sa.UniqueConstraint("service", "revision"),
    )
    op.create_table(
        "service_states",
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("resume_requested_at", sa.Float),
    )
    op.create_table(
        "deploys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("service", sa.String(64), nullable=False, index=True),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("closes_at", sa.Float, nullable=False),
        sa.Column("from_revision", sa.String(128)),
        sa.Column("to_revision", sa.String(128)),
        sa.Column("pre_deploy_backup", sa.String(255)),
        sa.Column("code_commit", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id")),
        sa.Column("detail", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("deploys", "service_states", "blocked_revisions", "verifications", "actions", "incidents"):
        op.drop_table(table)
