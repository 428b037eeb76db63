"""The managers' loop (issue 14): publication history, per-day commentary with the
authenticated author, the breach log, and key holders.

- ``publication``: every publication of a scorecard (grain ``month``) or sign-off of an
  end-of-day dashboard (grain ``day``), numbered per period; each pins the snapshot version it
  shows.  The rows of ``scorecard_publication`` (one per month, before 0014) are copied in as
  publication 1; that table is no longer written.
- ``commentary``: ``day`` (a note on one KPI of one day; ``NULL`` for a month note), the
  author's key id, and the snapshot version the note was written against.
- ``kpi_breach``: red spells of a KPI on a live tile window or in a snapshot.
- ``api_key.holder``: the person a key belongs to (the author of what it writes).

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "publication",
        sa.Column("dashboard", sa.String(128), nullable=False),
        sa.Column("grain", sa.String(8), nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("snapshot_version", sa.Integer, nullable=False),
        sa.Column("published_us", sa.BigInteger, nullable=False),
        sa.Column("published_by", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("dashboard", "grain", "period", "number", name="pk_publication"),
    )
    op.execute(
        "INSERT INTO publication (dashboard, grain, period, number, snapshot_version, published_us, "
        "published_by, key_id) SELECT dashboard, 'month', month, 1, snapshot_version, "
        "published_us, published_by, NULL FROM scorecard_publication"
    )
    op.add_column("commentary", sa.Column("day", sa.String(10), nullable=True))
    op.add_column("commentary", sa.Column("author_key_id", sa.String(32), nullable=True))
    op.add_column("commentary", sa.Column("snapshot_version", sa.Integer, nullable=True))
    op.create_table(
        "kpi_breach",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dashboard", sa.String(128), nullable=False),
        sa.Column("kpi", sa.String(128), nullable=False),
        sa.Column("tile", sa.String(128), nullable=False),
        sa.Column("window", sa.String(16), nullable=False),
        sa.Column("dims", sa.Text, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("started_us", sa.BigInteger, nullable=False),
        sa.Column("last_seen_us", sa.BigInteger, nullable=False),
        sa.Column("ended_us", sa.BigInteger, nullable=True),
        sa.Column("worst_value", sa.Double, nullable=True),
        sa.Column("worst_us", sa.BigInteger, nullable=True),
        sa.Column("target", sa.Double, nullable=True),
        sa.Column("direction", sa.String(8), nullable=True),
        sa.UniqueConstraint("dashboard", "kpi", "tile", "started_us", name="uq_kpi_breach_start"),
    )
    op.create_index("ix_kpi_breach_day", "kpi_breach", ["dashboard", "day"])
    op.create_index("ix_kpi_breach_open", "kpi_breach", ["dashboard", "tile", "ended_us"])
    op.add_column("api_key", sa.Column("holder", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("holder")
    op.drop_index("ix_kpi_breach_open", table_name="kpi_breach")
    op.drop_index("ix_kpi_breach_day", table_name="kpi_breach")
    op.drop_table("kpi_breach")
    with op.batch_alter_table("commentary") as batch:
        batch.drop_column("snapshot_version")
        batch.drop_column("author_key_id")
        batch.drop_column("day")
    op.drop_table("publication")
