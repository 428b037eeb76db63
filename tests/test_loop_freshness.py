"""Live targets by grain and freshness on every tile (issue 14, item 5), on both stores, with real
calls of the morning of 1999-08-10 posted minute by minute as they happened, and a batch of calls
held back and posted twenty minutes late."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from app.clock import ManualClock
from tests.loop_data import SLUG, ZONE, events_of

DAY = date(1999, 8, 10)
START = datetime(1999, 8, 10, 7, 0, tzinfo=ZONE)
END = datetime(1999, 8, 10, 8, 0, tzinfo=ZONE)
LATE_FROM, LATE_TO = datetime(1999, 8, 10, 7, 30, tzinfo=ZONE), datetime(1999, 8, 10, 7, 40, tzinfo=ZONE)
NOW = END + timedelta(seconds=5)

GRAIN_PACK = """
pack: cc-grain
title: Contact centre with targets per grain
dimensions: [queue]
measures:
  answered: {event: call.answered}
  answered_within_20s: {event: call.answered, where: {value: {le: 20}}}
  abandoned: {event: call.abandoned}
kpis:
  service_level_20s:
    title: Service level 20 s
    unit: ratio
    formula: {ratio: {numerator: {count: answered_within_20s}, denominator: {count: [answered, abandoned]}}}
    target: 0.8
    targets: {day: 0.15, month: 0.95}
    direction: higher
    amber_band: 0.05
dashboards:
  cc-grain:
    title: Targets by grain
    tiles:
      - {id: sl_today, kpi: service_level_20s, window: today}
      - {id: sl_month, kpi: service_level_20s, window: month}
      - {id: sl_60m, kpi: service_level_20s, window: 60m}
"""


def _rag(value: float, target: float, band: float = 0.05) -> str:
    return "green" if value >= target else "amber" if value >= target - band else "red"


def _sl(events) -> float:
    answered = [e for e in events if e["type"] == "call.answered"]
    offered = len(answered) + sum(1 for e in events if e["type"] == "call.abandoned")
    return sum(1 for e in answered if e["value"] <= 20) / offered


@pytest.fixture
async def loaded(make_settings, start_server, client_for, tmp_path: Path):
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "cc-grain.yaml").write_text(GRAIN_PACK, encoding="utf-8")
    clock = ManualClock(START)
    srv = await start_server(
        make_settings(tz="Asia/Jerusalem", packs_dir=packs, wall_data_age_after_s=120, late_event_after_s=300),
        clock=clock,
    )
    day = [e for e in events_of({DAY}) if e["ts"] < END.isoformat()]
    held = [e for e in day if LATE_FROM.isoformat() <= e["ts"] < LATE_TO.isoformat() and e["type"] != "call.queued"]
    held = [e for e in held if e["dims"]["call"].endswith(("1", "3", "7"))]
    held_ids = {e["id"] for e in held}
    on_time = [e for e in day if e["id"] not in held_ids]
    async with client_for(srv) as client:
        step, posted = START, 0
        early = [e for e in on_time if e["ts"] < START.isoformat()]
        assert (await client.post("/api/v1/events", json=early)).status_code == 202  # the night, posted at 07:00
        posted = len(early)
        while step < END:
            step += timedelta(minutes=1)
            clock.set(step + timedelta(seconds=5))  # each minute's calls reach the store 5 s after it
            batch = [e for e in on_time[posted:] if e["ts"] < step.isoformat()]
            if batch:
                assert (await client.post("/api/v1/events", json=batch)).status_code == 202
                posted += len(batch)
        assert posted == len(on_time)
        clock.set(NOW)
        assert (await client.post("/api/v1/events", json=held)).status_code == 202  # 20-30 minutes late
        tiles = (await client.get(f"/api/v1/dashboards/{SLUG}")).json()["tiles"]
        grain = (await client.get("/api/v1/dashboards/cc-grain")).json()["tiles"]
    typed = [{**e, "ts": datetime.fromisoformat(e["ts"])} for e in day]
    late_early = [e for e in early if datetime.fromisoformat(e["ts"]) < START - timedelta(seconds=300)]
    return tiles, grain, typed, held, late_early


async def test_today_tile_uses_the_day_target_and_month_tile_the_month_target(loaded):
    _tiles, grain, events, _held, _ = loaded
    today = _sl(events)
    last_60 = _sl([e for e in events if e["ts"] >= END - timedelta(minutes=59)])  # 60 buckets incl. the open one
    assert grain["sl_today"]["value"] == pytest.approx(today, rel=1e-12)
    assert (grain["sl_today"]["target"], grain["sl_today"]["target_grain"]) == (0.15, "day")
    assert (grain["sl_month"]["target"], grain["sl_month"]["target_grain"]) == (0.95, "month")
    assert (grain["sl_60m"]["target"], grain["sl_60m"]["target_grain"]) == (0.8, "base")
    assert grain["sl_today"]["status"] == _rag(today, 0.15)
    assert grain["sl_month"]["status"] == _rag(today, 0.95)  # the month so far is this morning
    assert grain["sl_60m"]["value"] == pytest.approx(last_60, rel=1e-12)
    assert grain["sl_60m"]["status"] == _rag(last_60, 0.8)
    assert grain["sl_today"]["status"] != grain["sl_month"]["status"]  # the grain decides the colour


async def test_every_tile_carries_watermark_lag_and_late_share(loaded):
    tiles, _grain, events, held, late_early = loaded
    held_ids = {e["id"] for e in held}
    assert held and all(t.get("freshness") for t in tiles.values())
    for tile_id, types, since in (
        ("sl20_today", {"call.answered", "call.abandoned"}, datetime(1999, 8, 10, tzinfo=ZONE)),
        ("abandoned_today", {"call.abandoned"}, datetime(1999, 8, 10, tzinfo=ZONE)),
        ("aht_today", {"call.ended"}, datetime(1999, 8, 10, tzinfo=ZONE)),
        ("in_queue", {"call.queued", "call.answered", "call.abandoned"}, NOW - timedelta(hours=4)),
    ):
        mine = [e for e in events if e["type"] in types and e["ts"] >= since]
        fresh = tiles[tile_id]["freshness"]
        newest = max(e["ts"] for e in mine)
        late = [e for e in mine if e["id"] in held_ids or e["id"] in {x["id"] for x in late_early}]
        assert fresh["watermark"] == newest.isoformat(), tile_id
        assert fresh["lag_s"] == (NOW - newest).total_seconds(), tile_id
        assert fresh["events"] == len(mine), tile_id
        assert fresh["late_events"] == len(late) > 0, tile_id
        assert fresh["late_ratio"] == pytest.approx(len(late) / len(mine)), tile_id
        assert (fresh["late_after_s"], fresh["stale_after_s"]) == (300, 120)
    links = tiles["sl20_today"]["links"]
    assert links["scorecard"] == f"/scorecard/{SLUG}/1999-08#kpi-service_level_20s"
    assert links["day"] == f"/day/{SLUG}/1999-08-10#breaches"
    assert links["events"].startswith("/api/v1/kpis/service_level_20s/events?start=1999-08-10T00%3A00%3A00%2B03%3A00")
    assert tiles["sl20_today"]["owner"] == {"role": "Operations manager", "person": None}
