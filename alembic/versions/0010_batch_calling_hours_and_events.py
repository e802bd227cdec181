"""scheduled batches: calling hours and a default timezone for their calls, and the batch event log

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 19:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("scheduled_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("calling_hours", Json, nullable=True))
    op.create_table(
        "batch_events",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("scheduled_call_id", sa.String(length=36), nullable=True),
        sa.Column("call_id", sa.String(length=36), nullable=True),
        sa.Column("wall_clock", sa.DateTime(timezone=True), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("extras", Json, nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_batch_events")),
    )
    with op.batch_alter_table("batch_events", schema=None) as batch_op:
        batch_op.create_index("ix_batch_events_batch_id", ["batch_id", "seq"], unique=False)


def downgrade() -> None:
    op.drop_table("batch_events")
    with op.batch_alter_table("scheduled_batches", schema=None) as batch_op:
        batch_op.drop_column("calling_hours")
        batch_op.drop_column("timezone")
