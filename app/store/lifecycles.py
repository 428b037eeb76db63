"""Item lifecycles (alarms) in the store: the write path's incremental fold and the reads.

``apply_lifecycles`` runs inside the group-commit transaction (``app.store.writes.write_group``)
with the events just inserted.  For every item they touch it reads the item's stored state
(``alarm_state``; on PostgreSQL ``FOR UPDATE``, so concurrent instances serialise on the item),
merges the events (``app.metrics.lifecycle.AlarmState.merge``), and replaces what the item
contributed: the old derivation is subtracted from the rollup partials and the new one added
(counts, sums and sketch bins: exact), and its ``gauge_item`` rows are replaced.  A new item's
state row is a plain INSERT (binary COPY on PostgreSQL), so two instances creating the same item
at once make one of them fail with ``IntegrityError``, which the writer retries (it then finds
the row).  The result equals ``app.metrics.lifecycle.derive_all`` over every raw event (a rebuild).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.lifecycle import AlarmState, Derived, add_contributions, derive, dims_text, lifecycle_events
from app.metrics.pack import Lifecycle, Pack
from app.metrics.partials import Partial
from app.metrics.rollup import EventRow, PartialKey
from app.metrics.timeweighted import Interval
from app.store.upserts import pg_copy, pg_driver, pg_errors, upsert_partials

KEY_CHUNK = 500
_STATE_COLUMNS = "raised_us, raise_dims, acked_us, cleared_us, updates"


def _sql(conn: Connection | AsyncConnection, sql: str) -> str:
    """``sql`` written with ``?`` placeholders, in the driver's paramstyle."""
    return sql if conn.dialect.paramstyle == "qmark" else sql.replace("%", "%%").replace("?", "%s")


def _load_states(conn: Connection, key: str, alarms: Sequence[str]) -> dict[str, AlarmState]:
    """The stored states of ``alarms`` of lifecycle ``key``: one query (PostgreSQL: the keys as one
    array, rows locked ``FOR UPDATE`` in key order), chunks of ``KEY_CHUNK`` keys on SQLite."""
    found: dict[str, AlarmState] = {}
    if conn.dialect.name == "postgresql":
        sql = (
            f"SELECT alarm, {_STATE_COLUMNS} FROM alarm_state WHERE lifecycle = %s AND alarm = ANY(%s::text[]) "
            "ORDER BY alarm FOR UPDATE"
        )
        with pg_errors(sql), pg_driver(conn).cursor() as cur:
            cur.execute(sql, (key, list(alarms)))
            rows = cur.fetchall()
    else:
        rows = []
        for i in range(0, len(alarms), KEY_CHUNK):
            chunk = list(alarms[i : i + KEY_CHUNK])
            sql = (
                f"SELECT alarm, {_STATE_COLUMNS} FROM alarm_state WHERE lifecycle = ? "
                f"AND alarm IN ({', '.join('?' * len(chunk))}) ORDER BY alarm"
            )
            rows += conn.exec_driver_sql(sql, (key, *chunk)).all()
    for r in rows:
        found[str(r[0])] = AlarmState.from_row(r[1], r[2], r[3], r[4], r[5])
    return found


def _state_row(key: str, alarm: str, state: AlarmState, derived: Derived) -> tuple[Any, ...]:
    row = state.to_row()
    return (
        row["raised_us"],
        row["raise_dims"],
        row["acked_us"],
        row["cleared_us"],
        row["updates"],
        derived.acked_us,
        derived.closed_us,
        dims_text(derived.dims) if state.raised is not None else None,
        key,
        alarm,
    )


