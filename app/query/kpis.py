"""KPI reads over the store: merged partials, values and series.

Joins the pure engine (``app.metrics``) to the read path (``app.store.reads``).
Reads use the stored minute partials when the dims filter is empty or names one
rolled-up dimension; any other filter is computed from raw events with the same
rollup code (slower, same answer).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.calendar import Grain, Period, iter_periods
from app.metrics.evaluate import GaugeReading, KpiValue, evaluate
from app.metrics.pack import Formula, Gauge, Kpi, Pack, dim_text
from app.metrics.partials import Partial
from app.metrics.rollup import TOTAL, EventRow, filter_dim_key, rollup
from app.query.errors import QueryError
from app.store import reads
from app.store.schema import event

MAX_SERIES_POINTS = 5000


@dataclass(frozen=True, slots=True)
class ScanBudget:
    """How much a read may scan of raw events (filters on dimensions that are not rolled up):
    at most ``max_events`` events, until ``deadline`` (``time.monotonic()`` seconds)."""

    max_events: int
    deadline: float


SCAN_BUDGET: ContextVar[ScanBudget | None] = ContextVar("raw_scan_budget", default=None)
"""Set by the HTTP read routes (``app.api.routes``) from ``PULSEBOARD_RAW_SCAN_MAX_EVENTS`` and
``PULSEBOARD_RAW_SCAN_TIMEOUT_S``; unset (the scheduler, reconciliation, the CLI): unbounded."""


class _Scan:
    """Counts one read's raw events against the ``SCAN_BUDGET`` in force."""

    def __init__(self) -> None:
        self.budget = SCAN_BUDGET.get()
        self.seen = 0

    async def precount(self, conn: AsyncConnection, types: set[str], start_us: int, end_us: int) -> None:
        """Refuse before scanning when the range holds more events than the budget (one count)."""
        if self.budget is None:
            return
        t = event.c
        held = (
            await conn.execute(
                select(func.count()).where(t.type.in_(list(types)), t.ts_us >= start_us, t.ts_us < end_us)
            )
        ).scalar_one()
        self.take(int(held))
        self.seen = 0

    def take(self, n: int) -> None:
        """Count ``n`` more events; raise ``QueryError`` (422 on ``dims``) past the budget."""
        self.seen += n
        budget = self.budget
        if budget is None:
            return
        if self.seen > budget.max_events or time.monotonic() > budget.deadline:
            raise QueryError(
                "dims",
                f"a filter on a dimension that is not rolled up scans raw events, and this one passed the "
                f"limit ({budget.max_events} events, PULSEBOARD_RAW_SCAN_MAX_EVENTS / _TIMEOUT_S): "
                "narrow the range or filter on a rolled-up dimension",
            )


def gauge_of(pack: Pack, kpi: Kpi) -> Gauge:
    """The gauge that gauge KPI ``kpi`` of ``pack`` reads.

    Raises:
        ValueError: ``kpi`` is not a gauge KPI (its formula names no gauge).
    """
    name = kpi.formula.gauge
    if name is None:
        raise ValueError(f"KPI {kpi.name!r} is not a gauge KPI")
    return pack.gauges[name]


@dataclass(frozen=True, slots=True)
class Point:
    """One series point: a local period and the KPI's value there."""

    period: Period
    value: KpiValue


async def _raw_partials(
    conn: AsyncConnection, pack: Pack, kpi: Kpi, dims: tuple[tuple[str, str], ...], start_us: int, end_us: int
) -> dict[str, Partial]:
    names = kpi.formula.referenced_measures()
    types = {pack.measures[n].event_type for n in names}
    merged: dict[str, Partial] = {}
    scan = _Scan()

    def fold(batch: list[EventRow]) -> None:  # in a worker thread: the event loop stays free
        kept = [e for e in batch if e.dims and all(k in e.dims and dim_text(e.dims[k]) == v for k, v in dims)]
        partials, _ = rollup(pack, kept)
        for (mkey, dk, _b), part in partials.items():
            if dk == TOTAL:
                name = mkey.split("/", 1)[1]
                merged.setdefault(name, Partial(sketch=None)).merge(part)

    await scan.precount(conn, types, start_us, end_us)
    async with aclosing(reads.raw_events(conn, types, start_us, end_us)) as batches:
        async for batch in batches:
            scan.take(len(batch))
            await asyncio.to_thread(fold, batch)
    lifecycle_names = {n for n in names if pack.measures[n].lifecycle is not None}
    if lifecycle_names:  # lifecycle measures pair events across time: app.query.alarms
        from app.query.alarms import raw_lifecycle_partials

        merged.update(await raw_lifecycle_partials(conn, pack, start_us, end_us, dims, lifecycle_names))
    return merged


