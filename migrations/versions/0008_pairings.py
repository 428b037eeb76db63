"""Pending wall-screen pairings in the store, so every instance sees them and a restart keeps them.

Before this, pairings lived in one process's memory: a restart lost them, and behind a load
balancer a code shown by one instance could not be approved through another.  Only the SHA-256
of the screen's poll secret is stored; the display key is created when the screen claims it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pairing",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("code", sa.String(16), nullable=False, unique=True),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("requested_dashboard", sa.String(128), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
        sa.Column("approved_by", sa.String(32), nullable=True),
        sa.Column("approved_us", sa.BigInteger, nullable=True),
        sa.Column("dashboard", sa.String(128), nullable=True),
        sa.Column("key_name", sa.String(128), nullable=True),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("claimed_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_pairing_expires", "pairing", ["expires_us"])
    op.create_index("ix_pairing_client_ip", "pairing", ["client_ip", "expires_us"])


def downgrade() -> None:
    op.drop_index("ix_pairing_client_ip", table_name="pairing")
    op.drop_index("ix_pairing_expires", table_name="pairing")
    op.drop_table("pairing")
