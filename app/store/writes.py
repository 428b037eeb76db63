"""The write path: one transaction stores raw events, their rollup partials and gauge items.

``write_group`` is called by the ingest group-commit writer with the events of
several HTTP requests, on the writer's own thread with a synchronous connection: the
whole transaction is one hand-off from the event loop, not one per statement.
Deduplication by ``(source, event_id)`` costs one indexed query per source (the ids as
one array parameter on PostgreSQL, chunks of ``KEY_CHUNK`` on SQLite), never a round trip
per event.  Only events actually inserted are rolled up, so a retry never counts twice.
Rows go to the driver as tuples: SQLite ``executemany``; PostgreSQL binary ``COPY`` (events
straight into ``event``, rollup rows through a temp table and one upsert per table).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import psycopg
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.metrics.calendar import HOUR_US
from app.metrics.pack import Pack
from app.metrics.partials import Partial
from app.metrics.rollup import OTHER, DimensionCap, EventRow, GaugeChange, PartialKey, rollup
from app.store.schema import idempotency_key

KEY_CHUNK = 1000


class NonFiniteAggregate(ValueError):
    """A rolled-up sum (or min/max) of a request's values is not finite (issue 10 item 1): the
    values overflow float64 alone or merged with what is stored.  Nothing of the transaction is
    kept; the group-commit writer retries the other requests of its group without this one."""


class IdempotencyRecord(NamedTuple):
    """An ``Idempotency-Key`` to remember with the answer of its request (same transaction)."""

    owner: str
    key: str
    request_hash: bytes


class NewEvent(NamedTuple):
    """A validated event ready to store.  ``ts_us`` is UTC epoch µs; ``body_hash`` 16 bytes."""

    source: str
    event_id: str
    type: str
    ts_us: int
    value: float | None
    dims: dict[str, Any] | None
    dims_json: str | None
    body_hash: bytes


@dataclass(slots=True)
class RequestOutcome:
    """What happened to one request's events in a group.

    ``conflict`` holds ``(index, source, event_id)`` of the first event whose
    ``(source, id)`` exists with a different body; then nothing of it was stored.
    """

    accepted: int = 0
    duplicates: int = 0
    conflict: tuple[int, str, str] | None = None
    max_ts_us: int | None = None
    remembered: tuple[int, str, bytes] | None = None  # (status, body, request hash) stored for its key
    failure: Exception | None = None  # set by the writer when this request alone failed (its answer)


@dataclass(slots=True)
class GroupResult:
    """Outcomes per request, and the partials written (for live tiles)."""

    outcomes: list[RequestOutcome]
    inserted: int = 0
    packs_touched: set[str] = field(default_factory=set)


def _existing_hashes(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """Stored body hashes of ``keys``: one indexed query per source (and per chunk of
    ``KEY_CHUNK`` ids on SQLite; PostgreSQL takes the ids as one array parameter)."""
    by_source: dict[str, list[str]] = {}
    for source, event_id in keys:
        by_source.setdefault(source, []).append(event_id)
    found: dict[tuple[str, str], bytes] = {}
    for source, ids in by_source.items():
        if conn.dialect.name == "postgresql":
            sql = "SELECT event_id, body_hash FROM event WHERE source = %s AND event_id = ANY(%s)"
            with _pg_errors(sql), _pg_driver(conn).cursor() as cur:
                cur.execute(sql, (source, ids))
                rows = cur.fetchall()
        else:
            rows = []
            for i in range(0, len(ids), KEY_CHUNK):
                chunk = ids[i : i + KEY_CHUNK]
                rows += conn.exec_driver_sql(
                    "SELECT event_id, body_hash FROM event WHERE source = ? AND event_id IN "
                    f"({', '.join('?' * len(chunk))})",
                    (source, *chunk),
                ).all()
        for event_id, body_hash in rows:
            found[(source, event_id)] = bytes(body_hash)
    return found


# Set-based writes.  Rows are built once as tuples and handed to the driver: SQLite gets one
# ``executemany`` per table (an ``INSERT ... ON CONFLICT DO UPDATE`` for the additive rollup
# tables); PostgreSQL gets binary ``COPY`` (events straight into ``event``, rollup rows into a
# session temp table, then one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table, in key
# order so that concurrent instances take row locks in the same order).

_EVENT_COLUMNS = ("source", "event_id", "type", "ts_us", "value", "dims", "body_hash", "received_us")
_EVENT_PG_TYPES = ("varchar", "varchar", "varchar", "int8", "float8", "text", "bytea", "int8")


class _Upsert(NamedTuple):
    """An additive upsert: target table, key columns, value columns with their PostgreSQL types,
    and the merge expression of each value column (``{t}`` the stored row, ``{x}`` the new one)."""

    table: str
    keys: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, str], ...]
    merge_pg: tuple[str, ...]
    merge_sqlite: tuple[str, ...]


# A merged sum that is not finite becomes NULL, which the NOT NULL ``sum`` column refuses: the
# transaction fails (an IntegrityError that is not a key race) instead of storing inf or NaN
# (PostgreSQL raises on a float8 overflow itself; this also catches a row already holding inf).
_FINITE_SUM_PG = "CASE WHEN abs(t.sum + excluded.sum) < 'Infinity'::float8 THEN t.sum + excluded.sum END"
_FINITE_SUM_SQLITE = "CASE WHEN abs(t.sum + excluded.sum) < 9e999 THEN t.sum + excluded.sum END"
_LEAST_SQLITE = "min(coalesce(t.{c}, excluded.{c}), coalesce(excluded.{c}, t.{c}))"
_GREATEST_SQLITE = "max(coalesce(t.{c}, excluded.{c}), coalesce(excluded.{c}, t.{c}))"

_MINUTE = _Upsert(
    "rollup_minute",
    (("measure", "varchar"), ("dim_key", "varchar"), ("bucket_us", "int8")),
    (("count", "int8"), ("sum", "float8"), ("min", "float8"), ("max", "float8")),
    ("t.count + excluded.count", _FINITE_SUM_PG, "least(t.min, excluded.min)", "greatest(t.max, excluded.max)"),
    (
        "t.count + excluded.count",
        _FINITE_SUM_SQLITE,
        _LEAST_SQLITE.format(c="min"),
        _GREATEST_SQLITE.format(c="max"),
    ),
)
_SKETCH_BIN = _Upsert(
    "rollup_sketch_bin",
    (("measure", "varchar"), ("dim_key", "varchar"), ("bucket_us", "int8"), ("side", "int2"), ("bin", "int4")),
    (("count", "int8"),),
    ("t.count + excluded.count",),
    ("t.count + excluded.count",),
)
_HOUR = _MINUTE._replace(table="rollup_hour")
_HOUR_SKETCH_BIN = _SKETCH_BIN._replace(table="rollup_hour_sketch_bin")
_GAUGE = _Upsert(
    "gauge_item",
    (("gauge", "varchar"), ("dim_key", "varchar"), ("item_key", "varchar")),
    (("opened_us", "int8"), ("closed_us", "int8")),
    ("least(t.opened_us, excluded.opened_us)", "least(t.closed_us, excluded.closed_us)"),
    (_LEAST_SQLITE.format(c="opened_us"), _LEAST_SQLITE.format(c="closed_us")),
)


def _upsert_sql(spec: _Upsert, source: str, dialect: str) -> str:
    cols = [c for c, _ in spec.keys + spec.values]
    keys = ", ".join(c for c, _ in spec.keys)
    merges = spec.merge_pg if dialect == "postgresql" else spec.merge_sqlite
    sets = ", ".join(f"{c} = {m}" for (c, _), m in zip(spec.values, merges, strict=True))
    return f"INSERT INTO {spec.table} AS t ({', '.join(cols)}) {source} ON CONFLICT ({keys}) DO UPDATE SET {sets}"


def _pg_driver(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg ``Connection`` under ``conn`` (same transaction).

    Raises:
        TypeError: ``conn`` is not a psycopg connection (only PostgreSQL engines come here).
    """
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection under a PostgreSQL engine, got {type(driver).__name__}")
    return driver


