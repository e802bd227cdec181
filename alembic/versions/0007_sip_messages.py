"""SIP part 2 (fallback handler, sip_logs): sip_messages, and sip_config.fallback_handler

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sip_messages",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(length=36), nullable=False),
        sa.Column("wall_clock", sa.DateTime(timezone=True), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("peer", sa.String(length=128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_sip_messages")),
    )
    with op.batch_alter_table("sip_messages", schema=None) as batch_op:
        batch_op.create_index("ix_sip_messages_call_id", ["call_id", "seq"], unique=False)
    with op.batch_alter_table("sip_config", schema=None) as batch_op:
        # {url, secrets: [SecretBox tokens]} or NULL.
        batch_op.add_column(sa.Column("fallback_handler", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sip_config", schema=None) as batch_op:
        batch_op.drop_column("fallback_handler")
    op.drop_table("sip_messages")
