"""Item lifecycles (alarms): the merged raise/ack/clear/update events of each item.

One row per (pack/lifecycle, item key): the state ``app.metrics.lifecycle`` folds from the raw
events, and the derived instants the alarm list and open-alarm reads filter on.  The lifecycle
measures' partials go to the rollup tables and its gauges' items to ``gauge_item``, as for every
other measure and gauge.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarm_state",
        sa.Column("lifecycle", sa.String(200), nullable=False),
        sa.Column("alarm", sa.String(300), nullable=False),
        sa.Column("raised_us", sa.BigInteger, nullable=True),
        sa.Column("raise_dims", sa.Text, nullable=True),
        sa.Column("acked_us", sa.BigInteger, nullable=True),
        sa.Column("cleared_us", sa.BigInteger, nullable=True),
        sa.Column("updates", sa.Text, nullable=True),
        sa.Column("acked_us_eff", sa.BigInteger, nullable=True),
        sa.Column("closed_us_eff", sa.BigInteger, nullable=True),
        sa.Column("dims", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("lifecycle", "alarm", name="pk_alarm_state"),
    )
    op.create_index("ix_alarm_state_raised", "alarm_state", ["lifecycle", "raised_us"])
    op.create_index("ix_alarm_state_closed", "alarm_state", ["lifecycle", "closed_us_eff"])


def downgrade() -> None:
    op.drop_index("ix_alarm_state_closed", table_name="alarm_state")
    op.drop_index("ix_alarm_state_raised", table_name="alarm_state")
    op.drop_table("alarm_state")