def _pg_copy(cur: psycopg.Cursor[Any], sql: str, types: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    with cur.copy(sql) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


@contextlib.contextmanager
def _pg_errors(sql: str) -> Iterator[None]:
    """Turn psycopg errors raised on the raw connection into SQLAlchemy's (``IntegrityError`` for
    a unique violation, ``DBAPIError`` otherwise), which the group-commit writer maps to a retry
    or a 503."""
    try:
        yield
    except psycopg.IntegrityError as exc:
        raise IntegrityError(sql, None, exc) from exc
    except psycopg.Error as exc:
        raise DBAPIError(sql, None, exc) from exc


def _upsert(conn: Connection, spec: _Upsert, rows: list[tuple[Any, ...]]) -> None:
    """Add ``rows`` (tuples in ``spec.keys + spec.values`` order, unique keys) to ``spec.table``."""
    if not rows:
        return
    rows.sort(key=lambda r: r[: len(spec.keys)])  # one lock order for concurrent writers
    if conn.dialect.name != "postgresql":
        marks = ", ".join("?" * (len(spec.keys) + len(spec.values)))
        conn.exec_driver_sql(_upsert_sql(spec, f"VALUES ({marks})", "sqlite"), rows)
        return
    stage = f"pb_stage_{spec.table}"
    cols = spec.keys + spec.values
    names = ", ".join(c for c, _ in cols)
    with _pg_errors(f"COPY {stage}"):
        pg = _pg_driver(conn)
        with pg.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                f"({', '.join(f'{c} {ty}' for c, ty in cols)}) ON COMMIT DELETE ROWS"
            )
            _pg_copy(cur, f"COPY {stage} ({names}) FROM STDIN (FORMAT BINARY)", [ty for _, ty in cols], rows)
            keys = ", ".join(c for c, _ in spec.keys)
            cur.execute(_upsert_sql(spec, f"SELECT {names} FROM {stage} ORDER BY {keys}", "postgresql"))


