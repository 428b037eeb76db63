"""Drill-down: the raw events behind a KPI value over ``[start, end)`` and a dimension filter.

"Behind" means the events the KPI's measures count (``Measure.matches``: the event type, value
and dims filters of each measure its formula references), for a gauge KPI the events that open
and close its items, for a lifecycle measure (alarms) every event of the lifecycle.  A
dimension filter ``dims`` keeps events whose ``dims`` carry each key with that value (as
text, as the rollups key them).  Each event lists the measures it counts in, so a ratio's
numerator can be told from its denominator.

So for a count KPI over a closed period, the number of events returned whose ``measures``
name the count's measure equals the KPI's value for that period and filter.

Pages are in event-time order (``ts``, then ``seq``); the cursor is opaque
(``<ts_us>.<seq>`` of the last event returned).  A full page always gives a cursor, so the
page after the last full one may be empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.pack import Kpi, Measure, Pack, dim_text
from app.query.errors import QueryError
from app.store.schema import event

CURSOR_RE = re.compile(r"^(-?\d{1,20})\.(\d{1,20})$")


@dataclass(frozen=True, slots=True)
class Behind:
    """What a KPI reads: its measures (name -> measure), and event types counted as a whole
    (gauge opens/closes, lifecycle events) with the tag to give them."""

    measures: dict[str, Measure]
    whole_types: dict[str, str]

    @property
    def types(self) -> list[str]:
        return sorted({m.event_type for m in self.measures.values()} | set(self.whole_types))

    def tags(self, event_type: str, value: float | None, dims: dict[str, Any] | None) -> list[str]:
        """The measures (or gauge / lifecycle names) an event counts in; empty when none."""
        out = [n for n, m in self.measures.items() if m.matches(event_type, value, dims)]
        if event_type in self.whole_types and self.whole_types[event_type] not in out:
            out.append(self.whole_types[event_type])
        return out


def behind(pack: Pack, kpi: Kpi) -> Behind:
    """The measures and event types behind ``kpi`` (see the module docstring)."""
    measures: dict[str, Measure] = {}
    whole: dict[str, str] = {}
    for name in kpi.formula.referenced_measures():
        m = pack.measures[name]
        if m.lifecycle is not None and m.lifecycle in pack.lifecycles:
            for t in pack.lifecycles[m.lifecycle].event_types:
                whole.setdefault(t, name)
        else:
            measures[name] = m
    if kpi.formula.gauge is not None:
        gauge = pack.gauges[kpi.formula.gauge]
        if gauge.lifecycle is not None and gauge.lifecycle in pack.lifecycles:
            for t in pack.lifecycles[gauge.lifecycle].event_types:
                whole.setdefault(t, gauge.name)
        else:
            for t in (gauge.open_type, *gauge.close_types):
                whole.setdefault(t, gauge.name)
    return Behind(measures, whole)


def parse_cursor(raw: str | None) -> tuple[int, int] | None:
    """``(ts_us, seq)`` of a cursor.  Raises QueryError (field ``after``) for a malformed one."""
    if raw is None:
        return None
    found = CURSOR_RE.match(raw)
    if found is None:
        raise QueryError("after", "not a cursor this API gave (use the 'next' of the previous page)")
    return int(found.group(1)), int(found.group(2))


def _keep(dims: dict[str, Any] | None, wanted: tuple[tuple[str, str], ...]) -> bool:
    return all(dims is not None and key in dims and dim_text(dims[key]) == text for key, text in wanted)


async def kpi_events(
    conn: AsyncConnection,
    pack: Pack,
    kpi: Kpi,
    start_us: int,
    end_us: int,
    dims: tuple[tuple[str, str], ...],
    after: tuple[int, int] | None,
    limit: int,
) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """One page of the events behind ``kpi`` in ``[start_us, end_us)`` (UTC µs) matching ``dims``.

    Returns:
        ``(events, next cursor or None)``; each event ``{seq, source, id, type, ts_us, value,
        dims, received_us, measures}``.
    """
    what = behind(pack, kpi)
    types = what.types
    out: list[dict[str, Any]] = []
    if not types:
        return out, None
    batch = max(500, limit * 2)
    cursor = after
    t = event.c
    while True:
        query = select(t.seq, t.source, t.event_id, t.type, t.ts_us, t.value, t.dims, t.received_us).where(
            t.type.in_(types), t.ts_us >= start_us, t.ts_us < end_us
        )
        if cursor is not None:
            query = query.where(or_(t.ts_us > cursor[0], and_(t.ts_us == cursor[0], t.seq > cursor[1])))
        rows = list(await conn.execute(query.order_by(t.ts_us, t.seq).limit(batch)))
        for found in _matching(rows, what, dims):
            out.append(found)
            if len(out) == limit:  # more may follow: the next page says (it may be empty)
                return out, (found["ts_us"], found["seq"])
        if len(rows) < batch:
            return out, None
        cursor = (rows[-1].ts_us, rows[-1].seq)


def _matching(rows: list[Any], what: Behind, dims: tuple[tuple[str, str], ...]) -> Iterator[dict[str, Any]]:
    for r in rows:
        decoded = msgspec.json.decode(r.dims) if r.dims else None
        if not _keep(decoded, dims):
            continue
        tags = what.tags(r.type, r.value, decoded)
        if not tags:
            continue
        yield {
            "seq": r.seq,
            "source": r.source,
            "id": r.event_id,
            "type": r.type,
            "ts_us": r.ts_us,
            "value": r.value,
            "dims": decoded or {},
            "received_us": r.received_us,
            "measures": tags,
        }
