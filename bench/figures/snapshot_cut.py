"""Figure 5: daily snapshot cut of a big day, and the monthly cut, vs recompute from raw events.

The store (``bench.bigstore``) is loaded once through the product's write
path; every repeat cuts a fresh copy of it (snapshots are immutable, so a
repeat cannot cut the same period twice in one store).  Timed with the
product's own ``SnapshotService.cut_period`` (what ``pulseboard snapshot cut``
runs): KPIs from the minute rollups, plus the reconciliation stored with the
cut.

Baseline, same store, same period: recompute from raw events as one SQL
aggregate over the period's raw ``event`` rows (count, sum, answered within
20 s / 60 s per event type: every additive input of the day's KPIs), run by
SQLite directly.

The big day holds at least ``DAY_TARGET_EVENTS`` (1,000,000, issue 5's figure) unless
``--quick`` (one copy of August, ~100k).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path

from bench import bigstore
from bench.context import RunContext
from bench.report import Figure, ratios
from bench.stats import summarize

SLUG = "contact-centre"
DAY_TARGET_EVENTS = 1_000_000
RAW_AGGREGATE_SQL = """
SELECT type, count(*), sum(value), sum(value <= 20), sum(value <= 60)
FROM event WHERE ts_us >= ? AND ts_us < ? AND type IN ('call.answered', 'call.abandoned', 'call.ended', 'call.queued')
GROUP BY type
"""


def _copy_store(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "pulseboard.db", dst / "pulseboard.db")
    return dst


async def _cut(data_dir: Path, grain: str, label: str) -> tuple[float, str]:
    from app.clock import SystemClock
    from app.metrics.pack import load_packs
    from app.snapshots.service import SnapshotService
    from app.store.db import create_engine_for

    settings = bigstore.settings_for(data_dir)
    engine = create_engine_for(settings)
    try:
        service = SnapshotService(engine, load_packs(settings.packs_dir), settings, SystemClock())
        async with engine.connect() as conn:  # open the pool outside the timing
            await conn.exec_driver_sql("SELECT 1")
        t0 = time.perf_counter()
        row, created = await service.cut_period(SLUG, grain, label)
        elapsed = time.perf_counter() - t0
        if not created:
            raise RuntimeError(f"{grain} {label} was not cut (already cut?)")
        return elapsed, row.status
    finally:
        await engine.dispose()


def _period_bounds_us(data_dir: Path, grain: str, label: str) -> tuple[int, int]:
    from app.clock import SystemClock
    from app.metrics.pack import load_packs
    from app.snapshots.service import SnapshotService

    settings = bigstore.settings_for(data_dir)
    period = SnapshotService(None, load_packs(settings.packs_dir), settings, SystemClock()).period(SLUG, grain, label)
    return period.start_us, period.end_us


def sql_recompute_s(db_path: Path, start_us: int, end_us: int) -> float:
    """Seconds of the raw-event SQL aggregate over ``[start_us, end_us)`` (SQLite, WAL + FULL)."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        t0 = time.perf_counter()
        conn.execute(RAW_AGGREGATE_SQL, (start_us, end_us)).fetchall()
        return time.perf_counter() - t0
    finally:
        conn.close()


def get_store(ctx: RunContext) -> bigstore.BigStore:
    """The big store of this run, built on first use (shared with the tile-refresh figure)."""
    if "bigstore" not in ctx.cache:
        copies = 1 if ctx.quick else bigstore.copies_for_day(DAY_TARGET_EVENTS)
        ctx.cache["bigstore"] = bigstore.build(ctx.dir("bigstore"), copies)
    return ctx.cache["bigstore"]


def run(ctx: RunContext) -> list[Figure]:
    store = get_store(ctx)
    figs = []
    for grain, label, events, goal in (
        ("day", bigstore.BIG_DAY_LABEL, store.day_events, "≤ 1 s"),
        ("month", bigstore.MONTH_LABEL, store.month_events, "report"),
    ):
        start_us, end_us = _period_bounds_us(store.data_dir, grain, label)
        cut_s, base_s = [], []
        for r in range(ctx.repeats):
            copy = _copy_store(store.data_dir, ctx.tmp / f"cut-{grain}-{r}")
            base_s.append(sql_recompute_s(copy / "pulseboard.db", start_us, end_us))
            if grain == "month":  # cut the big day first, as the schedule would
                asyncio.run(_cut(copy, "day", bigstore.BIG_DAY_LABEL))
            cut_s.append(asyncio.run(_cut(copy, grain, label))[0])
            shutil.rmtree(copy, ignore_errors=True)
        fig = Figure(
            f"snapshot_{grain}",
            f"{grain} snapshot cut ({events:,}-event {grain}, SQLite)",
            "s",
            product=summarize(cut_s),
            baseline=summarize(base_s),
            baseline_label="raw-event SQL aggregate of the period",
            ratio=ratios(cut_s, base_s),
            ratio_label="of the raw recompute time",
            goal=goal,
        )
        fig.notes.append(
            "cut = SnapshotService.cut_period (KPIs from the minute rollups + the reconciliation stored "
            "with the cut, which recomputes every measure from raw events by SQL aggregates)."
        )
        if grain == "day":
            per_event_us = fig.product.median / events * 1e6
            reached = events >= DAY_TARGET_EVENTS
            fig.met = reached and fig.product.median <= 1.0
            fig.notes.append(
                f"Scale reached: {events:,} events in the day (store loaded through the write path, "
                f"parse included, at {store.load_events_per_s:,.0f} events/s in {store.load_s:.0f} s)."
                + (
                    ""
                    if reached
                    else f" The 1,000,000-event day was NOT reached (--quick); at "
                    f"{per_event_us:.2f} µs/event a linear extrapolation gives ≈ {per_event_us:.2f} s "
                    "for 1M."
                )
            )
        else:
            fig.met = None
            fig.notes.append(
                f"Scale reached: {events:,} events in the month (the real month plus the big day); "
                f"30M events NOT reached (loading alone would take "
                f"≈ {30e6 / store.load_events_per_s / 60:,.0f} min at the measured write rate). "
                f"The goal only asks to report the month."
            )
        fig.extra = {"events": events}
        figs.append(fig)
    return figs
