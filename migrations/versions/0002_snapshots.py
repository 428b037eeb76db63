"""Snapshots (immutable, versioned), commentary, scorecard publication.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

IMMUTABLE = ("snapshot", "scorecard_publication")


def upgrade() -> None:
    op.create_table(
        "snapshot",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dashboard", sa.String(128), nullable=False),
        sa.Column("grain", sa.String(8), nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("period_start_us", sa.BigInteger, nullable=False),
        sa.Column("period_end_us", sa.BigInteger, nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("scheduled_for_us", sa.BigInteger, nullable=True),
        sa.Column("cut_at_us", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("event_seq_max", sa.BigInteger, nullable=False),
        sa.Column("late_events", sa.BigInteger, nullable=False),
        sa.Column("kpis", sa.Text, nullable=False),
        sa.Column("cause", sa.Text, nullable=True),
        sa.Column("changes", sa.Text, nullable=True),
        sa.Column("reconciliation", sa.Text, nullable=True),
        sa.UniqueConstraint("dashboard", "grain", "period", "version", name="uq_snapshot_version"),
    )
    op.create_table(
        "commentary",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dashboard", sa.String(128), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("kpi", sa.String(128), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_commentary_month", "commentary", ["dashboard", "month"])
    op.create_table(
        "scorecard_publication",
        sa.Column("dashboard", sa.String(128), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("published_us", sa.BigInteger, nullable=False),
        sa.Column("published_by", sa.String(128), nullable=False),
        sa.Column("snapshot_version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("dashboard", "month", name="pk_scorecard_publication"),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("""
            CREATE FUNCTION pulseboard_refuse_change() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION '% rows are immutable: add a new version instead', TG_TABLE_NAME;
            END $$ LANGUAGE plpgsql
        """)
        for table in IMMUTABLE:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION pulseboard_refuse_change()"
            )
    else:
        for table in IMMUTABLE:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} rows are immutable: add a new version instead'); END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in IMMUTABLE:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS pulseboard_refuse_change()")
    op.drop_table("scorecard_publication")
    op.drop_table("commentary")
    op.drop_table("snapshot")
