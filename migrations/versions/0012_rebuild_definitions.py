"""The rollup engine's bookkeeping: rebuild jobs (resumable), the definition hashes derived state
was built with, and the distinct-count (HyperLogLog) registers of minutes and hours.

``rebuild_job``: one row per ``pulseboard rollups rebuild`` run; ``cursor_us`` is the end of the
last chunk committed, moved in the same transaction as that chunk's rows (a run killed with
``kill -9`` resumes there).  ``definition_state``: ``KIND:pack/name`` -> the definition hash the
stored rollups of that measure follow.  ``rollup_distinct_minute`` / ``_hour``: sparse
HyperLogLog registers (``app.metrics.hll``) per (measure, dimension key, bucket), merged by max.

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def _distinct(name: str) -> None:
    op.create_table(
        name,
        sa.Column("measure", sa.String(200), nullable=False),
        sa.Column("dim_key", sa.String(300), nullable=False),
        sa.Column("bucket_us", sa.BigInteger, nullable=False),
        sa.Column("reg", sa.BigInteger, nullable=False),
        sa.Column("rank", sa.SmallInteger, nullable=False),
        sa.PrimaryKeyConstraint("measure", "dim_key", "bucket_us", "reg", name=f"pk_{name}"),
    )


def upgrade() -> None:
    op.create_table(
        "rebuild_job",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("since_us", sa.BigInteger, nullable=False),
        sa.Column("until_us", sa.BigInteger, nullable=False),
        sa.Column("cursor_us", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("chunks", sa.BigInteger, nullable=False),
        sa.Column("started_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("finished_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_rebuild_job_status", "rebuild_job", ["status", "spec"])
    op.create_table(
        "definition_state",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("hash", sa.String(32), nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    _distinct("rollup_distinct_minute")
    _distinct("rollup_distinct_hour")


def downgrade() -> None:
    op.drop_table("rollup_distinct_hour")
    op.drop_table("rollup_distinct_minute")
    op.drop_table("definition_state")
    op.drop_index("ix_rebuild_job_status", table_name="rebuild_job")
    op.drop_table("rebuild_job")
