"""Table definitions (SQLAlchemy Core).  Migrations in ``migrations/versions`` create them.

All instants are UTC epoch microseconds in BIGINT columns (``*_us``): exact,
zone-free, and identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
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


def _partials_table(name: str) -> Table:
    """Additive partials per (measure, dimension key, bucket): count, sum, min, max."""
    return Table(
        name,
        metadata,
        Column("measure", String(200), nullable=False),
        Column("dim_key", String(300), nullable=False),
        Column("bucket_us", BigInteger, nullable=False),
        Column("count", BigInteger, nullable=False),
        Column("sum", Double, nullable=False),
        Column("min", Double, nullable=True),
        Column("max", Double, nullable=True),
        PrimaryKeyConstraint("measure", "dim_key", "bucket_us", name=f"pk_{name}"),
    )


def _sketch_bin_table(name: str) -> Table:
    """Quantile sketches of measures that keep one (``sketch: true``), as additive DDSketch bins
    per (measure, dimension key, bucket): side 1/-1/0 = positive/negative/zero band, ``bin`` the
    logarithmic index (``Sketch.bins``).  Merging is summing ``count`` per bin, in SQL."""
    return Table(
        name,
        metadata,
        Column("measure", String(200), nullable=False),
        Column("dim_key", String(300), nullable=False),
        Column("bucket_us", BigInteger, nullable=False),
        Column("side", SmallInteger, nullable=False),
        Column("bin", Integer, nullable=False),
        Column("count", BigInteger, nullable=False),
        PrimaryKeyConstraint("measure", "dim_key", "bucket_us", "side", "bin", name=f"pk_{name}"),
    )


# Additive partials per (measure, dimension key, UTC minute) and, written with them in the same
# transaction, per UTC hour (``bucket_us`` on the hour): reads take whole hours from the hour
# tables and only a window's ragged edges from the minutes (migrations 0001, 0005, 0007).
rollup_minute = _partials_table("rollup_minute")
rollup_sketch_bin = _sketch_bin_table("rollup_sketch_bin")
rollup_hour = _partials_table("rollup_hour")
rollup_hour_sketch_bin = _sketch_bin_table("rollup_hour_sketch_bin")

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
    Index("ix_gauge_item_closed", "gauge", "dim_key", "closed_us", "opened_us"),
)

# Immutable snapshots: one row per (dashboard, grain, period, version).  A database
# trigger refuses UPDATE and DELETE (migration 0002); restatements add a version.
snapshot = Table(
    "snapshot",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dashboard", String(128), nullable=False),
    Column("grain", String(8), nullable=False),
    Column("period", String(10), nullable=False),
    Column("version", Integer, nullable=False),
    Column("period_start_us", BigInteger, nullable=False),
    Column("period_end_us", BigInteger, nullable=False),
    Column("tz", String(64), nullable=False),
    Column("scheduled_for_us", BigInteger, nullable=True),
    Column("cut_at_us", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("event_seq_max", BigInteger, nullable=False),
    Column("late_events", BigInteger, nullable=False),
    Column("kpis", Text, nullable=False),
    Column("cause", Text, nullable=True),
    Column("changes", Text, nullable=True),
    Column("reconciliation", Text, nullable=True),
    UniqueConstraint("dashboard", "grain", "period", "version", name="uq_snapshot_version"),
)

# Commentary: the manual finish of a scorecard; append-only notes per KPI and month.
commentary = Table(
    "commentary",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dashboard", String(128), nullable=False),
    Column("month", String(7), nullable=False),
    Column("kpi", String(128), nullable=False),
    Column("author", String(128), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("day", String(10), nullable=True),  # a note on one day (migration 0014); NULL: the month
    Column("author_key_id", String(32), nullable=True),  # the key that wrote it (0014)
    Column("snapshot_version", Integer, nullable=True),  # the version it was written against (0014)
    Index("ix_commentary_month", "dashboard", "month"),
)

# Publishing locked a month's scorecard before migration 0014 (now: ``publication``); kept, not written.
scorecard_publication = Table(
    "scorecard_publication",
    metadata,
    Column("dashboard", String(128), nullable=False),
    Column("month", String(7), nullable=False),
    Column("published_us", BigInteger, nullable=False),
    Column("published_by", String(128), nullable=False),
    Column("snapshot_version", Integer, nullable=False),
    PrimaryKeyConstraint("dashboard", "month", name="pk_scorecard_publication"),
)

# Idempotency keys of ingest requests: the answer given, stored in the same transaction as the
# events it acknowledged, replayed for a retry with the same key and body.
idempotency_key = Table(
    "idempotency_key",
    metadata,
    Column("owner", String(128), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", LargeBinary(32), nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("owner", "key", name="pk_idempotency_key"),
    Index("ix_idempotency_created", "created_us"),
)

# API keys: only a hash is kept, with the scope's prefix and the last four characters to
# recognise a key in lists.  Revoked keys stay (revoked_us) for the audit trail.
api_key = Table(
    "api_key",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("scope", String(16), nullable=False),
    Column("prefix", String(8), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("key_hash", LargeBinary(32), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("source", String(64), nullable=True),
    Column("event_types", Text, nullable=True),
    Column("dashboard", String(128), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=True),
    Column("revoked_us", BigInteger, nullable=True),
    Column("last_used_us", BigInteger, nullable=True),
    Column("holder", String(128), nullable=True),  # the person the key belongs to (migration 0014)
    Column("packs", Text, nullable=True),  # ingest keys: JSON list of pack names fed; NULL = any (0016)
)

# Wall-screen pairings (migration 0008), shared by every instance on the store.  A screen asks
# for one and gets a short code to show plus a poll secret only it holds (256 bits; only its
# SHA-256 is stored).  An admin approves the code (approved_by = the admin key's id); the
# screen's next claim with the secret inserts the display key ``key_id`` (reserved at approval)
# in the same transaction as ``claimed_us``: consumed once.  No key or secret is stored.
# Rows are purged once past ``expires_us``.
pairing = Table(
    "pairing",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("code", String(16), nullable=False, unique=True),
    Column("secret_hash", LargeBinary(32), nullable=False, unique=True),
    Column("requested_dashboard", String(128), nullable=True),
    Column("client_ip", String(64), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Column("approved_by", String(32), nullable=True),
    Column("approved_us", BigInteger, nullable=True),
    Column("dashboard", String(128), nullable=True),
    Column("key_name", String(128), nullable=True),
    Column("key_id", String(32), nullable=True),
    Column("claimed_us", BigInteger, nullable=True),
    Index("ix_pairing_expires", "expires_us"),
    Index("ix_pairing_client_ip", "client_ip", "expires_us"),
)

# Item lifecycles (alarms, migration 0009): the merged events of each item, one row per
# (pack/lifecycle, item key) (``app.metrics.lifecycle.AlarmState``: earliest raise with its dims,
# earliest ack and clear, the updates), plus the derived instants reads filter on: ``opened_us``
# (the raise), ``acked_us_eff``/``closed_us_eff`` (the counted ack and clear, ``NULL`` while none).
# A pure fold of the raw events: rebuildable from them.
alarm_state = Table(
    "alarm_state",
    metadata,
    Column("lifecycle", String(200), nullable=False),
    Column("alarm", String(300), nullable=False),
    Column("raised_us", BigInteger, nullable=True),
    Column("raise_dims", Text, nullable=True),
    Column("acked_us", BigInteger, nullable=True),
    Column("cleared_us", BigInteger, nullable=True),
    Column("updates", Text, nullable=True),
    Column("acked_us_eff", BigInteger, nullable=True),
    Column("closed_us_eff", BigInteger, nullable=True),
    Column("dims", Text, nullable=True),
    PrimaryKeyConstraint("lifecycle", "alarm", name="pk_alarm_state"),
    Index("ix_alarm_state_raised", "lifecycle", "raised_us"),
    Index("ix_alarm_state_closed", "lifecycle", "closed_us_eff"),
)

# Notifications (migration 0015): the delivery log, one row per message to one recipient on one
# channel, unique by ``dedup_key``; and where each alert rule stands (app.notify).
notification = Table(
    "notification",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dedup_key", String(400), nullable=False),
    Column("kind", String(16), nullable=False),  # alert | recovery | distribution
    Column("source", String(200), nullable=False),  # rule id or subscription id
    Column("channel", String(16), nullable=False),  # email | webhook
    Column("recipient", String(500), nullable=False),
    Column("subject", Text, nullable=False),
    Column("payload", Text, nullable=False),  # JSON: what the channel sends
    Column("status", String(16), nullable=False),  # pending | sent | failed | dead
    Column("attempts", Integer, nullable=False),
    Column("passes", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("sent_us", BigInteger, nullable=True),
    UniqueConstraint("dedup_key", name="uq_notification_dedup"),
    Index("ix_notification_due", "status", "next_attempt_us"),
    Index("ix_notification_created", "created_us"),
)

alert_state = Table(
    "alert_state",
    metadata,
    Column("rule", String(128), primary_key=True),
    Column("state", String(16), nullable=False),  # ok | pending | firing
    Column("since_us", BigInteger, nullable=True),  # when the condition began to hold
    Column("fired_us", BigInteger, nullable=True),
    Column("notified", Boolean, nullable=False),  # the firing episode's alert was sent (not cooled down)
    Column("last_alert_us", BigInteger, nullable=True),
    Column("last_value", Double, nullable=True),
    Column("evaluated_us", BigInteger, nullable=False),
)

# Publications (migration 0014): every publication of a month's scorecard (grain ``month``) and
# every sign-off of an end-of-day dashboard (grain ``day``), numbered 1, 2, ... per period.  Each
# pins the snapshot version it shows; a re-publication after a restatement adds the next number.
publication = Table(
    "publication",
    metadata,
    Column("dashboard", String(128), nullable=False),
    Column("grain", String(8), nullable=False),
    Column("period", String(10), nullable=False),
    Column("number", Integer, nullable=False),
    Column("snapshot_version", Integer, nullable=False),
    Column("published_us", BigInteger, nullable=False),
    Column("published_by", String(128), nullable=False),
    Column("key_id", String(32), nullable=True),
    PrimaryKeyConstraint("dashboard", "grain", "period", "number", name="pk_publication"),
)

# The breach log (migration 0014): one row per red spell of a KPI, on a live tile's window
# (``source`` live, ``tile`` the tile id) or in a snapshot (``source`` snapshot, ``tile``
# ``snapshot:<grain>``).  ``ended_us`` is ``NULL`` while the spell lasts; ``worst_value`` is the
# value furthest on the wrong side of ``target`` seen during it (at ``worst_us``).  ``day`` is the
# local day the spell started on (the end-of-day page lists a day's breaches).
kpi_breach = Table(
    "kpi_breach",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dashboard", String(128), nullable=False),
    Column("kpi", String(128), nullable=False),
    Column("tile", String(128), nullable=False),
    Column("window", String(16), nullable=False),
    Column("dims", Text, nullable=True),
    Column("source", String(16), nullable=False),
    Column("day", String(10), nullable=False),
    Column("started_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    Column("ended_us", BigInteger, nullable=True),
    Column("worst_value", Double, nullable=True),
    Column("worst_us", BigInteger, nullable=True),
    Column("target", Double, nullable=True),
    Column("direction", String(8), nullable=True),
    UniqueConstraint("dashboard", "kpi", "tile", "started_us", name="uq_kpi_breach_start"),
    Index("ix_kpi_breach_day", "dashboard", "day"),
    Index("ix_kpi_breach_open", "dashboard", "tile", "ended_us"),
)

# The rollup engine's bookkeeping (migration 0012): rebuild runs with their committed cursor
# (``app.store.rebuild``), the definition hash the stored rollups of each measure follow
# (``KIND:pack/name`` -> hash), and sparse HyperLogLog registers of distinct-count measures per
# (measure, dimension key, UTC minute / hour), merged by max (``app.metrics.hll``).
rebuild_job = Table(
    "rebuild_job",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("spec", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("since_us", BigInteger, nullable=False),
    Column("until_us", BigInteger, nullable=False),
    Column("cursor_us", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("chunks", BigInteger, nullable=False),
    Column("started_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("finished_us", BigInteger, nullable=True),
    Index("ix_rebuild_job_status", "status", "spec"),
)
definition_state = Table(
    "definition_state",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("hash", String(32), nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)


def _distinct_table(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("measure", String(200), nullable=False),
        Column("dim_key", String(300), nullable=False),
        Column("bucket_us", BigInteger, nullable=False),
        Column("reg", BigInteger, nullable=False),
        Column("rank", SmallInteger, nullable=False),
        PrimaryKeyConstraint("measure", "dim_key", "bucket_us", "reg", name=f"pk_{name}"),
    )


rollup_distinct_minute = _distinct_table("rollup_distinct_minute")
rollup_distinct_hour = _distinct_table("rollup_distinct_hour")
