"""Initial schema: event, rollup_minute, gauge_item.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("dims", sa.Text, nullable=True),
        sa.Column("body_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("source", "event_id", name="uq_event_source_id"),
    )
    op.create_index("ix_event_type_ts", "event", ["type", "ts_us"])
    op.create_index("ix_event_ts", "event", ["ts_us"])
    op.create_table(
        "rollup_minute",
        sa.Column("measure", sa.String(200), nullable=False),
        sa.Column("dim_key", sa.String(300), nullable=False),
        sa.Column("bucket_us", sa.BigInteger, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("sum", sa.Double, nullable=False),
        sa.Column("min", sa.Double, nullable=True),
        sa.Column("max", sa.Double, nullable=True),
        sa.Column("sketch", sa.LargeBinary, nullable=True),
        sa.PrimaryKeyConstraint("measure", "dim_key", "bucket_us", name="pk_rollup_minute"),
    )
    op.create_table(
        "gauge_item",
        sa.Column("gauge", sa.String(200), nullable=False),
        sa.Column("dim_key", sa.String(300), nullable=False),
        sa.Column("item_key", sa.String(300), nullable=False),
        sa.Column("opened_us", sa.BigInteger, nullable=True),
        sa.Column("closed_us", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("gauge", "dim_key", "item_key", name="pk_gauge_item"),
    )
    op.create_index("ix_gauge_item_opened", "gauge_item", ["gauge", "dim_key", "opened_us"])


def downgrade() -> None:
    op.drop_table("gauge_item")
    op.drop_table("rollup_minute")
    op.drop_table("event")
