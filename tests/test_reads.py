"""The read path's fast plans answer as the plain ones, on both stores: live gauge readings (looked
up by close time) equal the scan by open time; several windows in one conditional aggregate equal
one aggregate per window, sketches included."""

from __future__ import annotations

import random

from app.metrics.partials import Partial
from app.metrics.sketch import Sketch
from app.store import reads
from app.store.db import create_engine_for, create_writer_engine, migrate_async
from app.store.schema import gauge_item
from app.store.upserts import upsert_partials

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
        rows.append(
            {
                "gauge": "cc/queue",
                "dim_key": rng.choice(["", "queue=PS"]),
                "item_key": f"c{i}",
                "opened_us": opened,
                "closed_us": closed,
            }
        )
    try:
        async with engine.begin() as conn:
            await conn.execute(gauge_item.insert(), rows)
        async with engine.connect() as conn:
            checked = 0
            for at in [0, 1 * S, 5_000 * S, 9_999 * S, 14_400 * S, 19_999 * S, 25_000 * S]:
                batched = await reads.gauge_readings_live(
                    conn, "cc/queue", ["", "queue=PS", "queue=none"], at, 4 * 3600
                )
                assert (batched["queue=none"].open_count, batched["queue=none"].oldest_open_us) == (0, None)
                for dim_key in ("", "queue=PS"):
                    assert batched[dim_key] == await reads.gauge_reading(conn, "cc/queue", dim_key, at, 4 * 3600)
                    scan = await reads.gauge_reading(conn, "cc/queue", dim_key, at, 4 * 3600)
                    live = await reads.gauge_reading(conn, "cc/queue", dim_key, at, 4 * 3600, live=True)
                    expected = [
                        r["opened_us"]
                        for r in rows
                        if r["dim_key"] == dim_key
                        and r["opened_us"] is not None
                        and at - 4 * 3600 * S < r["opened_us"] <= at
                        and (r["closed_us"] is None or r["closed_us"] > at)
                    ]
                    assert (
                        (scan.open_count, scan.oldest_open_us)
                        == (live.open_count, live.oldest_open_us)
                        == (len(expected), min(expected, default=None))
                    )
                    checked += len(expected)
            assert checked > 50  # the instants hit open items, not only empty readings
    finally:
        await engine.dispose()


async def test_windows_from_hours_and_minutes_equal_the_minutes(make_settings) -> None:
    """Partials written through the write path (minutes and hours) and read over windows with
    ragged edges (a +05:30 day, 15 minutes, a window inside one hour) equal the sums of the
    minute partials written, sketches included; several windows at once equal one each."""
    settings = make_settings()
    await migrate_async(settings)
    rng = random.Random(11)
    minute = 60 * S
    written: dict[tuple[str, str, int], Partial] = {}
    for m in ("cc/answered", "cc/abandoned"):
        for dim_key in ("", "queue=PS"):
            for b in rng.sample(range(0, 1500), 400):
                part = Partial(sketch=Sketch() if m == "cc/answered" else None)
                for _ in range(rng.randrange(1, 5)):
                    part.add(rng.uniform(0, 300))
                written[(m, dim_key, b * minute)] = part
    sync = create_writer_engine(settings)
    try:
        with sync.begin() as conn:
            upsert_partials(conn, dict(list(written.items())[:700]))
        with sync.begin() as conn:  # a second flush adds to the rows of the first
            upsert_partials(conn, dict(list(written.items())[700:]))
    finally:
        sync.dispose()
    windows = [
        (0, 1500 * minute),
        (330 * minute, 1440 * minute + 330 * minute),
        (585 * minute, 600 * minute),
        (540 * minute, 600 * minute),
        (1600 * minute, 1660 * minute),
        (61 * minute, 119 * minute),
        (10 * minute, 11 * minute),
        (7, 7),
    ]
    engine = create_engine_for(settings)
    try:
        async with engine.connect() as conn:
            keys = ["cc/answered", "cc/abandoned"]
            grid = await reads.aggregate_grid(conn, keys, ["", "queue=PS", "queue=none"], windows, ["cc/answered"])
            assert grid["queue=none"] == [{} for _ in windows]
            for dim_key in ("", "queue=PS"):
                together = await reads.aggregate_windows(conn, keys, dim_key, windows, ["cc/answered"])
                assert [
                    {k: (p.count, round(p.sum, 6), p.min, p.max, p.sketch) for k, p in w.items()} for w in grid[dim_key]
                ] == [{k: (p.count, round(p.sum, 6), p.min, p.max, p.sketch) for k, p in w.items()} for w in together]
                for (start, end), got in zip(windows, together, strict=True):
                    one = await reads.aggregate(conn, keys, dim_key, start, end, ["cc/answered"])
                    expected: dict[str, Partial] = {}
                    for (m, d, b), part in written.items():
                        if d == dim_key and start <= b < end:
                            expected.setdefault(m, Partial()).merge(part)
                    assert got.keys() == one.keys() == expected.keys()
                    for k in expected:
                        want = expected[k]
                        for have in (got[k], one[k]):
                            assert (have.count, have.min, have.max) == (want.count, want.min, want.max)
                            assert abs(have.sum - want.sum) < 1e-6
                            assert have.sketch == (want.sketch if k == "cc/answered" else None)
                assert together[4] == {} and together[7] == {}
    finally:
        await engine.dispose()


async def test_two_upserts_of_a_table_in_one_transaction_add_once_each(make_settings) -> None:
    """The PostgreSQL upsert stages rows in a session temp table: a second upsert of the same table in
    one transaction (a rebuild chunk, a group with lifecycle deltas) must add only its own rows."""
    from sqlalchemy import select

    from app.store.schema import rollup_hour, rollup_minute

    settings = make_settings()
    await migrate_async(settings)
    writer = create_writer_engine(settings)
    engine = create_engine_for(settings)
    key = ("cc/answered", "", 60 * S)
    try:
        with writer.begin() as conn:
            upsert_partials(conn, {key: Partial(count=2, sum=3.0, min=1.0, max=2.0)})
            upsert_partials(conn, {key: Partial(count=5, sum=10.0, min=0.5, max=4.0)})
        async with engine.connect() as conn:
            minute = (
                await conn.execute(
                    select(rollup_minute.c.count, rollup_minute.c.sum, rollup_minute.c.min, rollup_minute.c.max)
                )
            ).all()
            hour = (
                await conn.execute(select(rollup_hour.c.count, rollup_hour.c.sum, rollup_hour.c.min, rollup_hour.c.max))
            ).all()
        assert [tuple(r) for r in minute] == [(7, 13.0, 0.5, 4.0)]
        assert [tuple(r) for r in hour] == [(7, 13.0, 0.5, 4.0)]
    finally:
        writer.dispose()
        await engine.dispose()
