"""Set-based upserts of the derived rollup tables and the raw event insert, shared by the
group-commit write path (``app.store.writes``), the alarm lifecycles (``app.store.lifecycles``) and
rebuilds (``app.store.rebuild``): additive merges in one statement per table (``INSERT ... ON
CONFLICT DO UPDATE``), binary COPY on PostgreSQL, sums kept finite."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.metrics.calendar import HOUR_US
from app.metrics.partials import Partial
from app.metrics.rollup import GaugeChange, PartialKey


class NonFiniteAggregate(ValueError):
    """A rolled-up sum (or min/max) of a request's values is not finite (issue 10 item 1): the
    values overflow float64 alone or merged with what is stored.  Nothing of the transaction is
    kept; the group-commit writer retries the other requests of its group without this one."""


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
_DISTINCT = _Upsert(
    "rollup_distinct_minute",
    (("measure", "varchar"), ("dim_key", "varchar"), ("bucket_us", "int8"), ("reg", "int8")),
    (("rank", "int2"),),
    ("greatest(t.rank, excluded.rank)",),
    ("max(t.rank, excluded.rank)",),
)
_HOUR_DISTINCT = _DISTINCT._replace(table="rollup_distinct_hour")
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


def pg_driver(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg ``Connection`` under ``conn`` (same transaction).

    Raises:
        TypeError: ``conn`` is not a psycopg connection (only PostgreSQL engines come here).
    """
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection under a PostgreSQL engine, got {type(driver).__name__}")
    return driver


def pg_copy(cur: psycopg.Cursor[Any], sql: str, types: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    with cur.copy(sql) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


@contextlib.contextmanager
def pg_errors(sql: str) -> Iterator[None]:
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
    with pg_errors(f"COPY {stage}"):
        pg = pg_driver(conn)
        with pg.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                f"({', '.join(f'{c} {ty}' for c, ty in cols)}) ON COMMIT DELETE ROWS"
            )
            pg_copy(cur, f"COPY {stage} ({names}) FROM STDIN (FORMAT BINARY)", [ty for _, ty in cols], rows)
            keys = ", ".join(c for c, _ in spec.keys)
            cur.execute(_upsert_sql(spec, f"SELECT {names} FROM {stage} ORDER BY {keys}", "postgresql"))
            # Emptied at once, not only at commit: a second upsert of the table in the same
            # transaction (a rebuild chunk, a retried group) must not add these rows again.
            cur.execute(f"DELETE FROM {stage}")


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
    with pg_errors(sql):
        pg = pg_driver(conn)
        with pg.cursor() as cur:
            pg_copy(cur, sql, _EVENT_PG_TYPES, rows)


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


def upsert_partials(conn: Connection, partials: dict[PartialKey, Partial]) -> int:
    """Add ``partials`` (per UTC minute) to the stored minute AND hour partials: count and sum
    add, min/max keep the extreme, and each sketch's bins add to the sketch-bin tables (no
    read-modify-write anywhere); distinct-count registers go to the register tables, merged by
    max.  Returns the number of rows upserted."""
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
    written = len(minute_rows) + len(bin_rows) + len(hours) + len(hour_bins)
    if any(p.distinct is not None for p in partials.values()):  # distinct-count registers, merged by max
        registers = [
            (m, d, b, index, rank)
            for (m, d, b), p in partials.items()
            if p.distinct is not None
            for index, rank in p.distinct.items()
        ]
        hour_regs: dict[tuple[str, str, int, int], int] = {}
        for m, d, b, index, rank in registers:
            reg_key = (m, d, b - b % HOUR_US, index)
            if hour_regs.get(reg_key, 0) < rank:
                hour_regs[reg_key] = rank
        _upsert(conn, _DISTINCT, registers)
        _upsert(conn, _HOUR_DISTINCT, [(*k, r) for k, r in hour_regs.items()])
        written += len(registers) + len(hour_regs)
    return written


def upsert_gauge_changes(conn: Connection, changes: Iterable[GaugeChange]) -> int:
    """Record opens and closes of gauge items: the earliest open and the earliest close per
    item (an incident resolved and later closed stops counting at its resolution).  Returns the
    number of item rows upserted."""
    merged: dict[tuple[str, str, str], list[int | None]] = {}
    for ch in changes:
        slot = merged.setdefault((ch.gauge_key, ch.dim_key, ch.item_key), [None, None])
        idx = 0 if ch.kind == "open" else 1
        current = slot[idx]
        if current is None or ch.ts_us < current:
            slot[idx] = ch.ts_us
    _upsert(conn, _GAUGE, [(g, d, i, o, c) for (g, d, i), (o, c) in merged.items()])
    return len(merged)
