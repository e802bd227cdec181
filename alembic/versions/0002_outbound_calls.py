"""outbound calls: provider leg state and idempotent creation

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answered", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("provider_status", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("provider_request_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_calls_idempotency_key"), ["idempotency_key"], unique=True)
        batch_op.create_index(batch_op.f("ix_calls_ended"), ["ended"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calls_ended"))
        batch_op.drop_index(batch_op.f("ix_calls_idempotency_key"))
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("provider_request_id")
        batch_op.drop_column("provider_status")
        batch_op.drop_column("answered")
