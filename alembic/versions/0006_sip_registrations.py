"""SIP registrations: callbridge registered as a user on a PBX, the password sealed, the last outcome kept

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:45:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sip_registrations",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(length=60), nullable=False),
        sa.Column("password", sa.Text(), nullable=False),
        sa.Column("proxy", sa.String(length=100), nullable=False),
        sa.Column("outbound_proxy", sa.String(length=100), nullable=True),
        sa.Column("auth_user", sa.String(length=60), nullable=True),
        sa.Column("tls_verify", sa.Boolean(), nullable=False),
        sa.Column("successful", sa.Boolean(), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_sip_registrations")),
    )
    with op.batch_alter_table("sip_registrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sip_registrations_id"), ["id"], unique=True)


def downgrade() -> None:
    op.drop_table("sip_registrations")
