"""Quantile sketches as additive bin counts instead of a blob per minute partial.

The blob in ``rollup_minute.sketch`` had to be read, merged in Python and written back on
every flush (a read-modify-write under a row lock).  A DDSketch is a histogram of
logarithmic bins, so its merge is a sum of counts per bin: ``rollup_sketch_bin`` keeps one
row per (measure, dimension key, minute, side, bin) and a flush adds to it with a plain
upsert, like the other partial columns.  Existing blobs are converted, then the column is
dropped.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from app.metrics.sketch import Sketch

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollup_sketch_bin",
        sa.Column("measure", sa.String(200), nullable=False),
        sa.Column("dim_key", sa.String(300), nullable=False),
        sa.Column("bucket_us", sa.BigInteger, nullable=False),
        sa.Column("side", sa.SmallInteger, nullable=False),
        sa.Column("bin", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("measure", "dim_key", "bucket_us", "side", "bin", name="pk_rollup_sketch_bin"),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT measure, dim_key, bucket_us, sketch FROM rollup_minute WHERE sketch IS NOT NULL")
    )
    bins = []
    for measure, dim_key, bucket_us, blob in rows:
        bins += [(measure, dim_key, bucket_us, side, i, c) for side, i, c in Sketch.from_bytes(bytes(blob)).bins()]
    if bins:
        bind.execute(
            sa.text(
                "INSERT INTO rollup_sketch_bin (measure, dim_key, bucket_us, side, bin, count) "
                "VALUES (:m, :d, :b, :s, :i, :c)"
            ),
            [dict(zip("mdbsic", row, strict=True)) for row in bins],
        )
    with op.batch_alter_table("rollup_minute") as batch:
        batch.drop_column("sketch")


def downgrade() -> None:
    with op.batch_alter_table("rollup_minute") as batch:
        batch.add_column(sa.Column("sketch", sa.LargeBinary, nullable=True))
    op.drop_table("rollup_sketch_bin")
