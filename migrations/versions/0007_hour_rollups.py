"""Hour partials beside the minute partials, so a day or month window reads hours, not minutes.

A "today" tile at 14:00 read 840 minute rows per measure and filter; a month tile 43,200.
``rollup_hour`` and ``rollup_hour_sketch_bin`` hold the same additive partials per UTC hour,
written in the same transaction as the minutes (``app.store.writes``).  Reads take whole hours
from here and only the ragged edges of a window from the minutes.  Backfilled from the minutes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

HOUR_US = 3_600_000_000


def upgrade() -> None:
    op.create_table(
        "rollup_hour",
        sa.Column("measure", sa.String(200), nullable=False),
        sa.Column("dim_key", sa.String(300), nullable=False),
        sa.Column("bucket_us", sa.BigInteger, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("sum", sa.Double, nullable=False),
        sa.Column("min", sa.Double, nullable=True),
        sa.Column("max", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("measure", "dim_key", "bucket_us", name="pk_rollup_hour"),
    )
    op.create_table(
        "rollup_hour_sketch_bin",
        sa.Column("measure", sa.String(200), nullable=False),
        sa.Column("dim_key", sa.String(300), nullable=False),
        sa.Column("bucket_us", sa.BigInteger, nullable=False),
        sa.Column("side", sa.SmallInteger, nullable=False),
        sa.Column("bin", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("measure", "dim_key", "bucket_us", "side", "bin", name="pk_rollup_hour_sketch_bin"),
    )
    hour = f"(bucket_us - (((bucket_us % {HOUR_US}) + {HOUR_US}) % {HOUR_US}))"
    op.execute(
        f"INSERT INTO rollup_hour (measure, dim_key, bucket_us, count, sum, min, max) "
        f"SELECT measure, dim_key, {hour}, SUM(count), SUM(sum), MIN(min), MAX(max) FROM rollup_minute "
        f"GROUP BY measure, dim_key, {hour}"
    )
    op.execute(
        f"INSERT INTO rollup_hour_sketch_bin (measure, dim_key, bucket_us, side, bin, count) "
        f"SELECT measure, dim_key, {hour}, side, bin, SUM(count) FROM rollup_sketch_bin "
        f"GROUP BY measure, dim_key, {hour}, side, bin"
    )


def downgrade() -> None:
    op.drop_table("rollup_hour_sketch_bin")
    op.drop_table("rollup_hour")
