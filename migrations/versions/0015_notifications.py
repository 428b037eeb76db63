"""Notifications: the delivery log of alerts and distributions, and the state of each alert rule.

``notification``: one row per message to one recipient on one channel; ``dedup_key`` is unique, so
a message is logged (and sent) once however often its cause is seen, across restarts and instances.
``alert_state``: where each alert rule stands (ok / pending / firing), kept so a restart neither
repeats an alert nor forgets a recovery owed.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("dedup_key", sa.String(400), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(500), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("passes", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger, nullable=False),
        sa.Column("sent_us", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notification"),
        sa.UniqueConstraint("dedup_key", name="uq_notification_dedup"),
    )
    op.create_index("ix_notification_due", "notification", ["status", "next_attempt_us"])
    op.create_index("ix_notification_created", "notification", ["created_us"])
    op.create_table(
        "alert_state",
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since_us", sa.BigInteger, nullable=True),
        sa.Column("fired_us", sa.BigInteger, nullable=True),
        sa.Column("notified", sa.Boolean, nullable=False),
        sa.Column("last_alert_us", sa.BigInteger, nullable=True),
        sa.Column("last_value", sa.Double, nullable=True),
        sa.Column("evaluated_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("rule", name="pk_alert_state"),
    )


def downgrade() -> None:
    op.drop_table("alert_state")
    op.drop_index("ix_notification_created", table_name="notification")
    op.drop_index("ix_notification_due", table_name="notification")
    op.drop_table("notification")