def apply_lifecycles(
    conn: Connection,
    packs: Iterable[Pack],
    events: Sequence[EventRow],
    partials: dict[PartialKey, Partial] | None = None,
) -> set[str]:
    """Fold ``events`` (newly stored, not duplicates) into the lifecycles of ``packs`` in the open
    transaction of ``conn``: states, partial deltas and gauge rows (see the module docstring).

    Set-based: per lifecycle one read of the touched items' states, then one statement per kind of
    write for the whole group (PostgreSQL: new states and gauge rows by binary ``COPY``, changed
    states and removed gauge rows as arrays through ``unnest``; SQLite: one ``executemany``
    each), never a round trip per item.

    Args:
        partials: when given, the partial deltas are added to it (the write path upserts the
            group's rollups and these deltas together: one upsert per table and transaction);
            otherwise they are upserted here.

    Returns:
        the names of the packs whose lifecycles changed (their dashboards need a refresh).

    Raises:
        sqlalchemy.exc.IntegrityError: another writer created one of the items meanwhile (retry).
    """
    touched: set[str] = set()
    deltas: dict[PartialKey, Partial] = {}
    gauge_delete: set[tuple[str, str, str]] = set()
    gauge_upsert: dict[tuple[str, str, str], tuple[int, int | None]] = {}
    inserts: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    for pack in packs:
        if not pack.lifecycles:
            continue
        grouped: dict[str, dict[str, list[EventRow]]] = {}
        for found, alarm, ev in lifecycle_events(pack, events):
            grouped.setdefault(found.name, {}).setdefault(alarm, []).append(ev)
        for name, by_alarm in grouped.items():
            lc: Lifecycle = pack.lifecycles[name]
            key = pack.lifecycle_key(name)
            stored = _load_states(conn, key, sorted(by_alarm))
            for alarm, evs in by_alarm.items():
                old = stored.get(alarm)
                state = old or AlarmState()
                for ev in evs:
                    state = state.merge(lc, ev)
                if old is not None and state == old:
                    continue
                touched.add(pack.name)
                before = derive(pack, lc, alarm, old) if old is not None else Derived()
                after = derive(pack, lc, alarm, state)
                add_contributions(pack, lc, before, deltas, -1)
                add_contributions(pack, lc, after, deltas, 1)
                gauge_delete.update(k for k in before.gauge_rows if k not in after.gauge_rows)
                gauge_upsert.update((k, v) for k, v in after.gauge_rows.items() if before.gauge_rows.get(k) != v)
                (updates if old is not None else inserts).append(_state_row(key, alarm, state, after))
    if not touched:
        return touched
    inserts.sort(key=lambda r: (r[-2], r[-1]))
    updates.sort(key=lambda r: (r[-2], r[-1]))
    deletes = sorted(gauge_delete)
    upserts = sorted((*k, *v) for k, v in gauge_upsert.items())
    if conn.dialect.name == "postgresql":
        _write_pg(conn, inserts, updates, deletes, upserts)
    else:
        _write_sqlite(conn, inserts, updates, deletes, upserts)
    changed = {k: p for k, p in deltas.items() if p.count or p.sum or (p.sketch is not None and p.sketch.bins())}
    if partials is None:
        upsert_partials(conn, changed)
    else:
        for k, p in changed.items():  # lifecycle measures have keys of their own: a merge is a precaution
            mine = partials.get(k)
            if mine is None:
                partials[k] = p
            else:
                mine.merge(p)
    return touched


_STATE_WRITE = (
    ("raised_us", "int8"),
    ("raise_dims", "text"),
    ("acked_us", "int8"),
    ("cleared_us", "int8"),
    ("updates", "text"),
    ("acked_us_eff", "int8"),
    ("closed_us_eff", "int8"),
    ("dims", "text"),
    ("lifecycle", "text"),
    ("alarm", "text"),
)  # the order of ``_state_row``
_GAUGE_KEY = (("gauge", "text"), ("dim_key", "text"), ("item_key", "text"))
_GAUGE_ROW = (*_GAUGE_KEY, ("opened_us", "int8"), ("closed_us", "int8"))
_GAUGE_STAGE = "pb_stage_lifecycle_gauge_item"  # a session temp table of its own (not writes' gauge stage)
_GAUGE_REPLACE = (
    "ON CONFLICT (gauge, dim_key, item_key) DO UPDATE SET opened_us = excluded.opened_us, "
    "closed_us = excluded.closed_us"
)


def _write_sqlite(
    conn: Connection,
    inserts: list[tuple[Any, ...]],
    updates: list[tuple[Any, ...]],
    deletes: list[tuple[str, str, str]],
    upserts: list[tuple[Any, ...]],
) -> None:
    """The group's lifecycle rows: one ``executemany`` per kind of write."""
    names = ", ".join(c for c, _ in _STATE_WRITE)
    if inserts:
        conn.exec_driver_sql(
            f"INSERT INTO alarm_state ({names}) VALUES ({', '.join('?' * len(_STATE_WRITE))})", inserts
        )
    if updates:
        sets = ", ".join(f"{c} = ?" for c, _ in _STATE_WRITE[:-2])
        conn.exec_driver_sql(f"UPDATE alarm_state SET {sets} WHERE lifecycle = ? AND alarm = ?", updates)
    if deletes:
        conn.exec_driver_sql("DELETE FROM gauge_item WHERE gauge = ? AND dim_key = ? AND item_key = ?", deletes)
    if upserts:
        conn.exec_driver_sql(
            f"INSERT INTO gauge_item ({', '.join(c for c, _ in _GAUGE_ROW)}) VALUES (?, ?, ?, ?, ?) {_GAUGE_REPLACE}",
            upserts,
        )


def _unnest(columns: Sequence[tuple[str, str]]) -> str:
    """``unnest(%s::T[], ...) AS u(c, ...)``: the rows of one array parameter per column."""
    arrays = ", ".join(f"%s::{ty}[]" for _, ty in columns)
    return f"unnest({arrays}) AS u({', '.join(c for c, _ in columns)})"


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


