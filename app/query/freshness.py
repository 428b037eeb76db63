"""Freshness of live tiles: how current the events behind each tile are.

Per tile, over the KPI's event types (``app.query.drill.behind``) in the tile's window (for a
gauge, the ``max_open_s`` before ``now``), events up to ``now`` and whatever the tile's
dimension filter:

- ``watermark``: event time of the newest such event (the event-time watermark of the tile);
- ``lag_s``: ``now - watermark`` in seconds (``None`` without events);
- ``events`` and ``late_events``: events in the window, and those that reached the store more
  than ``late_after_s`` after their own time (``received - ts``: the usual event-time
  "allowed lateness" rule); ``late_ratio`` = late / events (``None`` without events);
- ``stale_after_s``: the wall shows the tile's data age once its lag passes this.

One grouped read per distinct window serves every tile of a dashboard.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.calendar import from_us
from app.metrics.pack import Dashboard, Pack
from app.metrics.windows import window_bounds
from app.query.drill import behind
from app.store.schema import event

Stats = dict[str, tuple[int | None, int, int]]  # event type -> (newest ts_us, events, late events)


def tile_bounds(pack: Pack, kpi_name: str, window: str, now_us: int, zone: ZoneInfo) -> tuple[int, int]:
    """``[start_us, end_us)`` the freshness of a tile is read over (events after ``now`` left out)."""
    kpi = pack.kpis[kpi_name]
    if kpi.is_gauge and kpi.formula.gauge is not None:
        return now_us - int(pack.gauges[kpi.formula.gauge].max_open_s * 1_000_000), now_us + 1
    start, end = window_bounds(window, now_us, zone)
    return start, min(end, now_us + 1)


async def _stats(conn: AsyncConnection, types: list[str], lo: int, hi: int, late_us: int) -> Stats:
    t = event.c
    late = func.sum(case((t.received_us - t.ts_us > late_us, 1), else_=0))
    rows = await conn.execute(
        select(t.type, func.max(t.ts_us), func.count(), late)
        .where(t.type.in_(types), t.ts_us >= lo, t.ts_us < hi)
        .group_by(t.type)
    )
    return {r[0]: (int(r[1]) if r[1] is not None else None, int(r[2]), int(r[3] or 0)) for r in rows}


async def dashboard_freshness(
    conn: AsyncConnection, pack: Pack, dashboard: Dashboard, now_us: int, zone: ZoneInfo, late_after_s: float
) -> dict[str, dict[str, Any]]:
    """Tile id -> ``{watermark_us, events, late_events}`` for every KPI tile (see the module docstring)."""
    late_us = int(late_after_s * 1_000_000)
    wanted: dict[tuple[int, int], set[str]] = {}
    plan: dict[str, tuple[tuple[int, int], list[str]]] = {}
    for tile in dashboard.tiles:
        if tile.kind != "kpi" or tile.kpi is None:
            continue
        types = behind(pack, pack.kpis[tile.kpi]).types
        bounds = tile_bounds(pack, tile.kpi, tile.window, now_us, zone)
        wanted.setdefault(bounds, set()).update(types)
        plan[tile.id] = (bounds, types)
    stats = {b: await _stats(conn, sorted(types), b[0], b[1], late_us) for b, types in wanted.items() if types}
    out: dict[str, dict[str, Any]] = {}
    for tid, (bounds, types) in plan.items():
        got = [stats.get(bounds, {}).get(t) for t in types]
        seen = [g for g in got if g is not None]
        newest = max((g[0] for g in seen if g[0] is not None), default=None)
        out[tid] = {
            "watermark_us": newest,
            "events": sum(g[1] for g in seen),
            "late_events": sum(g[2] for g in seen),
        }
    return out


def freshness_json(
    counts: dict[str, Any] | None, now_us: int, zone: ZoneInfo, late_after_s: float, stale_after_s: float
) -> dict[str, Any]:
    """The wire form of a tile's freshness at ``now_us`` (CONTRACT §4)."""
    newest = counts.get("watermark_us") if counts else None
    events = counts.get("events", 0) if counts else 0
    late = counts.get("late_events", 0) if counts else 0
    return {
        "watermark": from_us(newest, zone).isoformat() if newest is not None else None,
        "lag_s": max(0.0, (now_us - newest) / 1_000_000) if newest is not None else None,
        "events": events,
        "late_events": late,
        "late_ratio": late / events if events else None,
        "late_after_s": late_after_s,
        "stale_after_s": stale_after_s,
    }
