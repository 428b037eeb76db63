"""The read path: merged partials over windows, gauge readings, raw events."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import Any

import msgspec
from sqlalchemy import Row, Table, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.calendar import HOUR_US
from app.metrics.evaluate import GaugeReading
from app.metrics.hll import HyperLogLog
from app.metrics.partials import Partial
from app.metrics.rollup import EventRow
from app.metrics.sketch import Sketch
from app.store.schema import (
    event,
    rollup_distinct_hour,
    rollup_distinct_minute,
    rollup_hour,
    rollup_hour_sketch_bin,
    rollup_minute,
    rollup_sketch_bin,
)

_json = msgspec.json.Decoder()


def _pieces(start_us: int, end_us: int) -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
    """Split ``[start_us, end_us)`` into whole UTC hours (read from the hour partials) and the
    ragged minute edges around them: ``(hours or None, [minute ranges])``."""
    first_hour = -(-start_us // HOUR_US) * HOUR_US
    last_hour = end_us // HOUR_US * HOUR_US
    if first_hour >= last_hour:
        return None, [(start_us, end_us)] if start_us < end_us else []
    edges = [(lo, hi) for lo, hi in ((start_us, first_hour), (last_hour, end_us)) if lo < hi]
    return (first_hour, last_hour), edges


async def aggregate(
    conn: AsyncConnection,
    measure_keys: Sequence[str],
    dim_key: str,
    start_us: int,
    end_us: int,
    sketch_keys: Iterable[str] = (),
    distinct_keys: Iterable[str] = (),
) -> dict[str, Partial]:
    """Merge the stored partials of ``measure_keys`` over ``[start_us, end_us)``: whole hours
    from the hour partials, the edges from the minute partials.

    Returns:
        measure_key -> merged ``Partial`` (measures with no rows are absent).
        Sketches are merged only for ``sketch_keys``, by summing their bins in SQL; the
        distinct-count registers of ``distinct_keys``, by their maximum in SQL.
    """
    return (
        await aggregate_windows(conn, measure_keys, dim_key, [(start_us, end_us)], sketch_keys, False, distinct_keys)
    )[0]


async def aggregate_windows(
    conn: AsyncConnection,
    measure_keys: Sequence[str],
    dim_key: str,
    windows: Sequence[tuple[int, int]],
    sketch_keys: Iterable[str] = (),
    minutes_only: bool = False,
    distinct_keys: Iterable[str] = (),
) -> list[dict[str, Partial]]:
    """``aggregate`` over several windows ``[start_us, end_us)`` at once: one conditional
    aggregate (a column group per window) over the hour partials and one over the minute
    edges, plus the same for sketch bins when asked.  ``minutes_only`` reads the minute
    partials alone (reconciliation checks both tables against raw events).

    Returns:
        one ``measure_key -> Partial`` dict per window, in order.
    """
    grid = await aggregate_grid(conn, measure_keys, [dim_key], windows, sketch_keys, minutes_only, distinct_keys)
    return grid[dim_key]


async def aggregate_grid(
    conn: AsyncConnection,
    measure_keys: Sequence[str],
    dim_keys: Sequence[str],
    windows: Sequence[tuple[int, int]],
    sketch_keys: Iterable[str] = (),
    minutes_only: bool = False,
    distinct_keys: Iterable[str] = (),
) -> dict[str, list[dict[str, Partial]]]:
    """``aggregate_windows`` for several dimension keys at once (still one query per table):
    what a dashboard with per-queue tiles reads on every refresh.

    Returns:
        dim_key -> one ``measure_key -> Partial`` dict per window, in order.
    """
    out: dict[str, list[dict[str, Partial]]] = {d: [{} for _ in windows] for d in dim_keys}
    if not dim_keys:
        return out
    split = [
        (None, [(start, end)] if start < end else []) if minutes_only else _pieces(start, end) for start, end in windows
    ]
    keys = list(measure_keys)
    sources = ((rollup_hour, [[h] if h else [] for h, _ in split]), (rollup_minute, [edges for _, edges in split]))
    for table, ranges in sources:
        await _add_partials(conn, table, keys, list(dim_keys), ranges, out)
    wanted = [k for k in sketch_keys if any(k in got for per_dim in out.values() for got in per_dim)]
    if wanted:
        for table, ranges in ((rollup_hour_sketch_bin, sources[0][1]), (rollup_sketch_bin, sources[1][1])):
            await _add_sketch_bins(conn, table, wanted, list(dim_keys), ranges, out)
    distinct = [k for k in distinct_keys if any(k in got for per_dim in out.values() for got in per_dim)]
    if distinct:
        for per_dim in out.values():  # a distinct-count measure always reads its registers (none: 0)
            for got in per_dim:
                for k in distinct:
                    if k in got and got[k].distinct is None:
                        got[k].distinct = HyperLogLog()
        tables = ((rollup_distinct_hour, sources[0][1]), (rollup_distinct_minute, sources[1][1]))
        for table, ranges in tables:
            await _add_registers(conn, table, distinct, list(dim_keys), ranges, out)
    return out


def _range_sql(ranges: Sequence[tuple[int, int]], params: list[int | str]) -> str:
    """SQL condition "bucket_us in one of ``ranges``" (its parameters appended to ``params``)."""
    if not ranges:
        return "1 = 0"
    for lo, hi in ranges:
        params += [lo, hi]
    return "(" + " OR ".join(["(bucket_us >= ? AND bucket_us < ?)"] * len(ranges)) + ")"


async def _driver_rows(conn: AsyncConnection, sql: str, params: Sequence[object]) -> Sequence[Row[*tuple[Any, ...]]]:
    """Rows of driver-level ``sql`` written with ``?`` placeholders (no statement compilation:
    these reads run on every tile refresh, where building SQLAlchemy expressions cost more
    than the queries)."""
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("%", "%%").replace("?", "%s")
    return (await conn.exec_driver_sql(sql, tuple(params))).all()


def _where(
    keys: Sequence[str], dim_keys: Sequence[str], every: Sequence[tuple[int, int]], params: list[int | str]
) -> str:
    """``WHERE`` of the grid reads: the measures, the dimension keys, ONE index range covering
    every window (an OR of ranges makes SQLite scan every bucket)."""
    params += [*keys, *dim_keys, min(lo for lo, _ in every), max(hi for _, hi in every)]
    return (
        f"WHERE measure IN ({', '.join('?' * len(keys))}) AND dim_key IN ({', '.join('?' * len(dim_keys))}) "
        "AND bucket_us >= ? AND bucket_us < ?"
    )


async def _add_partials(
    conn: AsyncConnection,
    table: Table,
    keys: list[str],
    dim_keys: list[str],
    ranges: list[list[tuple[int, int]]],
    out: dict[str, list[dict[str, Partial]]],
) -> None:
    """Merge ``table``'s rows in ``ranges[i]`` into ``out[dim_key][i]`` for every window ``i``:
    one query."""
    every = [r for rs in ranges for r in rs]
    if not every:
        return
    params: list[int | str] = []
    columns = []
    for rs in ranges:
        inside = _range_sql(rs, params)
        params += params[len(params) - 2 * len(rs) :] * 3
        columns.append(
            f"SUM(CASE WHEN {inside} THEN count END), SUM(CASE WHEN {inside} THEN sum END), "
            f"MIN(CASE WHEN {inside} THEN min END), MAX(CASE WHEN {inside} THEN max END)"
        )
    where = _where(keys, dim_keys, every, params)
    rows = await _driver_rows(
        conn,
        f"SELECT measure, dim_key, {', '.join(columns)} FROM {table.name} {where} GROUP BY measure, dim_key",
        params,
    )
    for row in rows:
        measure, per_window = row[0], out[row[1]]
        for i in range(len(ranges)):
            count, total, mn, mx = row[2 + 4 * i : 6 + 4 * i]
            if count is None:
                continue
            part = Partial(int(count), float(total or 0.0), mn, mx)
            if measure in per_window[i]:
                per_window[i][measure].merge(part)
            else:
                per_window[i][measure] = part


async def _add_registers(
    conn: AsyncConnection,
    table: Table,
    keys: list[str],
    dim_keys: list[str],
    ranges: list[list[tuple[int, int]]],
    out: dict[str, list[dict[str, Partial]]],
) -> None:
    """Merge ``table``'s distinct-count registers in ``ranges[i]`` into ``out[dim_key][i]``
    (the maximum rank per register, in SQL): one query."""
    every = [r for rs in ranges for r in rs]
    if not every:
        return
    params: list[int | str] = []
    columns = [f"MAX(CASE WHEN {_range_sql(rs, params)} THEN rank END)" for rs in ranges]
    where = _where(keys, dim_keys, every, params)
    rows = await _driver_rows(
        conn,
        f"SELECT measure, dim_key, reg, {', '.join(columns)} FROM {table.name} {where} GROUP BY measure, dim_key, reg",
        params,
    )
    for measure, dim_key, index, *ranks in rows:
        for i, rank in enumerate(ranks):
            part = out[dim_key][i].get(measure)
            if rank and part is not None and part.distinct is not None:
                part.distinct.add_register(int(index), int(rank))


async def _add_sketch_bins(
    conn: AsyncConnection,
    table: Table,
    keys: list[str],
    dim_keys: list[str],
    ranges: list[list[tuple[int, int]]],
    out: dict[str, list[dict[str, Partial]]],
) -> None:
    """Add ``table``'s sketch bins in ``ranges[i]`` to the sketches of ``out[dim_key][i]``: one query."""
    every = [r for rs in ranges for r in rs]
    if not every:
        return
    params: list[int | str] = []
    columns = [f"SUM(CASE WHEN {_range_sql(rs, params)} THEN count END)" for rs in ranges]
    where = _where(keys, dim_keys, every, params)
    rows = await _driver_rows(
        conn,
        f"SELECT measure, dim_key, side, bin, {', '.join(columns)} FROM {table.name} "
        f"{where} GROUP BY measure, dim_key, side, bin",
        params,
    )
    for measure, dim_key, side, index, *counts in rows:
        for i, count in enumerate(counts):
            part = out[dim_key][i].get(measure)
            if count and part is not None:
                if part.sketch is None:
                    part.sketch = Sketch()
                part.sketch.add_bin(side, index, int(count))


