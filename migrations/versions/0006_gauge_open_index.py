"""Index gauge items by close time, so a live gauge reading touches only the items still open.

A reading at instant t counts items opened in (t - max_open_s, t] and not closed by t.  Scanning
by open time costs every item opened in the last ``max_open_s`` (hours of calls on a busy
day); live tiles read at the newest instant, where the open items are the few with no close
yet or a close after t: this index finds exactly those.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_gauge_item_closed", "gauge_item", ["gauge", "dim_key", "closed_us", "opened_us"])


def downgrade() -> None:
    op.drop_index("ix_gauge_item_closed", table_name="gauge_item")
