"""Migrations carry stored data forward (both stores): 0005 turns sketch blobs into additive bins,
0007 backfills hour partials from the minutes."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect, text

from app.metrics.sketch import Sketch
from app.store import reads
from app.store.db import MIGRATIONS_DIR, _sync_engine, create_engine_for, migrate


def _upgrade(settings, revision: str) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = _sync_engine(settings)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql" and settings.db_schema:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{settings.db_schema}"')
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def test_0005_converts_sketch_blobs_to_bins(make_settings) -> None:
    settings = make_settings()
    _upgrade(settings, "0004")
    minute_us = 60_000_000
    waits_a = [0.0, 3.0, 3.01, 17.5, 250.0, 250.0]
    waits_b = [-2.0, 0.5, 3.0, 900.0]
    a, b = Sketch(), Sketch()
    for v in waits_a:
        a.add(v)
    for v in waits_b:
        b.add(v)
    engine = _sync_engine(settings)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO rollup_minute (measure, dim_key, bucket_us, count, sum, min, max, sketch) "
                    "VALUES (:m, :d, :b, :c, :s, :mn, :mx, :sk)"
                ),
                [
                    {
                        "m": "cc/answered",
                        "d": "",
                        "b": minute_us,
                        "c": len(waits_a),
                        "s": sum(waits_a),
                        "mn": min(waits_a),
                        "mx": max(waits_a),
                        "sk": a.to_bytes(),
                    },
                    {
                        "m": "cc/answered",
                        "d": "",
                        "b": 2 * minute_us,
                        "c": len(waits_b),
                        "s": sum(waits_b),
                        "mn": min(waits_b),
                        "mx": max(waits_b),
                        "sk": b.to_bytes(),
                    },
                    {"m": "cc/abandoned", "d": "", "b": minute_us, "c": 2, "s": 4.0, "mn": 1.0, "mx": 3.0, "sk": None},
                ],
            )
    finally:
        engine.dispose()

    migrate(settings)  # to head

    engine = _sync_engine(settings)
    try:
        with engine.connect() as conn:
            assert "sketch" not in {c["name"] for c in inspect(conn).get_columns("rollup_minute")}
            stored = sorted(
                conn.execute(
                    text("SELECT bucket_us, side, bin, count FROM rollup_sketch_bin WHERE measure = 'cc/answered'")
                ).all()
            )
            hours = sorted(conn.execute(text("SELECT measure, bucket_us, count, min, max FROM rollup_hour")).all())
            hour_bins = sorted(
                conn.execute(
                    text("SELECT side, bin, count FROM rollup_hour_sketch_bin WHERE measure = 'cc/answered'")
                ).all()
            )
    finally:
        engine.dispose()
    # 0007 backfilled the hour partials from the minutes: one hour holds both minutes
    assert hours == [("cc/abandoned", 0, 2, 1.0, 3.0), ("cc/answered", 0, 10, -2.0, 900.0)]
    both = Sketch()
    both.merge(a)
    both.merge(b)
    assert hour_bins == sorted(both.bins())
    expected = sorted([(minute_us, *x) for x in a.bins()] + [(2 * minute_us, *x) for x in b.bins()])
    assert stored == expected
    assert sum(c for *_, c in stored) == len(waits_a) + len(waits_b)

    async def read() -> dict:
        aengine = create_engine_for(settings)
        try:
            async with aengine.connect() as conn:
                return await reads.aggregate(
                    conn, ["cc/answered", "cc/abandoned"], "", 0, 3 * minute_us, ["cc/answered"]
                )
        finally:
            await aengine.dispose()

    got = asyncio.run(read())
    whole = Sketch()
    for v in waits_a + waits_b:
        whole.add(v)
    assert got["cc/answered"].count == 10 and got["cc/answered"].sketch == whole
    assert got["cc/answered"].sketch.quantile(0.5) == whole.quantile(0.5)
    assert got["cc/abandoned"].count == 2 and got["cc/abandoned"].sketch is None