async def minute_rows(
    conn: AsyncConnection,
    measure_keys: Sequence[str],
    dim_key: str,
    start_us: int,
    end_us: int,
    sketch_keys: Iterable[str] = (),
) -> list[tuple[str, int, Partial]]:
    """The stored minute partials ``(measure_key, bucket_us, Partial)`` in ``[start_us, end_us)``;
    sketches only for ``sketch_keys``."""
    t = rollup_minute.c
    rows = await conn.execute(
        select(t.measure, t.bucket_us, t.count, t.sum, t.min, t.max).where(
            t.measure.in_(list(measure_keys)), t.dim_key == dim_key, t.bucket_us >= start_us, t.bucket_us < end_us
        )
    )
    out = {(m, bucket): Partial(int(c), float(s), mn, mx) for m, bucket, c, s, mn, mx in rows}
    wanted = [k for k in sketch_keys if k in measure_keys]
    if wanted:
        b = rollup_sketch_bin.c
        bin_rows = await conn.execute(
            select(b.measure, b.bucket_us, b.side, b.bin, b.count).where(
                b.measure.in_(wanted), b.dim_key == dim_key, b.bucket_us >= start_us, b.bucket_us < end_us
            )
        )
        for measure, bucket, side, index, count in bin_rows:
            part = out.get((measure, bucket))
            if part is None:
                continue
            if part.sketch is None:
                part.sketch = Sketch()
            part.sketch.add_bin(side, index, int(count))
    return [(m, bucket, p) for (m, bucket), p in out.items()]


