"""scheduled batches: scheduled_batches, scheduled_calls, and the batch a call was placed for

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-16 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "scheduled_batches",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=True),
        sa.Column("calls_per_minute", sa.Float(), nullable=True),
        sa.Column("retry", Json, nullable=True),
        sa.Column("webhook_url", sa.String(length=200), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("total_count", sa.Integer(), nullable=False),
        sa.Column("completed_count", sa.Integer(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_scheduled_batches_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_scheduled_batches")),
    )
    with op.batch_alter_table("scheduled_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scheduled_batches_id"), ["id"], unique=True)
        batch_op.create_index(batch_op.f("ix_scheduled_batches_agent_id"), ["agent_id"], unique=False)

    op.create_table(
        "scheduled_calls",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dial_state", sa.String(length=16), nullable=False),
        sa.Column("call_id", sa.String(length=36), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["scheduled_batches.id"],
            name="fk_scheduled_calls_batch_id_scheduled_batches",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_scheduled_calls")),
    )
    with op.batch_alter_table("scheduled_calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scheduled_calls_id"), ["id"], unique=True)
        batch_op.create_index("ix_scheduled_calls_batch_id", ["batch_id", "seq"], unique=False)
        batch_op.create_index(
            "ix_scheduled_calls_status", ["batch_id", "status", "next_attempt_at"], unique=False
        )

    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("scheduled_call_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_calls_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_calls_scheduled_call_id"), ["scheduled_call_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calls_scheduled_call_id"))
        batch_op.drop_index(batch_op.f("ix_calls_batch_id"))
        batch_op.drop_column("scheduled_call_id")
        batch_op.drop_column("batch_id")
    op.drop_table("scheduled_calls")
    op.drop_table("scheduled_batches")
