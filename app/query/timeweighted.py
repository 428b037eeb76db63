"""Window readings of time-weighted, rate and peak KPIs (availability, alarm rates, floods).

A window still running (today, this month, the last 15 minutes) is measured up to the view
clock's "now": availability today at 10:00 is over the 10 hours so far, not the whole day.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.evaluate import WindowReading
from app.metrics.pack import Kpi, Pack
from app.metrics.rollup import filter_dim_key
from app.metrics.timeweighted import TimeWeighted, coverage
from app.query.errors import QueryError
from app.store import lifecycles

Dims = tuple[tuple[str, str], ...]


def _dim_key(pack: Pack, dims: Dims, kpi: Kpi) -> str:
    dim_key = filter_dim_key(dims)
    if dim_key is None or (dims and dims[0][0] not in pack.dimensions):
        raise QueryError("dims", f"{kpi.name} can be filtered by one of {list(pack.dimensions)} only")
    return dim_key


async def window_reading(
    conn: AsyncConnection, pack: Pack, kpis: Iterable[Kpi], dims: Dims, start_us: int, end_us: int, now_us: int
) -> WindowReading:
    """What ``kpis`` (those with ``reads_window``) read over ``[start_us, end_us)`` measured up to
    ``now_us``: the window's length so far, each time-weighted gauge's ``TimeWeighted`` (the union
    of its items for the filter's dimension key) and each peak measure's highest minute count.

    Raises:
        QueryError: for a filter that is not one rolled-up dimension.
    """
    end = max(start_us, min(end_us, now_us))
    weighted: dict[str, TimeWeighted] = {}
    peaks: dict[str, int] = {}
    for kpi in kpis:
        f = kpi.formula
        if f.kind == "time_weighted" and f.gauge is not None and f.gauge not in weighted:
            gauge = pack.gauges[f.gauge]
            items = await lifecycles.gauge_intervals(
                conn, pack.gauge_key(gauge.name), _dim_key(pack, dims, kpi), start_us, end, gauge.max_open_s
            )
            weighted[f.gauge] = coverage(items, start_us, end, int(gauge.max_open_s * 1_000_000))
        elif f.kind == "peak" and f.measures[0] not in peaks:
            peaks[f.measures[0]] = await lifecycles.peak_minute_count(
                conn, pack.measure_key(f.measures[0]), _dim_key(pack, dims, kpi), start_us, end
            )
    return WindowReading(end - start_us, weighted, peaks)
