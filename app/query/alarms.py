"""Alarm reads: the alarm list (open alarms at an instant, most severe then oldest first) and
lifecycle measures recomputed from raw events (reconciliation, filters that are not rolled up).

The alarm list tile (CONTRACT §4, ``kind: alarm_list``) is::

    {"kind": "alarm_list", "lifecycle": "alarm", "value": <open alarms matching the filter>,
     "limit": N, "as_of": ISO, "title", "dims", "size",
     "alarms": [{"alarm", "severity", "device", "service", "type", "site", "raised_at",
                 "acknowledged", "acknowledged_at"}, ...]}

``severity``/``device``/... are ``null`` where the alarm has none; ``raised_at`` and
``acknowledged_at`` are ISO instants in the dashboard's zone (a wall ticks the age itself).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.calendar import from_us
from app.metrics.lifecycle import OpenItem, add_contributions, alarm_order, derive, fold, open_item
from app.metrics.pack import Pack, Tile, dim_text
from app.metrics.partials import Partial
from app.metrics.rollup import TOTAL
from app.store import lifecycles, reads

ALARM_FIELDS = ("severity", "device", "service", "type", "site")


async def open_alarms(
    conn: AsyncConnection,
    pack: Pack,
    lifecycle: str,
    at_us: int,
    dims: tuple[tuple[str, str], ...] = (),
    limit: int | None = None,
) -> tuple[int, list[OpenItem]]:
    """The items of ``lifecycle`` open at ``at_us`` whose dims then match ``dims`` (each
    ``(key, text)`` equal), most severe first (ITU-T X.733 order), then the oldest.

    Returns:
        ``(how many match, the first `limit` of them)`` (all with ``limit=None``).

    Raises:
        KeyError: ``lifecycle`` is not one of ``pack``'s.
    """
    lc = pack.lifecycles[lifecycle]
    found: list[OpenItem] = []
    for alarm, state in await lifecycles.open_items(conn, pack.lifecycle_key(lifecycle), at_us, lc.max_open_s):
        item = open_item(pack, lc, alarm, state, at_us)
        if item is None:
            continue
        if all(k in item.dims and dim_text(item.dims[k]) == v for k, v in dims):
            found.append(item)
    found.sort(key=alarm_order)
    return len(found), found if limit is None else found[:limit]


def alarm_json(item: OpenItem, zone: ZoneInfo) -> dict[str, Any]:
    """One row of an alarm list (see the module docstring)."""
    row: dict[str, Any] = {"alarm": item.alarm}
    for name in ALARM_FIELDS:
        value = item.dims.get(name)
        row[name] = None if value is None else dim_text(value)
    row["raised_at"] = from_us(item.raised_us, zone).isoformat()
    row["acknowledged"] = item.acked_us is not None
    row["acknowledged_at"] = from_us(item.acked_us, zone).isoformat() if item.acked_us is not None else None
    return row


async def alarm_list_tile(conn: AsyncConnection, pack: Pack, tile: Tile, now_us: int, zone: ZoneInfo) -> dict[str, Any]:
    """The wire form of an ``alarm_list`` tile at ``now_us`` (see the module docstring)."""
    assert tile.lifecycle is not None
    total, items = await open_alarms(conn, pack, tile.lifecycle, now_us, tile.dims, tile.limit)
    return {
        "kind": "alarm_list",
        "kpi": None,
        "lifecycle": tile.lifecycle,
        "window": "now",
        "value": total,
        "unit": "alarms",
        "status": None,
        "target": None,
        "direction": "lower",
        "limit": tile.limit,
        "as_of": from_us(now_us, zone).isoformat(),
        "title": tile.title or "Open alarms",
        "dims": dict(tile.dims),
        "size": tile.size,
        "alarms": [alarm_json(item, zone) for item in items],
    }


async def raw_lifecycle_partials(
    conn: AsyncConnection,
    pack: Pack,
    start_us: int,
    end_us: int,
    dims: tuple[tuple[str, str], ...] = (),
    only: set[str] | None = None,
) -> dict[str, Partial]:
    """The pack's lifecycle measures (or the ``only`` ones) over ``[start_us, end_us)`` recomputed
    from raw events, for items whose dims at the counted stage match ``dims``: every lifecycle
    event stamped before ``end_us`` is folded (an item's raise may be any time before its clear),
    so this reads the lifecycle's whole history up to the window's end.

    Returns:
        measure name -> merged ``Partial`` (measures with nothing counted are absent).
    """
    names = {m.name for m in pack.measures.values() if m.lifecycle is not None and (only is None or m.name in only)}
    if not names:
        return {}
    types = {t for lc in pack.lifecycles.values() for t in lc.event_types}
    events = []
    async for batch in reads.raw_events(conn, types, -(2**62), end_us):
        events.extend(batch)
    merged: dict[str, Partial] = {}
    for (lc_name, alarm), state in fold(pack, events).items():
        lc = pack.lifecycles[lc_name]
        d = derive(pack, lc, alarm, state)
        d.contributions[:] = [
            c
            for c in d.contributions
            if start_us <= c.ts_us < end_us and all(k in c.dims and dim_text(c.dims[k]) == v for k, v in dims)
        ]
        parts: dict[tuple[str, str, int], Partial] = {}
        add_contributions(pack, lc, d, parts)
        for (mkey, dk, _b), part in parts.items():
            name = mkey.split("/", 1)[1]
            if dk == TOTAL and name in names:
                merged.setdefault(name, Partial()).merge(part)
    return merged
