"""account SIP config: one row, created with a fresh install's defaults (no source, no agent allowed)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09 09:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
#: The row's id: the table holds this one row only.
SINGLE_ROW_ID = 1


def upgrade() -> None:
    table = op.create_table(
        "sip_config",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("allowed_cidr_ranges", Json, nullable=False),
        sa.Column("allow_all_agents", sa.Boolean(), nullable=False),
        sa.Column("allowed_agents", Json, nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sip_config")),
    )
    op.bulk_insert(
        table,
        [
            {
                "id": SINGLE_ROW_ID,
                "allowed_cidr_ranges": [],
                "allow_all_agents": False,
                "allowed_agents": [],
                "updated": datetime.now(UTC),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("sip_config")
