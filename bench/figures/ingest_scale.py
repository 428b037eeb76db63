"""Figure: does the write path slow down as the store grows?  (issue 5, "keep insert cost flat
as the table grows: show the ingest rate at 1M and at 50M stored events").

Pulseboard: the write path in-process (parse + validate + ``write_group`` + commit, 1,000-event
groups, as the HTTP batches are) writing ``SCALE_EVENTS`` fresh real events into a copy of the
big store (``bench.bigstore``: over 1.1M events stored).  Baseline, same run: the same events
into an empty store.  Ratio = rate into the big store / rate into the empty one (1.0 = flat).
SQLite only; 50M stored events are not reached (loading them would take ~40 min here).
"""

from __future__ import annotations

import itertools
import shutil
import time
from datetime import datetime
from pathlib import Path

import msgspec

from bench import bigstore, data
from bench.context import RunContext
from bench.figures.snapshot_cut import get_store
from bench.report import Figure, ratios
from bench.stats import summarize

SCALE_EVENTS = 50_000
GROUP = 1000
SCALE_DAY = datetime(1999, 8, 22, tzinfo=bigstore.ZONE)


def _write_rate(data_dir: Path, tag: str) -> float:
    """Events/s of the write path storing ``SCALE_EVENTS`` fresh events into the store at ``data_dir``."""
    from app.ingest.parse import Limits, parse_events
    from app.metrics.pack import load_packs
    from app.store.db import create_writer_engine, migrate
    from app.store.writes import write_group

    settings = bigstore.settings_for(data_dir)
    migrate(settings)
    engine = create_writer_engine(settings)
    packs = list(load_packs(settings.packs_dir).values())
    limits = Limits(int(time.time() * 1e6), 300.0, None, 1024, 20, 10**9)
    moved = data.moved_to_day(data.august_events(), SCALE_DAY, 1, tag)
    bodies = [msgspec.json.encode(list(itertools.islice(moved, GROUP))) for _ in range(SCALE_EVENTS // GROUP)]
    try:
        with engine.connect() as conn:  # open the pool outside the timing
            conn.exec_driver_sql("SELECT 1")
        t0 = time.perf_counter()
        for body in bodies:
            events = parse_events(body, "application/json", limits)
            with engine.begin() as conn:
                write_group(conn, [events], packs, int(time.time() * 1e6))
        return SCALE_EVENTS / (time.perf_counter() - t0)
    finally:
        engine.dispose()


def run(ctx: RunContext) -> list[Figure]:
    store = get_store(ctx)
    big, empty = [], []
    for r in range(ctx.repeats):
        copy = ctx.tmp / f"scale-big-{r}"
        copy.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.db_path, copy / "pulseboard.db")
        big.append(_write_rate(copy, f"scale{r}"))
        shutil.rmtree(copy, ignore_errors=True)
        fresh = ctx.tmp / f"scale-empty-{r}"
        empty.append(_write_rate(fresh, f"scale{r}"))
        shutil.rmtree(fresh, ignore_errors=True)
    fig = Figure(
        "ingest_scale",
        f"write path into a store of {store.loaded_events:,} events (SQLite)",
        "events/s",
        product=summarize(big),
        baseline=summarize(empty),
        baseline_label="the same into an empty store",
        ratio=ratios(big, empty),
        ratio_label="of the empty-store rate",
        goal="flat (report)",
    )
    fig.met = None
    fig.notes.append(
        f"{SCALE_EVENTS:,} fresh real events a repeat, parse + write_group + commit in {GROUP:,}-event "
        f"groups, in-process (no HTTP). 50M stored events NOT reached: loading them through the write "
        f"path would take ≈ {50e6 / store.load_events_per_s / 60:,.0f} min at the measured "
        f"{store.load_events_per_s:,.0f} events/s."
    )
    return [fig]