async def gauge_reading(
    conn: AsyncConnection, gauge_key: str, dim_key: str, at_us: int, max_open_s: float, live: bool = False
) -> GaugeReading:
    """Items of a gauge open at instant ``at_us``: opened at or before it (within
    ``max_open_s``), and not closed by then.

    ``live=True`` (``at_us`` is the newest instant, as for live tiles) looks the open items up
    by close time (no close, or a close after ``at_us``: few), instead of scanning every item
    opened in the last ``max_open_s`` (the right plan for instants in the past).  Same answer.
    """
    oldest_allowed = at_us - int(max_open_s * 1_000_000)
    opened = "gauge = ? AND dim_key = ? AND opened_us <= ? AND opened_us > ?"
    params = [gauge_key, dim_key, at_us, oldest_allowed]
    if live:
        sql = (
            f"SELECT count(*), min(opened_us) FROM (SELECT opened_us FROM gauge_item WHERE {opened} "
            f"AND closed_us IS NULL UNION ALL SELECT opened_us FROM gauge_item WHERE {opened} "
            "AND closed_us > ?) AS open_items"
        )
        params = params + params + [at_us]
    else:
        sql = f"SELECT count(*), min(opened_us) FROM gauge_item WHERE {opened} AND (closed_us IS NULL OR closed_us > ?)"
        params.append(at_us)
    count, oldest = (await _driver_rows(conn, sql, params))[0]
    return GaugeReading(int(count or 0), oldest)