def insert_events(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert raw event rows (tuples in ``_EVENT_COLUMNS`` order): binary ``COPY`` on PostgreSQL,
    one ``executemany`` on SQLite.

    Raises:
        sqlalchemy.exc.IntegrityError: a ``(source, event_id)`` is already stored.
        sqlalchemy.exc.DBAPIError: any other database failure.
    """
    if not rows:
        return
    names = ", ".join(_EVENT_COLUMNS)
    if conn.dialect.name != "postgresql":
        conn.exec_driver_sql(f"INSERT INTO event ({names}) VALUES ({', '.join('?' * len(_EVENT_COLUMNS))})", rows)
        return
    sql = f"COPY event ({names}) FROM STDIN (FORMAT BINARY)"
    with _pg_errors(sql):
        pg = _pg_driver(conn)
        with pg.cursor() as cur:
            _pg_copy(cur, sql, _EVENT_PG_TYPES, rows)


def check_finite(partials: dict[PartialKey, Partial]) -> None:
    """Refuse partials whose sum, min or max is not finite (before anything is written).

    Raises:
        NonFiniteAggregate: naming the measure and the UTC minute (µs).
    """
    for (measure, _dim, bucket_us), p in partials.items():
        if not math.isfinite(p.sum) or any(v is not None and not math.isfinite(v) for v in (p.min, p.max)):
            raise NonFiniteAggregate(
                f"the values of measure {measure!r} in the minute starting at {bucket_us} µs sum to a non-finite "
                "number (float64 overflow); nothing of this request was stored"
            )


def upsert_partials(conn: Connection, partials: dict[PartialKey, Partial]) -> None:
    """Add ``partials`` (per UTC minute) to the stored minute AND hour partials: count and sum
    add, min/max keep the extreme, and each sketch's bins add to the sketch-bin tables (no
    read-modify-write anywhere)."""
    minute_rows = [(m, d, b, p.count, p.sum, p.min, p.max) for (m, d, b), p in partials.items()]
    bin_rows = [
        (m, d, b, side, index, count)
        for (m, d, b), p in partials.items()
        if p.sketch is not None
        for side, index, count in p.sketch.bins()
    ]
    hours: dict[PartialKey, list[Any]] = {}  # [count, sum, min, max] per hour
    for m, d, b, count, total, mn, mx in minute_rows:
        hour = (m, d, b - b % HOUR_US)
        acc = hours.get(hour)
        if acc is None:
            hours[hour] = [count, total, mn, mx]
        else:
            acc[0] += count
            acc[1] += total
            if mn is not None and (acc[2] is None or mn < acc[2]):
                acc[2] = mn
            if mx is not None and (acc[3] is None or mx > acc[3]):
                acc[3] = mx
    for (m, _d, b), (_c, total, _mn, _mx) in hours.items():
        if not math.isfinite(total):
            raise NonFiniteAggregate(
                f"the values of measure {m!r} in the hour starting at {b} µs sum to a non-finite number "
                "(float64 overflow); nothing of this request was stored"
            )
    hour_bins: dict[tuple[str, str, int, int, int], int] = {}  # (measure, dim, hour, side, bin) -> count
    for m, d, b, side, index, count in bin_rows:
        bin_key = (m, d, b - b % HOUR_US, side, index)
        hour_bins[bin_key] = hour_bins.get(bin_key, 0) + count
    _upsert(conn, _MINUTE, minute_rows)
    _upsert(conn, _SKETCH_BIN, bin_rows)
    _upsert(conn, _HOUR, [(*k, *v) for k, v in hours.items()])
    _upsert(conn, _HOUR_SKETCH_BIN, [(*k, c) for k, c in hour_bins.items()])


def upsert_gauge_changes(conn: Connection, changes: Iterable[GaugeChange]) -> None:
    """Record opens and closes of gauge items: the earliest open and the earliest close per
    item (an incident resolved and later closed stops counting at its resolution)."""
    merged: dict[tuple[str, str, str], list[int | None]] = {}
    for ch in changes:
        slot = merged.setdefault((ch.gauge_key, ch.dim_key, ch.item_key), [None, None])
        idx = 0 if ch.kind == "open" else 1
        current = slot[idx]
        if current is None or ch.ts_us < current:
            slot[idx] = ch.ts_us
    _upsert(conn, _GAUGE, [(g, d, i, o, c) for (g, d, i), (o, c) in merged.items()])


def _remembered(
    conn: Connection, records: Sequence[IdempotencyRecord]
) -> dict[tuple[str, str], tuple[int, str, bytes]]:
    """Stored answers of these idempotency keys: ``(owner, key) -> (status, body, request hash)``."""
    found: dict[tuple[str, str], tuple[int, str, bytes]] = {}
    t = idempotency_key.c
    for rec in records:
        row = (
            conn.execute(select(t.status, t.body, t.request_hash).where(t.owner == rec.owner, t.key == rec.key))
        ).first()
        if row is not None:
            found[(rec.owner, rec.key)] = (row.status, row.body, bytes(row.request_hash))
    return found


def load_dimension_values(conn: Connection, cap: DimensionCap) -> None:
    """Fill ``cap.values`` with the dimension values that have rollup rows of their own: one
    ``DISTINCT`` over the hour rollups' keys (``measure`` is ``pack/measure``) and the gauge items'."""
    rows = conn.exec_driver_sql(
        "SELECT DISTINCT measure, dim_key FROM rollup_hour WHERE dim_key <> '' "
        "UNION SELECT DISTINCT gauge, dim_key FROM gauge_item WHERE dim_key <> ''"
    ).all()
    for key, dim_key in rows:
        pack = str(key).split("/", 1)[0]
        name, _, text = str(dim_key).partition("=")
        if text == OTHER:
            cap.overflowed.add((pack, name))
        else:
            cap.add_known(pack, name, text)
    cap.loaded = True


def outcome_answer(outcome: RequestOutcome) -> tuple[int, str]:
    """HTTP status and JSON body a request's outcome is answered with (remembered for its key)."""
    if outcome.conflict is not None:
        index, source, event_id = outcome.conflict
        return 409, msgspec.json.encode(
            {
                "type": "about:blank",
                "title": "Event id conflict",
                "status": 409,
                "detail": f"event {index}: (source={source!r}, id={event_id!r}) was stored before with a different "
                "body; nothing from this request was stored",
                "errors": [{"index": index, "field": "id", "message": "same (source, id), different body"}],
            }
        ).decode()
    return 202, msgspec.json.encode({"accepted": outcome.accepted, "duplicates": outcome.duplicates}).decode()


