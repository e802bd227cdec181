"""scheduled calls: when the dial under way began (dial_started), so a dial a crash left unknown is reconciled

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 16:10:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scheduled_calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dial_started", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduled_calls", schema=None) as batch_op:
        batch_op.drop_column("dial_started")