def _write_pg(
    conn: Connection,
    inserts: list[tuple[Any, ...]],
    updates: list[tuple[Any, ...]],
    deletes: list[tuple[str, str, str]],
    upserts: list[tuple[Any, ...]],
) -> None:
    """The group's lifecycle rows in a fixed number of statements: new states by binary ``COPY``
    (a state created meanwhile by another writer is a unique violation: ``IntegrityError``,
    retried), changed states and removed gauge rows each as one statement over ``unnest`` arrays,
    new and changed gauge rows by binary ``COPY`` into a session temp table and one upsert from
    it (rows in key order: one lock order for concurrent writers)."""
    names = ", ".join(c for c, _ in _STATE_WRITE)
    with pg_errors("alarm lifecycle writes"), pg_driver(conn).cursor() as cur:
        if inserts:
            pg_copy(
                cur, f"COPY alarm_state ({names}) FROM STDIN (FORMAT BINARY)", [ty for _, ty in _STATE_WRITE], inserts
            )
        if updates:
            sets = ", ".join(f"{c} = u.{c}" for c, _ in _STATE_WRITE[:-2])
            cur.execute(
                f"UPDATE alarm_state AS t SET {sets} FROM {_unnest(_STATE_WRITE)} "
                "WHERE t.lifecycle = u.lifecycle AND t.alarm = u.alarm",
                _columns(updates, len(_STATE_WRITE)),
            )
        if deletes:
            cur.execute(
                f"DELETE FROM gauge_item AS t USING {_unnest(_GAUGE_KEY)} "
                "WHERE t.gauge = u.gauge AND t.dim_key = u.dim_key AND t.item_key = u.item_key",
                _columns(deletes, len(_GAUGE_KEY)),
            )
        if upserts:  # the bulk of the rows (one per item, gauge and dim key): binary COPY, not arrays
            names_g = ", ".join(c for c, _ in _GAUGE_ROW)
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_GAUGE_STAGE} "
                f"({', '.join(f'{c} {ty}' for c, ty in _GAUGE_ROW)}) ON COMMIT DELETE ROWS"
            )
            cur.execute(f"DELETE FROM {_GAUGE_STAGE}")  # empty already, unless a caller wrote twice
            pg_copy(
                cur,
                f"COPY {_GAUGE_STAGE} ({names_g}) FROM STDIN (FORMAT BINARY)",
                [ty for _, ty in _GAUGE_ROW],
                upserts,
            )
            cur.execute(
                f"INSERT INTO gauge_item ({names_g}) SELECT {names_g} FROM {_GAUGE_STAGE} "
                f"ORDER BY gauge, dim_key, item_key {_GAUGE_REPLACE}"
            )


# ---------------------------------------------------------------------------------------------
# Reads.


async def _rows(conn: AsyncConnection, sql: str, params: Sequence[object]) -> Sequence[Any]:
    return (await conn.exec_driver_sql(_sql(conn, sql), tuple(params))).all()


async def gauge_intervals(
    conn: AsyncConnection, gauge_key: str, dim_key: str, start_us: int, end_us: int, max_open_s: float
) -> list[Interval]:
    """The items of a gauge that may be open during ``[start_us, end_us)``: ``[(opened, closed)]``
    (closed ``None``: still open).  Items opened ``max_open_s`` or more before ``start_us`` are
    left out (they are dropped by then); the caller clips (``app.metrics.timeweighted``)."""
    oldest = start_us - int(max_open_s * 1_000_000)
    rows = await _rows(
        conn,
        "SELECT opened_us, closed_us FROM gauge_item WHERE gauge = ? AND dim_key = ? AND opened_us < ? "
        "AND opened_us > ? AND (closed_us IS NULL OR closed_us > ?)",
        [gauge_key, dim_key, end_us, oldest, start_us],
    )
    return [(int(row[0]), None if row[1] is None else int(row[1])) for row in rows if row[0] is not None]


async def peak_minute_count(conn: AsyncConnection, measure_key: str, dim_key: str, start_us: int, end_us: int) -> int:
    """The highest count of ``measure_key`` in one stored minute of ``[start_us, end_us)`` (0 if none)."""
    rows = await _rows(
        conn,
        "SELECT MAX(count) FROM rollup_minute WHERE measure = ? AND dim_key = ? AND bucket_us >= ? AND bucket_us < ?",
        [measure_key, dim_key, start_us, end_us],
    )
    return int(rows[0][0] or 0)


async def open_items(
    conn: AsyncConnection, lifecycle_key: str, at_us: int, max_open_s: float
) -> list[tuple[str, AlarmState]]:
    """Items of a lifecycle open at ``at_us``: raised at or before it (within ``max_open_s``) and
    not cleared by then, with their states."""
    oldest = at_us - int(max_open_s * 1_000_000)
    raised = f"SELECT alarm, {_STATE_COLUMNS} FROM alarm_state WHERE lifecycle = ? AND raised_us <= ? AND raised_us > ?"
    params: list[object] = [lifecycle_key, at_us, oldest]
    rows = await _rows(  # two index ranges on the clear (few items are open), not every raise since max_open_s
        conn,
        f"{raised} AND closed_us_eff IS NULL UNION ALL {raised} AND closed_us_eff > ?",
        [*params, *params, at_us],
    )
    return [(str(r[0]), AlarmState.from_row(r[1], r[2], r[3], r[4], r[5])) for r in rows]
