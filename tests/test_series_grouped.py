"""A KPI series reads its stored partials in a constant number of grouped queries (issue 10
item 9): the points equal the per-period answers (``kpi_value`` of each period) for day, hour
and month grains over DST changes and a +05:30 zone, on both stores, and a 365-day series costs
the same number of SQL statements as a 30-day one."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import event as sa_event

from app.metrics.calendar import Grain
from app.metrics.hll import HyperLogLog
from app.metrics.pack import load_packs
from app.metrics.partials import Partial
from app.metrics.sketch import Sketch
from app.query.kpis import kpi_value, series
from app.store.db import create_engine_for, create_writer_engine, migrate_async
from app.store.schema import gauge_item
from app.store.upserts import upsert_partials

MINUTE_US = 60_000_000


def _us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1_000_000)


YEAR_START_US = _us("2024-01-01T00:00:00")


def _write(settings, pack) -> None:
    """Random minute partials over 2024 (and the edge of 2025) for every measure the tested KPIs
    read, total and one queue: sketches for sketch measures, registers for distinct ones."""
    rng = random.Random(10)
    written: dict[tuple[str, str, int], Partial] = {}
    for name, measure in pack.measures.items():
        if measure.lifecycle is not None:
            continue
        for dim_key in ("", "queue=PS"):
            for b in rng.sample(range(0, 370 * 1440), 1500):
                part = Partial(
                    sketch=Sketch() if measure.sketch else None,
                    distinct=HyperLogLog() if measure.distinct is not None else None,
                )
                for _ in range(rng.randrange(1, 4)):
                    part.add(round(rng.uniform(0, 300), 3))
                    if part.distinct is not None:
                        part.distinct.add_text(f"c{rng.randrange(400)}")
                written[(pack.measure_key(name), dim_key, YEAR_START_US + b * MINUTE_US)] = part
    items = []  # gauge items: open for minutes to days, some never closed, some closed before opening
    for gauge in pack.gauges:
        for i in range(3000):
            opened = YEAR_START_US + rng.randrange(0, 370 * 1440) * MINUTE_US
            closed = rng.choice([None, opened + rng.randrange(0, 3 * 1440) * MINUTE_US, opened + 5 * MINUTE_US])
            dim_key = rng.choice(["", "queue=PS"])
            items.append({"gauge": pack.gauge_key(gauge), "dim_key": dim_key, "item_key": f"i{i}", "opened_us": opened})
            items[-1]["closed_us"] = closed
    sync = create_writer_engine(settings)
    try:
        with sync.begin() as conn:
            upsert_partials(conn, written)
            conn.execute(gauge_item.insert(), items)
    finally:
        sync.dispose()


def _grouped_kpis(pack):
    """The KPIs whose series are grouped: partial-read KPIs and gauges (not the window KPIs)."""
    return [k for k in pack.kpis.values() if not k.reads_window]


CASES: list[tuple[Grain, str, str, str]] = [
    ("day", "Europe/Berlin", "2024-03-25T00:00:00", "2024-04-03T00:00:00"),  # spring forward (23 h day)
    ("day", "Europe/Berlin", "2024-10-24T00:00:00", "2024-10-30T00:00:00"),  # fall back (25 h day)
    ("day", "Asia/Kolkata", "2024-06-01T00:00:00", "2024-06-05T00:00:00"),  # days at :30 UTC: minute edges
    ("hour", "Europe/Berlin", "2024-03-30T22:00:00", "2024-03-31T04:00:00"),
    ("hour", "Asia/Kolkata", "2024-10-26T20:00:00", "2024-10-27T03:00:00"),
    ("month", "Europe/Berlin", "2024-01-15T00:00:00", "2024-12-20T00:00:00"),
    ("month", "America/New_York", "2024-02-10T00:00:00", "2024-11-10T00:00:00"),
]


async def test_series_equals_each_period_read_alone(make_settings) -> None:
    settings = make_settings()
    await migrate_async(settings)
    pack = load_packs()["contact-centre"]
    _write(settings, pack)
    kpis = _grouped_kpis(pack)
    kinds = {k.formula.kind for k in kpis}
    assert (
        any(k.is_gauge for k in kpis)
        and "percentile" in kinds
        and any(k.formula.measures and pack.measures[k.formula.measures[0]].distinct for k in kpis)
    )
    engine = create_engine_for(settings)
    try:
        async with engine.connect() as conn:
            compared = nonempty = 0
            for grain, zone_name, start, end in CASES:
                zone = ZoneInfo(zone_name)
                start_us, end_us = _us(start), _us(end)
                for dims in ((), (("queue", "PS"),)):
                    for kpi in kpis:
                        points = await series(conn, pack, kpi, grain, start_us, end_us, zone, dims, end_us)
                        assert len(points) >= 3
                        for point in points:
                            p = point.period
                            at_us = min(p.end_us, end_us)  # as a series reads gauges: at the end, or now if sooner
                            alone = await kpi_value(conn, pack, kpi, dims, p.start_us, p.end_us, at_us)
                            assert point.value == alone, (grain, zone_name, kpi.name, dims, p)
                            compared += 1
                            nonempty += point.value.value not in (None, 0, 0.0)
            assert nonempty > compared // 3  # the periods hold data, not only empty answers
    finally:
        await engine.dispose()


async def test_a_365_day_series_costs_the_statements_of_a_30_day_one(make_settings) -> None:
    settings = make_settings()
    await migrate_async(settings)
    pack = load_packs()["contact-centre"]
    _write(settings, pack)
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    engine = create_engine_for(settings)
    sync_engine = engine.sync_engine
    zone = ZoneInfo("Europe/Berlin")
    start_us = _us("2024-01-01T00:00:00")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")  # session set-up outside the counts
            sa_event.listen(sync_engine, "before_cursor_execute", count)
            try:
                for kpi in _grouped_kpis(pack):
                    per_days = []
                    for days in (30, 365):
                        statements.clear()
                        points = await series(
                            conn, pack, kpi, "day", start_us, start_us + days * 86_400_000_000, zone, (), start_us
                        )
                        assert len(points) in (days, days + 1)  # Berlin's first day begins 1 h before UTC
                        per_days.append(len(statements))
                    assert per_days[0] == per_days[1] <= 6, (kpi.name, per_days)
            finally:
                sa_event.remove(sync_engine, "before_cursor_execute", count)
    finally:
        await engine.dispose()