async def raw_pack_partials(
    conn: AsyncConnection, pack: Pack, start_us: int, end_us: int, only: set[str] | None = None
) -> dict[str, Partial]:
    """Every measure of ``pack`` (or the ``only`` ones) over ``[start_us, end_us)`` recomputed
    from raw events (the rollups' source of truth; used by reconciliation)."""
    merged: dict[str, Partial] = {}
    types = {m.event_type for m in pack.measures.values() if only is None or m.name in only}
    async for batch in reads.raw_events(conn, types, start_us, end_us):
        partials, _ = rollup(pack, batch)
        for (mkey, dk, _b), part in partials.items():
            if dk == TOTAL:
                merged.setdefault(mkey.split("/", 1)[1], Partial()).merge(part)
    if any(m.lifecycle is not None and (only is None or m.name in only) for m in pack.measures.values()):
        from app.query.alarms import raw_lifecycle_partials

        merged.update(await raw_lifecycle_partials(conn, pack, start_us, end_us, (), only))
    return merged


def sketch_measures(kpis: Iterable[Kpi]) -> set[str]:
    """Measures whose quantile sketches ``kpis`` read (percentile KPIs only): merging sketches is
    the costly part of a read, so nothing else asks for them."""
    return {m for k in kpis if k.formula.kind == "percentile" for m in k.formula.measures}


async def kpi_partials(
    conn: AsyncConnection,
    pack: Pack,
    kpi: Kpi,
    dims: tuple[tuple[str, str], ...],
    start_us: int,
    end_us: int,
    sketches: set[str] | None = None,
) -> dict[str, Partial]:
    """Merged partials (measure name -> Partial) of ``kpi``'s measures over ``[start_us, end_us)``.

    ``sketches``: measures whose sketches to merge (default: those ``kpi`` itself reads).
    """
    names = kpi.formula.referenced_measures()
    if not names:
        return {}
    wanted = sketch_measures([kpi]) if sketches is None else sketches
    dim_key = filter_dim_key(dims)
    if dim_key is not None and (not dims or dims[0][0] in pack.dimensions):
        keys = [pack.measure_key(n) for n in names]
        sketch_keys = [pack.measure_key(n) for n in names if pack.measures[n].sketch and n in wanted]
        distinct_keys = [pack.measure_key(n) for n in names if pack.measures[n].distinct is not None]
        got = await reads.aggregate(conn, keys, dim_key, start_us, end_us, sketch_keys, distinct_keys)
        return {k.split("/", 1)[1]: v for k, v in got.items()}
    return await _raw_partials(conn, pack, kpi, dims, start_us, end_us)


async def pack_partials(
    conn: AsyncConnection,
    pack: Pack,
    dims: tuple[tuple[str, str], ...],
    start_us: int,
    end_us: int,
    for_kpis: Iterable[Kpi] | None = None,
) -> dict[str, Partial]:
    """Merged partials of every measure of ``pack`` over ``[start_us, end_us)`` (one query), with
    the sketches that ``for_kpis`` (default: every KPI of the pack) need."""
    every = Kpi("_every_measure", "", "", "", Formula("count", measures=tuple(pack.measures)))
    kpis = pack.kpis.values() if for_kpis is None else for_kpis
    return await kpi_partials(conn, pack, every, dims, start_us, end_us, sketch_measures(kpis))


async def kpi_value(
    conn: AsyncConnection,
    pack: Pack,
    kpi: Kpi,
    dims: tuple[tuple[str, str], ...],
    start_us: int,
    end_us: int,
    at_us: int,
) -> KpiValue:
    """``kpi`` over ``[start_us, end_us)``; gauges are read at ``at_us``, and time-weighted, rate
    and peak KPIs measured up to it.

    Raises:
        QueryError: for a gauge filtered by a dimension that is not rolled up.
    """
    if kpi.is_gauge:
        return evaluate(kpi, {}, await kpi_gauge_reading(conn, pack, kpi, dims, at_us), at_us)
    partials = await kpi_partials(conn, pack, kpi, dims, start_us, end_us)
    if kpi.reads_window:  # time-weighted, rate, peak: measured up to at_us (app.query.timeweighted)
        from app.query.timeweighted import window_reading

        reading = await window_reading(conn, pack, [kpi], dims, start_us, end_us, at_us)
        return evaluate(kpi, partials, window=reading)
    return evaluate(kpi, partials)


