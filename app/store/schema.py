"""Table definitions (SQLAlchemy Core).  Migrations in ``migrations/versions`` create them.

All instants are UTC epoch microseconds in BIGINT columns (``*_us``): exact,
zone-free, and identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger, Column, Double, Index, Integer, LargeBinary, MetaData, PrimaryKeyConstraint,
    String, Table, Text, UniqueConstraint,
)

metadata = MetaData()

# Raw events: the source of truth.  (source, event_id) is the idempotency key;
# body_hash tells a retry (same body) from a conflict (different body).
event = Table(
    "event",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("type", String(128), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("value", Double, nullable=True),
    Column("dims", Text, nullable=True),
    Column("body_hash", LargeBinary(16), nullable=False),
    Column("received_us", BigInteger, nullable=False),
    UniqueConstraint("source", "event_id", name="uq_event_source_id"),
    Index("ix_event_type_ts", "type", "ts_us"),
    Index("ix_event_ts", "ts_us"),
)

# Additive 1-minute partials per (measure, dimension key, UTC minute).
rollup_minute = Table(
    "rollup_minute",
    metadata,
    Column("measure", String(200), nullable=False),
    Column("dim_key", String(300), nullable=False),
    Column("bucket_us", BigInteger, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("sum", Double, nullable=False),
    Column("min", Double, nullable=True),
    Column("max", Double, nullable=True),
    Column("sketch", LargeBinary, nullable=True),
    PrimaryKeyConstraint("measure", "dim_key", "bucket_us", name="pk_rollup_minute"),
)

# Paired open/close items of gauges (calls in queue), one row per dimension key.
gauge_item = Table(
    "gauge_item",
    metadata,
    Column("gauge", String(200), nullable=False),
    Column("dim_key", String(300), nullable=False),
    Column("item_key", String(300), nullable=False),
    Column("opened_us", BigInteger, nullable=True),
    Column("closed_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("gauge", "dim_key", "item_key", name="pk_gauge_item"),
    Index("ix_gauge_item_opened", "gauge", "dim_key", "opened_us"),
)
