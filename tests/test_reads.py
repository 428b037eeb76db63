"""The read path's fast plans answer as the plain ones, on both stores: live gauge readings (looked
up by close time) equal the scan by open time; several windows in one conditional aggregate equal
one aggregate per window, sketches included."""

from __future__ import annotations

import random

from app.store import reads
from app.store.db import create_engine_for, migrate_async
from app.metrics.sketch import Sketch
from app.store.schema import gauge_item, rollup_minute, rollup_sketch_bin

S = 1_000_000


async def test_live_plan_reads_the_same_items(make_settings) -> None:
    settings = make_settings()
    await migrate_async(settings)
    engine = create_engine_for(settings)
    rng = random.Random(7)
    rows = []
    for i in range(600):
        opened = rng.choice([None, rng.randrange(0, 20_000) * S])
        closed = rng.choice([None, None, (opened or 0) + rng.randrange(0, 6_000) * S, rng.randrange(0, 20_000) * S])
        rows.append({"gauge": "cc/queue", "dim_key": rng.choice(["", "queue=PS"]), "item_key": f"c{i}",
                     "opened_us": opened, "closed_us": closed})
    try:
        async with engine.begin() as conn:
            await conn.execute(gauge_item.insert(), rows)
        async with engine.connect() as conn:
            checked = 0
            for at in [0, 1 * S, 5_000 * S, 9_999 * S, 14_400 * S, 19_999 * S, 25_000 * S]:
                for dim_key in ("", "queue=PS"):
                    scan = await reads.gauge_reading(conn, "cc/queue", dim_key, at, 4 * 3600)
                    live = await reads.gauge_reading(conn, "cc/queue", dim_key, at, 4 * 3600, live=True)
                    expected = [r["opened_us"] for r in rows if r["dim_key"] == dim_key and r["opened_us"] is not None
                                and at - 4 * 3600 * S < r["opened_us"] <= at
                                and (r["closed_us"] is None or r["closed_us"] > at)]
                    assert (scan.open_count, scan.oldest_open_us) == (live.open_count, live.oldest_open_us) == (
                        len(expected), min(expected, default=None))
                    checked += len(expected)
            assert checked > 50  # the instants hit open items, not only empty readings
    finally:
        await engine.dispose()


async def test_windows_in_one_aggregate_equal_one_aggregate_each(make_settings) -> None:
    settings = make_settings()
    await migrate_async(settings)
    engine = create_engine_for(settings)
    rng = random.Random(11)
    minute = 60 * S
    minutes, bins = [], []
    for m in ("cc/answered", "cc/abandoned"):
        for dim_key in ("", "queue=PS"):
            for b in rng.sample(range(0, 600), 200):
                sk = Sketch()
                values = [rng.uniform(0, 300) for _ in range(rng.randrange(1, 5))]
                for v in values:
                    sk.add(v)
                minutes.append({"measure": m, "dim_key": dim_key, "bucket_us": b * minute, "count": len(values),
                                "sum": sum(values), "min": min(values), "max": max(values)})
                if m == "cc/answered":
                    bins += [{"measure": m, "dim_key": dim_key, "bucket_us": b * minute, "side": side, "bin": i,
                              "count": c} for side, i, c in sk.bins()]
    windows = [(0, 600 * minute), (585 * minute, 600 * minute), (540 * minute, 600 * minute),
               (700 * minute, 760 * minute), (10 * minute, 11 * minute)]
    try:
        async with engine.begin() as conn:
            await conn.execute(rollup_minute.insert(), minutes)
            await conn.execute(rollup_sketch_bin.insert(), bins)
        async with engine.connect() as conn:
            for dim_key in ("", "queue=PS"):
                keys = ["cc/answered", "cc/abandoned"]
                together = await reads.aggregate_windows(conn, keys, dim_key, windows, ["cc/answered"])
                for (start, end), got in zip(windows, together):
                    one = await reads.aggregate(conn, keys, dim_key, start, end, ["cc/answered"])
                    assert got.keys() == one.keys()
                    for k in one:
                        assert (got[k].count, got[k].min, got[k].max, got[k].sketch) == (
                            one[k].count, one[k].min, one[k].max, one[k].sketch)
                        assert abs(got[k].sum - one[k].sum) < 1e-6
                assert together[3] == {}  # a window with no rows has no measures
                assert together[0]["cc/answered"].count == sum(
                    r["count"] for r in minutes if r["measure"] == "cc/answered" and r["dim_key"] == dim_key)
    finally:
        await engine.dispose()
