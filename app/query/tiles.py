"""Live tiles: every tile of a dashboard evaluated at one instant, and their sparklines.

Reads a whole dashboard at once (one conditional aggregate per partial table over every
window and rolled-up filter, one live reading per gauge); used by the WebSocket hub and by
``GET /api/v1/dashboards/{slug}``.  Time-weighted, rate and peak tiles add one read each
(``app.query.timeweighted``); an ``alarm_list`` tile is the open alarms at ``now``
(``app.query.alarms``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.calendar import from_us, period_containing
from app.metrics.evaluate import GaugeReading, KpiValue, evaluate, rag_status
from app.metrics.pack import Dashboard, Gauge, Kpi, Pack, Tile
from app.metrics.partials import Partial
from app.metrics.rollup import filter_dim_key
from app.metrics.windows import window_bounds
from app.query.alarms import alarm_list_tile, open_alarms
from app.query.errors import QueryError
from app.query.freshness import dashboard_freshness, freshness_json, tile_bounds
from app.query.kpis import gauge_of, pack_partials, sketch_measures
from app.query.timeweighted import window_reading
from app.store import reads

Dims = tuple[tuple[str, str], ...]  # a tile's dimension filter, sorted by key


WINDOW_GRAIN = {"today": "day", "month": "month"}  # calendar windows take the target of their grain


def tile_target(kpi: Kpi, window: str) -> tuple[float | None, str]:
    """``(target, which)`` of a tile: a ``today`` tile takes the KPI's day target and a ``month``
    tile its month target when the pack sets one (``which`` = the grain), else the base target
    (``which`` = ``"base"``)."""
    grain = WINDOW_GRAIN.get(window)
    per_grain = dict(kpi.targets)
    if grain is not None and grain in per_grain:
        return per_grain[grain], grain
    return kpi.target, "base"


def tile_json(tile: Tile, kpi: Kpi, value: KpiValue, now_us: int, zone: ZoneInfo) -> dict[str, Any]:
    """The wire form of a tile (CONTRACT §4), plus title, dims and decimals for display."""
    target, which = tile_target(kpi, tile.window)
    return {
        "kpi": kpi.name,
        "window": tile.window,
        "value": value.value,
        "unit": kpi.unit,
        "status": rag_status(kpi, value.value, target),
        "target": target,
        "target_grain": which,
        "owner": {"role": kpi.owner.role, "person": kpi.owner.person} if kpi.owner else None,
        "direction": kpi.direction,
        "as_of": from_us(now_us, zone).isoformat(),
        "title": tile.title or kpi.title,
        "dims": dict(tile.dims),
        "size": tile.size,
    }


async def dashboard_tiles(
    conn: AsyncConnection,
    pack: Pack,
    dashboard: Dashboard,
    now_us: int,
    zone: ZoneInfo,
    freshness: Freshness | None = None,
) -> dict[str, dict[str, Any]]:
    """Every tile of ``dashboard`` evaluated at ``now_us`` (tile id -> tile JSON).

    ``freshness``: how to give each KPI tile its ``freshness`` and ``links`` (the drill-down of its
    window, the scorecard and day page of its KPI); without it tiles carry neither.

    Reads once for the whole dashboard: one conditional aggregate per partial table over every
    (window, rolled-up filter) the tiles show, and one live reading per gauge over all its
    filters; only filters that are not rolled up are computed from raw events, per window.
    """
    partials = await _window_partials(conn, pack, dashboard, now_us, zone)
    readings = await _gauge_readings(conn, pack, dashboard, now_us)
    out: dict[str, dict[str, Any]] = {}
    for tile in dashboard.tiles:
        if tile.kind == "alarm_list":
            out[tile.id] = await alarm_list_tile(conn, pack, tile, now_us, zone)
            continue
        kpi = pack.kpis[tile.kpi]
        if kpi.is_gauge:
            value = evaluate(kpi, {}, readings[(gauge_of(pack, kpi).name, tile.dims)], now_us)
        elif kpi.reads_window:
            start, end = window_bounds(tile.window, now_us, zone)
            reading = await window_reading(conn, pack, [kpi], tile.dims, start, end, now_us)
            value = evaluate(kpi, partials[(tile.window, tile.dims)], window=reading)
        else:
            value = evaluate(kpi, partials[(tile.window, tile.dims)])
        out[tile.id] = tile_json(tile, kpi, value, now_us, zone)
    if freshness is not None:
        counts = await freshness.counts(conn, pack, dashboard, now_us, zone)
        for tile in dashboard.tiles:
            if tile.id in out and tile.kind == "kpi":
                out[tile.id]["freshness"] = freshness_json(
                    counts.get(tile.id), now_us, zone, freshness.late_after_s, freshness.stale_after_s
                )
                out[tile.id]["links"] = tile_links(pack, dashboard, tile, now_us, zone)
    return out


@dataclass
class Freshness:
    """Freshness settings of a caller, with its cache: the counts (``app.query.freshness``) are
    re-read at most every ``interval_s`` seconds of loop time (0: every time); between reads the
    lag still follows ``now``.

    Args:
        late_after_s: an event later than this after its own time is late.
        stale_after_s: the wall shows a tile's data age past this lag.
        interval_s: how long read counts are reused.
    """

    late_after_s: float
    stale_after_s: float
    interval_s: float = 0.0
    _cached: dict[str, dict[str, Any]] | None = None
    _read_at: float = float("-inf")

    async def counts(
        self, conn: AsyncConnection, pack: Pack, dashboard: Dashboard, now_us: int, zone: ZoneInfo
    ) -> dict[str, dict[str, Any]]:
        """Tile id -> counts, read now or reused (see the class docstring)."""
        clock = time.monotonic()
        if self._cached is None or clock - self._read_at >= self.interval_s:
            self._cached = await dashboard_freshness(conn, pack, dashboard, now_us, zone, self.late_after_s)
            self._read_at = clock
        return self._cached


def tile_links(pack: Pack, dashboard: Dashboard, tile: Tile, now_us: int, zone: ZoneInfo) -> dict[str, str]:
    """Where a tile leads: ``events`` (the drill-down of its window and filter), ``scorecard``
    (its KPI's row on this month's scorecard) and ``day`` (today's end-of-day page, its breaches)."""
    assert tile.kpi is not None
    start, end = tile_bounds(pack, tile.kpi, tile.window, now_us, zone)
    query = {"start": from_us(start, zone).isoformat(), "end": from_us(end, zone).isoformat()}
    query.update({f"dims.{k}": v for k, v in tile.dims})
    query["pack"] = pack.name
    day = period_containing("day", now_us, zone).label
    return {
        "events": f"/api/v1/kpis/{quote(tile.kpi)}/events?{urlencode(query)}",
        "scorecard": f"/scorecard/{quote(dashboard.slug)}/{day[:7]}#kpi-{quote(tile.kpi)}",
        "day": f"/day/{quote(dashboard.slug)}/{day}#breaches",
    }


def _rolled_up(pack: Pack, dims: Dims) -> str | None:
    """The stored ``dim_key`` answering filter ``dims``, or ``None`` when it is not rolled up."""
    dim_key = filter_dim_key(dims)
    if dim_key is None or (dims and dims[0][0] not in pack.dimensions):
        return None
    return dim_key


async def _window_partials(
    conn: AsyncConnection, pack: Pack, dashboard: Dashboard, now_us: int, zone: ZoneInfo
) -> dict[tuple[str, Dims], dict[str, Partial]]:
    """Merged partials of every measure for every (window, filter) of the dashboard's KPI tiles."""
    tiles = [t for t in dashboard.tiles if t.kind == "kpi" and not pack.kpis[t.kpi].is_gauge]
    shown = [pack.kpis[t.kpi] for t in dashboard.tiles if t.kind == "kpi"]
    windows = sorted({t.window for t in tiles})
    bounds = {w: window_bounds(w, now_us, zone) for w in windows}
    out: dict[tuple[str, Dims], dict[str, Partial]] = {}
    rolled: dict[str, Dims] = {}
    for tile in tiles:
        dim_key = _rolled_up(pack, tile.dims)
        if dim_key is not None:
            rolled[dim_key] = tile.dims
        elif (tile.window, tile.dims) not in out:
            out[(tile.window, tile.dims)] = await pack_partials(conn, pack, tile.dims, *bounds[tile.window], shown)
    if rolled:
        names = list(pack.measures)
        wanted = sketch_measures(shown)
        sketch_keys = [pack.measure_key(n) for n in names if pack.measures[n].sketch and n in wanted]
        distinct_keys = [pack.measure_key(n) for n in names if pack.measures[n].distinct is not None]
        grid = await reads.aggregate_grid(
            conn,
            [pack.measure_key(n) for n in names],
            list(rolled),
            [bounds[w] for w in windows],
            sketch_keys,
            distinct_keys=distinct_keys,
        )
        for dim_key, dims in rolled.items():
            for w, parts in zip(windows, grid[dim_key], strict=True):
                out[(w, dims)] = {k.split("/", 1)[1]: v for k, v in parts.items()}
    return out


async def _gauge_readings(
    conn: AsyncConnection, pack: Pack, dashboard: Dashboard, now_us: int
) -> dict[tuple[str, Dims], GaugeReading]:
    """The live reading of each gauge the dashboard shows, per filter: ``(gauge, dims) -> reading``.

    A lifecycle gauge (alarms) filtered by several dimensions (a narrowed view of a dashboard,
    ``/wall/noc?site=X`` on a by-severity tile) is read from the open items themselves
    (``app.query.alarms.open_alarms``): the same items, counted and aged at ``now_us``.

    Raises:
        QueryError: for a gauge filtered by a dimension that is not rolled up (and not a
            lifecycle gauge).
    """
    wanted: dict[str, dict[str, Dims]] = {}
    out: dict[tuple[str, Dims], GaugeReading] = {}
    for tile in dashboard.tiles:
        if tile.kind != "kpi":
            continue
        kpi = pack.kpis[tile.kpi]
        if kpi.is_gauge:
            gauge = gauge_of(pack, kpi)
            dim_key = _rolled_up(pack, tile.dims)
            if dim_key is None and gauge.lifecycle is not None and all(k in pack.dimensions for k, _ in tile.dims):
                if (gauge.name, tile.dims) not in out:
                    out[(gauge.name, tile.dims)] = await _items_reading(conn, pack, gauge, tile.dims, now_us)
                continue
            if dim_key is None:
                raise QueryError("dims", f"gauges can be filtered by one of {list(pack.dimensions)} only")
            wanted.setdefault(gauge.name, {})[dim_key] = tile.dims
    for name, by_key in wanted.items():
        gauge = pack.gauges[name]
        got = await reads.gauge_readings_live(conn, pack.gauge_key(name), list(by_key), now_us, gauge.max_open_s)
        for dim_key, dims in by_key.items():
            out[(name, dims)] = got[dim_key]
    return out


async def _items_reading(conn: AsyncConnection, pack: Pack, gauge: Gauge, dims: Dims, now_us: int) -> GaugeReading:
    """A lifecycle gauge's reading at ``now_us`` for a filter of several dims, from the open items
    (only the service-affecting ones for an ``affecting`` gauge)."""
    assert gauge.lifecycle is not None
    lc = pack.lifecycles[gauge.lifecycle]
    _, items = await open_alarms(conn, pack, gauge.lifecycle, now_us, dims)
    if gauge.affecting:
        items = [item for item in items if lc.affecting(item.dims)]
    return GaugeReading(len(items), min((item.raised_us for item in items), default=None))


async def tile_trends(
    conn: AsyncConnection, pack: Pack, dashboard: Dashboard, now_us: int, zone: ZoneInfo, points: int
) -> dict[str, list[float | None]]:
    """Each windowed tile's value at the end of each of the last ``points`` minutes (oldest
    first, the last one at ``now_us``), so a wall has its sparklines at once.

    One range read of minute partials (plus one aggregate per calendar window start) serves
    every tile; gauges, distinct counts and tiles filtered by a dimension that is not rolled up
    are left out.
    """
    from app.metrics.calendar import MINUTE_US, minute_floor_us

    last = minute_floor_us(now_us)
    instants = [last - (points - 1 - i) * MINUTE_US + MINUTE_US - 1 for i in range(points - 1)] + [now_us]
    floor = last - (points - 1) * MINUTE_US - 60 * MINUTE_US  # minute rows cover every sliding window
    names = tuple(pack.measures)
    keys = [pack.measure_key(n) for n in names]
    wanted = sketch_measures(pack.kpis[t.kpi] for t in dashboard.tiles if t.kind == "kpi")
    sketch_keys = [pack.measure_key(n) for n in names if pack.measures[n].sketch and n in wanted]
    out: dict[str, list[float | None]] = {}
    cache: dict[tuple[str, Dims], list[dict[str, Partial]]] = {}  # (window, filter) -> merged partials per instant
    for tile in dashboard.tiles:
        if tile.kind != "kpi" or pack.kpis[tile.kpi].reads_window:  # alarm lists; window KPIs: from now on
            continue
        kpi = pack.kpis[tile.kpi]
        dim_key = filter_dim_key(tile.dims)
        if kpi.is_gauge or dim_key is None or (tile.dims and tile.dims[0][0] not in pack.dimensions):
            continue
        if any(pack.measures[m].distinct is not None for m in kpi.formula.referenced_measures()):
            continue  # distinct counts merge registers, not minute counts: no sparkline

        key = (tile.window, tile.dims)
        if key not in cache:
            rows = await reads.minute_rows(conn, keys, dim_key, floor, last + MINUTE_US, sketch_keys)
            bases: dict[int, dict[str, Partial]] = {}
            series_: list[dict[str, Partial]] = []
            for at in instants:
                start, end = window_bounds(tile.window, at, zone)
                merged: dict[str, Partial] = {}
                if start < floor:
                    if start not in bases:
                        got = await reads.aggregate(conn, keys, dim_key, start, floor, sketch_keys)
                        bases[start] = {k.split("/", 1)[1]: v for k, v in got.items()}
                    for name, part in bases[start].items():
                        merged.setdefault(name, Partial()).merge(part)
                lo, hi = max(start, floor), min(end, at + 1)
                for mkey, bucket, part in rows:
                    if lo <= bucket < hi:
                        merged.setdefault(mkey.split("/", 1)[1], Partial()).merge(part)
                series_.append(merged)
            cache[key] = series_
        out[tile.id] = [evaluate(kpi, merged).value for merged in cache[key]]
    return out
