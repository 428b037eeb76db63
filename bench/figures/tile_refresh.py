"""Figure 6: live tile refresh time of the contact-centre dashboard over a real store.

``app.query.tiles.dashboard_tiles`` (what the tile hub runs per refresh) over the big
store of ``bench.bigstore``, evaluated at 14:00 local on the big day (every
window full of data), per refresh in ms.  Measured for the shipped dashboard
and for a 20-tile variant with per-queue tiles (the issue's "20 KPIs, 10
queues"; the real data has 6 queues).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from bench import bigstore
from bench.context import RunContext
from bench.figures.snapshot_cut import get_store
from bench.report import Figure
from bench.stats import summarize

REFRESHES = 40
WARMUP = 5


def wide_dashboard(pack, dashboard):
    """The shipped dashboard plus per-queue tiles up to 20 tiles (every queue of the data)."""
    from app.metrics.pack import Tile

    queues = ["PS", "NW", "NE", "IN", "TT", "PE"]
    extra = [Tile(f"sl20_{q}", "service_level_20s", "today", dims=(("queue", q),)) for q in queues]
    extra += [Tile(f"asa_{q}", "asa_s", "60m", dims=(("queue", q),)) for q in queues]
    tiles = (tuple(dashboard.tiles) + tuple(extra))[:20]
    return replace(dashboard, slug=f"{dashboard.slug}-wide", tiles=tiles)


async def _per_refresh_ms(ctx: RunContext, store: bigstore.BigStore) -> dict[str, list[float]]:
    from app.metrics.calendar import to_us
    from app.metrics.pack import load_packs
    from app.query.tiles import dashboard_tiles
    from app.store.db import create_engine_for

    settings = bigstore.settings_for(store.data_dir)
    packs = load_packs(settings.packs_dir)
    pack = packs["contact-centre"]
    shipped = pack.dashboards["contact-centre"]
    boards = {"shipped": shipped, "wide": wide_dashboard(pack, shipped)}
    now_us = to_us(bigstore.BIG_DAY.replace(hour=14))
    engine = create_engine_for(settings)
    out: dict[str, list[float]] = {k: [] for k in boards}
    try:
        for _ in range(ctx.repeats):
            for name, board in boards.items():
                async with engine.connect() as conn:
                    for _ in range(WARMUP):
                        await dashboard_tiles(conn, pack, board, now_us, bigstore.ZONE)
                    t0 = time.perf_counter()
                    for _ in range(REFRESHES):
                        await dashboard_tiles(conn, pack, board, now_us, bigstore.ZONE)
                    out[name].append((time.perf_counter() - t0) / REFRESHES * 1000)
        out["tiles"] = [len(b.tiles) for b in boards.values()]
    finally:
        await engine.dispose()
    return out


def run(ctx: RunContext) -> list[Figure]:
    got = asyncio.run(_per_refresh_ms(ctx, get_store(ctx)))
    shipped_tiles, wide_tiles = got["tiles"]
    figs = []
    for name, tiles in (("shipped", shipped_tiles), ("wide", wide_tiles)):
        what = "contact-centre dashboard" if name == "shipped" else "20-tile variant, 6 queues"
        fig = Figure(
            f"tile_refresh_{name}",
            f"live tile refresh, {what} ({tiles} tiles)",
            "ms/refresh",
            product=summarize(got[name]),
            goal="≤ 5 ms per refresh",
        )
        fig.met = fig.product.median <= 5.0
        fig.notes.append(
            f"app.query.tiles.dashboard_tiles over the big store (SQLite), at 14:00 on the big day; "
            f"{REFRESHES} refreshes per repeat after {WARMUP} warm-up ones."
        )
        figs.append(fig)
    return figs
