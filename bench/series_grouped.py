"""A 365-day series: grouped reads (``app.query.kpis.series``) against one read per period
(``kpi_value`` per day, the path before issue 10 item 9), same store, same run, SQLite.

Run: ``.venv/bin/python -m bench.series_grouped`` (prints seconds per series and the ratio;
asserts nothing).  Data: the partials and gauge items of ``tests/test_series_grouped.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from app.config import Settings
from app.metrics.calendar import iter_periods
from app.metrics.pack import load_packs
from app.query.kpis import kpi_value, series
from app.store.db import create_engine_for, migrate_async


async def main() -> None:
    """Time both paths for every grouped KPI of the contact-centre pack, best of 3 each."""
    from tests.test_series_grouped import YEAR_START_US, _grouped_kpis, _write

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), tz="UTC", snapshots_enabled=False)
        await migrate_async(settings)
        pack = load_packs()["contact-centre"]
        _write(settings, pack)
        zone = ZoneInfo("Europe/Berlin")
        start, end = YEAR_START_US, YEAR_START_US + 365 * 86_400_000_000
        engine = create_engine_for(settings)
        try:
            async with engine.connect() as conn:
                for kpi in _grouped_kpis(pack):
                    grouped, per_period = [], []
                    for _ in range(3):
                        t0 = time.perf_counter()
                        await series(conn, pack, kpi, "day", start, end, zone, (), end)
                        grouped.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        for p in iter_periods("day", start, end, zone):
                            await kpi_value(conn, pack, kpi, (), p.start_us, p.end_us, min(p.end_us, end))
                        per_period.append(time.perf_counter() - t0)
                    g, o = min(grouped), min(per_period)
                    print(
                        f"{kpi.name:28s} grouped {g * 1000:8.1f} ms  per-period {o * 1000:8.1f} ms  ratio {o / g:5.1f}x"
                    )
        finally:
            await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