def write_group(
    conn: Connection,
    requests: Sequence[Sequence[NewEvent]],
    packs: Iterable[Pack],
    received_us: int,
    idempotency: Sequence[IdempotencyRecord | None] | None = None,
    cap: DimensionCap | None = None,
) -> GroupResult:
    """Store the events of several requests in the open transaction of ``conn``.

    With ``cap``, rolled-up dimension values past its cardinality cap roll up as ``__other__``
    (loaded from the store at the first call, ``load_dimension_values``).

    Each request is all-or-nothing: a request with a conflicting event stores
    nothing and gets ``conflict`` set; the others proceed.  The caller commits.

    Raises:
        sqlalchemy.exc.IntegrityError: when another writer inserted one of the
            keys between our check and insert; the caller rolls back and retries.
    """
    keys = list({(e.source, e.event_id) for req in requests for e in req})
    seen = _existing_hashes(conn, keys)
    answered = _remembered(conn, [rec for rec in (idempotency or ()) if rec is not None])
    outcomes: list[RequestOutcome] = []
    to_insert: list[NewEvent] = []
    for position, req in enumerate(requests):
        outcome = RequestOutcome()
        rec = idempotency[position] if idempotency else None
        if rec is not None and (rec.owner, rec.key) in answered:
            # A retry whose first request committed while this one waited: answer as the first did.
            outcome.remembered = answered[(rec.owner, rec.key)]
            outcomes.append(outcome)
            continue
        local: dict[tuple[str, str], bytes] = {}
        fresh: list[NewEvent] = []
        for index, ev in enumerate(req):
            key = (ev.source, ev.event_id)
            known = local.get(key) or seen.get(key)
            if known is not None:
                if known != ev.body_hash:
                    outcome.conflict = (index, ev.source, ev.event_id)
                    break
                outcome.duplicates += 1
                continue
            local[key] = ev.body_hash
            fresh.append(ev)
        if outcome.conflict is None:
            seen.update(local)
            to_insert.extend(fresh)
            outcome.accepted = len(fresh)
            outcome.duplicates = len(req) - len(fresh)
            outcome.max_ts_us = max((e.ts_us for e in req), default=None)
        else:
            outcome.duplicates = 0
        outcomes.append(outcome)

    if cap is not None and not cap.loaded:
        load_dimension_values(conn, cap)
    result = GroupResult(outcomes, inserted=len(to_insert))
    remembered = [
        {
            "owner": rec.owner,
            "key": rec.key,
            "request_hash": rec.request_hash,
            "status": status,
            "body": body,
            "created_us": received_us,
        }
        for rec, outcome in zip(idempotency or (), outcomes, strict=False)
        if rec is not None and outcome.remembered is None
        for status, body in [outcome_answer(outcome)]
    ]
    if remembered:
        conn.execute(idempotency_key.insert(), remembered)
    if not to_insert:
        return result
    insert_events(
        conn,
        [(e.source, e.event_id, e.type, e.ts_us, e.value, e.dims_json, e.body_hash, received_us) for e in to_insert],
    )
    rows = [EventRow(e.type, e.ts_us, e.value, e.dims) for e in to_insert]
    all_partials: dict[PartialKey, Partial] = {}
    all_changes: list[GaugeChange] = []
    for pack in packs:
        before = (len(all_partials), len(all_changes))
        rollup(pack, rows, all_partials, all_changes, cap)  # measure and gauge keys carry the pack's name
        if (len(all_partials), len(all_changes)) != before:
            result.packs_touched.add(pack.name)
    check_finite(all_partials)
    upsert_partials(conn, all_partials)
    upsert_gauge_changes(conn, all_changes)
    from app.store.lifecycles import apply_lifecycles  # it writes through this module's upserts

    result.packs_touched |= apply_lifecycles(conn, packs, rows)
    return result