async def gauge_readings_live(
    conn: AsyncConnection, gauge_key: str, dim_keys: Sequence[str], at_us: int, max_open_s: float
) -> dict[str, GaugeReading]:
    """``gauge_reading(..., live=True)`` for several dimension keys in one query
    (``dim_key -> GaugeReading``; every key asked for is in the answer)."""
    oldest_allowed = at_us - int(max_open_s * 1_000_000)
    opened = f"gauge = ? AND dim_key IN ({', '.join('?' * len(dim_keys))}) AND opened_us <= ? AND opened_us > ?"
    params = [gauge_key, *dim_keys, at_us, oldest_allowed]
    sql = (
        f"SELECT dim_key, count(*), min(opened_us) FROM (SELECT dim_key, opened_us FROM gauge_item "
        f"WHERE {opened} AND closed_us IS NULL UNION ALL SELECT dim_key, opened_us FROM gauge_item "
        f"WHERE {opened} AND closed_us > ?) AS open_items GROUP BY dim_key"
    )
    out = {d: GaugeReading(0, None) for d in dim_keys}
    if dim_keys:
        for dim_key, count, oldest in await _driver_rows(conn, sql, params + params + [at_us]):
            out[dim_key] = GaugeReading(int(count), oldest)
    return out


async def raw_events(
    conn: AsyncConnection, types: Iterable[str], start_us: int, end_us: int, batch: int = 5000
) -> AsyncGenerator[list[EventRow], None]:
    """Stream stored events of ``types`` with ``ts`` in ``[start_us, end_us)``, in batches (close the
    generator, e.g. with ``contextlib.aclosing``, when stopping early)."""
    t = event.c
    result = await conn.stream(
        select(t.type, t.ts_us, t.value, t.dims)
        .where(t.type.in_(list(types)), t.ts_us >= start_us, t.ts_us < end_us)
        .execution_options(yield_per=batch)
    )
    try:
        async for part in result.partitions(batch):
            yield [EventRow(ty, ts, val, _json.decode(d) if d else None) for ty, ts, val, d in part]
    finally:  # a reader that stops early (a scan over its budget) closes the server-side cursor
        await result.close()


async def event_count(conn: AsyncConnection) -> int:
    """Number of stored raw events."""
    return int((await conn.execute(select(func.count()).select_from(event))).scalar_one())


_SQL_OPS = {"lt": "__lt__", "le": "__le__", "gt": "__gt__", "ge": "__ge__", "eq": "__eq__", "ne": "__ne__"}


async def raw_measure_totals(
    conn: AsyncConnection,
    event_type: str,
    value_filters: Mapping[str, Sequence[tuple[str, float]]],
    start_us: int,
    end_us: int,
) -> dict[str, tuple[int, float]]:
    """``name -> (count, sum of values)`` of the raw events of ``event_type`` in
    ``[start_us, end_us)`` that pass each named value filter (``(op, threshold)`` pairs; an
    empty filter passes every event), all from ONE scan: a conditional aggregate per name."""
    t = event.c
    columns = []
    for value_filter in value_filters.values():
        if not value_filter:
            columns += [func.count(), func.coalesce(func.sum(t.value), 0.0)]
            continue
        cond = and_(
            t.value.is_not(None), *(getattr(t.value, _SQL_OPS[op])(threshold) for op, threshold in value_filter)
        )
        columns += [func.count(case((cond, 1))), func.coalesce(func.sum(case((cond, t.value))), 0.0)]
    if not columns:
        return {}
    row = (
        await conn.execute(select(*columns).where(t.type == event_type, t.ts_us >= start_us, t.ts_us < end_us))
    ).one()
    return {name: (int(row[2 * i]), float(row[2 * i + 1])) for i, name in enumerate(value_filters)}


def _window_case(ranges: Sequence[Sequence[tuple[int, int]]]) -> str:
    """SQL ``CASE`` giving the index ``i`` of the window whose ``ranges[i]`` holds ``bucket_us``
    (NULL outside them).  The bounds are Python ints written as literals: no parameter limit
    (SQLite, asyncpg) however many windows a series has."""
    whens = [
        f"WHEN bucket_us >= {int(lo)} AND bucket_us < {int(hi)} THEN {i}"
        for i, rs in enumerate(ranges)
        for lo, hi in rs
    ]
    return f"CASE {' '.join(whens)} END"


async def _grouped_rows(
    conn: AsyncConnection,
    table: Table,
    keys: Sequence[str],
    dim_key: str,
    ranges: Sequence[Sequence[tuple[int, int]]],
    group: str,
    columns: str,
) -> Sequence[Row[*tuple[Any, ...]]]:
    """``SELECT measure, <window index>, <group>, <columns>`` of ``table`` grouped by measure,
    window and ``group``, for the rows inside some window's ranges: one query."""
    every = [r for rs in ranges for r in rs]
    if not every or not keys:
        return []
    params: list[int | str] = [*keys, dim_key]
    sql = (
        f"SELECT measure, {_window_case(ranges)} AS series_window{group and ', ' + group}, {columns} "
        f"FROM {table.name} WHERE measure IN ({', '.join('?' * len(keys))}) AND dim_key = ? "
        f"AND bucket_us >= {min(lo for lo, _ in every)} AND bucket_us < {max(hi for _, hi in every)} "
        f"GROUP BY measure, series_window{group and ', ' + group}"
    )
    return [row for row in await _driver_rows(conn, sql, params) if row[1] is not None]