async def kpi_gauge_reading(
    conn: AsyncConnection, pack: Pack, kpi: Kpi, dims: tuple[tuple[str, str], ...], at_us: int, live: bool = False
) -> GaugeReading:
    """The reading of gauge KPI ``kpi``'s gauge at ``at_us`` (``live``: see ``reads.gauge_reading``).

    Raises:
        QueryError: for a gauge filtered by a dimension that is not rolled up.
    """
    gauge = gauge_of(pack, kpi)
    dim_key = filter_dim_key(dims)
    if dim_key is None or (dims and dims[0][0] not in pack.dimensions):
        raise QueryError("dims", f"gauges can be filtered by one of {list(pack.dimensions)} only")
    return await reads.gauge_reading(conn, pack.gauge_key(gauge.name), dim_key, at_us, gauge.max_open_s, live)


async def series(
    conn: AsyncConnection,
    pack: Pack,
    kpi: Kpi,
    grain: Grain,
    start_us: int,
    end_us: int,
    zone: ZoneInfo,
    dims: tuple[tuple[str, str], ...],
    now_us: int,
) -> list[Point]:
    """One point per local ``grain`` period overlapping ``[start_us, end_us)``.

    Gauges are read at each period's end (or ``now_us`` if sooner).

    Raises:
        QueryError: when the range holds more than ``MAX_SERIES_POINTS`` periods.
    """
    periods = list(itertools.islice(iter_periods(grain, start_us, end_us, zone), MAX_SERIES_POINTS + 1))
    if len(periods) > MAX_SERIES_POINTS:  # counted before any query (the attack: 13.7 s of work for a 422)
        raise QueryError(
            "end",
            f"the range holds more than {MAX_SERIES_POINTS} {grain} periods; narrow it or use a coarser grain",
        )
    if kpi.is_gauge and _rolled_up(pack, dims):  # one query: the gauge at every period's end
        gauge = gauge_of(pack, kpi)
        instants = [min(p.end_us, now_us) for p in periods]
        key = filter_dim_key(dims) or ""
        readings = await reads.gauge_readings_at(conn, pack.gauge_key(gauge.name), key, instants, gauge.max_open_s)
        return [
            Point(p, evaluate(kpi, {}, reading, at)) for p, reading, at in zip(periods, readings, instants, strict=True)
        ]
    grouped = await _series_partials(conn, pack, kpi, dims, periods)
    if grouped is not None:
        return [Point(period, evaluate(kpi, partials)) for period, partials in zip(periods, grouped, strict=True)]
    points: list[Point] = []
    for period in periods:  # gauges, window KPIs, raw filters: per period
        at = min(period.end_us, now_us)
        points.append(Point(period, await kpi_value(conn, pack, kpi, dims, period.start_us, period.end_us, at)))
    return points


async def _series_partials(
    conn: AsyncConnection, pack: Pack, kpi: Kpi, dims: tuple[tuple[str, str], ...], periods: list[Period]
) -> list[dict[str, Partial]] | None:
    """Merged partials of ``kpi`` per period from the stored rollups in a constant number of
    queries (``reads.aggregate_series``), or None when the KPI is not read from partials alone
    (a gauge, a time-weighted/rate/peak KPI, a filter on a dimension that is not rolled up)."""
    if kpi.is_gauge or kpi.reads_window:
        return None
    names = kpi.formula.referenced_measures()
    if not names:
        return [{} for _ in periods]
    dim_key = filter_dim_key(dims)
    if dim_key is None or not _rolled_up(pack, dims):
        return None
    wanted = sketch_measures([kpi])
    keys = [pack.measure_key(n) for n in names]
    sketch_keys = [pack.measure_key(n) for n in names if pack.measures[n].sketch and n in wanted]
    distinct_keys = [pack.measure_key(n) for n in names if pack.measures[n].distinct is not None]
    windows = [(p.start_us, p.end_us) for p in periods]
    got = await reads.aggregate_series(conn, keys, dim_key, windows, sketch_keys, distinct_keys)
    return [{k.split("/", 1)[1]: v for k, v in per.items()} for per in got]


def _rolled_up(pack: Pack, dims: tuple[tuple[str, str], ...]) -> bool:
    """Whether the ``dims`` filter is answered by stored rollups (none, or one rolled-up dimension)."""
    return filter_dim_key(dims) is not None and (not dims or dims[0][0] in pack.dimensions)
