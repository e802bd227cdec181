"""SIP transfer billing: when a bridged caller's leg ended, and the seconds billed for transfers' second legs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sip_ended", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("sip_transfer_billed", sa.Float(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("sip_transfer_billed")
        batch_op.drop_column("sip_ended")