async def aggregate_series(
    conn: AsyncConnection,
    measure_keys: Sequence[str],
    dim_key: str,
    windows: Sequence[tuple[int, int]],
    sketch_keys: Iterable[str] = (),
    distinct_keys: Iterable[str] = (),
) -> list[dict[str, Partial]]:
    """``aggregate`` over many DISJOINT windows (the periods of a series) in a constant number
    of queries: per table (hour and minute partials, sketch bins, distinct registers) one query
    grouped by a ``CASE`` giving each bucket's window, so a 365-day series costs what a 30-day
    one does (``aggregate_windows`` adds a column group per window instead: fine for a few).

    Returns:
        one ``measure_key -> Partial`` dict per window, in order, equal to ``aggregate`` of
        each window.
    """
    out: list[dict[str, Partial]] = [{} for _ in windows]
    split = [_pieces(start, end) for start, end in windows]
    hours = [[h] if h else [] for h, _ in split]
    minutes = [edges for _, edges in split]
    keys = list(measure_keys)
    sources = ((rollup_hour, hours), (rollup_minute, minutes))
    for table, ranges in sources:
        rows = await _grouped_rows(conn, table, keys, dim_key, ranges, "", "SUM(count), SUM(sum), MIN(min), MAX(max)")
        for measure, i, count, total, mn, mx in rows:
            if count is None:
                continue
            part = Partial(int(count), float(total or 0.0), mn, mx)
            if measure in out[i]:
                out[i][measure].merge(part)
            else:
                out[i][measure] = part
    wanted = [k for k in sketch_keys if any(k in got for got in out)]
    if wanted:
        for table, ranges in ((rollup_hour_sketch_bin, hours), (rollup_sketch_bin, minutes)):
            rows = await _grouped_rows(conn, table, wanted, dim_key, ranges, "side, bin", "SUM(count)")
            for measure, i, side, index, count in rows:
                part = out[i].get(measure)
                if count and part is not None:
                    if part.sketch is None:
                        part.sketch = Sketch()
                    part.sketch.add_bin(side, index, int(count))
    distinct = [k for k in distinct_keys if any(k in got for got in out)]
    if distinct:
        for got in out:  # a distinct-count measure always reads its registers (none: 0)
            for k in distinct:
                if k in got and got[k].distinct is None:
                    got[k].distinct = HyperLogLog()
        for table, ranges in ((rollup_distinct_hour, hours), (rollup_distinct_minute, minutes)):
            rows = await _grouped_rows(conn, table, distinct, dim_key, ranges, "reg", "MAX(rank)")
            for measure, i, index, rank in rows:
                part = out[i].get(measure)
                if rank and part is not None and part.distinct is not None:
                    part.distinct.add_register(int(index), int(rank))
    return out


async def gauge_readings_at(
    conn: AsyncConnection, gauge_key: str, dim_key: str, instants_us: Sequence[int], max_open_s: float
) -> list[GaugeReading]:
    """``gauge_reading`` (the past-instant plan) at each of ``instants_us`` in ONE query: the
    instants as a ``VALUES`` list joined to the items open at each (what a gauge KPI's series
    reads, one instant per period end).

    Returns:
        one ``GaugeReading`` per instant, in order.
    """
    if not instants_us:
        return []
    open_us = int(max_open_s * 1_000_000)
    values = ", ".join(f"({i}, {int(at)}, {int(at) - open_us})" for i, at in enumerate(instants_us))
    sql = (
        f"WITH instants (i, at_us, oldest_us) AS (VALUES {values}) "
        "SELECT instants.i, count(g.opened_us), min(g.opened_us) FROM instants LEFT JOIN gauge_item g "
        "ON g.gauge = ? AND g.dim_key = ? AND g.opened_us <= instants.at_us AND g.opened_us > instants.oldest_us "
        "AND (g.closed_us IS NULL OR g.closed_us > instants.at_us) GROUP BY instants.i"
    )
    out = [GaugeReading(0, None) for _ in instants_us]
    for i, count, oldest in await _driver_rows(conn, sql, [gauge_key, dim_key]):
        out[int(i)] = GaugeReading(int(count or 0), oldest)
    return out
