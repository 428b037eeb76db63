"""The breach log and the review agenda (issue 14, item 2) on both stores, with the real morning of
1999-08-10 (the service-level breach) posted as it happened, five minutes at a time, the wall
computed after each step: every red spell of the service-level tiles is recorded with its start,
end, worst value and window, exactly as computed here from the file's events; the day page lists
them with the owner; an owner's note explains them; the agenda ranks with the figures it shows."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from app.clock import ManualClock
from app.metrics.calendar import to_us
from tests.loop_data import SLUG, ZONE, events_of

DAY = date(1999, 8, 10)
FIRST = datetime(1999, 8, 10, 7, 0, tzinfo=ZONE)
STEPS = [FIRST + timedelta(minutes=5 * i) for i in range(61)]  # 07:00 .. 12:00
RED_BELOW, AMBER_BELOW = 0.75, 0.8  # service_level_20s: target 0.8, amber band 0.05 (higher is better)


def _sl(events) -> float | None:
    answered = [e for e in events if e["type"] == "call.answered"]
    offered = len(answered) + sum(1 for e in events if e["type"] == "call.abandoned")
    return sum(1 for e in answered if e["value"] <= 20) / offered if offered else None


def _status(value: float | None) -> str | None:
    if value is None:
        return None
    return "red" if value < RED_BELOW else "amber" if value < AMBER_BELOW else "green"


def expected_spells(events, window) -> list[dict]:
    """Red spells of the SL 20 s tile on ``window`` ("today" or "15m") at the steps, from the events."""
    spells: list[dict] = []
    spell = None
    for at in STEPS:
        if window == "today":
            lo = datetime(1999, 8, 10, tzinfo=ZONE)
        else:
            lo = at.replace(second=0) + timedelta(minutes=1) - timedelta(minutes=15)
        seen = [e for e in events if lo <= e["ts"] <= at]
        value = _sl(seen)
        if _status(value) == "red":
            if spell is None:
                spell = {"started": at, "ended": None, "worst": value}
                spells.append(spell)
            spell["worst"] = min(spell["worst"], value)
        elif spell is not None:
            spell["ended"] = at
            spell = None
    return spells


@pytest.fixture
async def srv(make_settings, start_server):
    clock = ManualClock(FIRST)
    srv = await start_server(make_settings(tz="Asia/Jerusalem"), clock=clock)
    srv.clock = clock
    return srv


async def test_breach_log_records_red_spells_with_values(srv, client_for):
    raw = [e for e in events_of({DAY}) if e["ts"] <= STEPS[-1].isoformat()]
    events = [{**e, "ts_dt": datetime.fromisoformat(e["ts"])} for e in raw]
    hub = srv.runtime.hub
    channel = hub.channels[SLUG]
    async with client_for(srv) as client:
        posted = 0
        for at in STEPS:
            srv.clock.set(at)
            batch = [e for e in raw[posted:] if datetime.fromisoformat(e["ts"]) <= at]
            if batch:
                resp = await client.post("/api/v1/events", json=batch)
                assert resp.status_code == 202, resp.text
                posted += len(batch)
            await hub.refresh(channel)
        log = (await client.get(f"/api/v1/breaches/{SLUG}", params={"day": "1999-08-10"})).json()
    typed = [{**e, "ts": e["ts_dt"]} for e in events]
    for tile, window in (("sl20_today", "today"), ("sl20_15m", "15m")):
        want = expected_spells(typed, window)
        got = [b for b in log["breaches"] if b["tile"] == tile]
        assert want, f"the morning of 1999-08-10 has red spells on {tile}"
        assert [(b["started_at"], b["ended_at"]) for b in got] == [
            (w["started"].isoformat(), w["ended"].isoformat() if w["ended"] else None) for w in want
        ], tile
        for b, w in zip(got, want, strict=True):
            assert b["worst_value"] == pytest.approx(w["worst"], rel=1e-12)
            assert (b["kpi"], b["window"], b["source"], b["day"]) == ("service_level_20s", window, "live", "1999-08-10")
            assert b["owner"] == {"role": "Operations manager", "person": None} and b["explained"] is False
            end = w["ended"] or STEPS[-1]
            assert b["duration_s"] == (end - w["started"]).total_seconds() and b["ongoing"] == (w["ended"] is None)
            assert b["target"] == 0.8 and b["direction"] == "higher"


async def test_day_page_breaches_explained_by_owner_and_agenda_ranks_with_figures(srv, client_for):
    owner_key, _ = await srv.runtime.keys.create("comment", "ops", 0, holder="Orna Ops")
    as_owner = {"Authorization": f"Bearer {owner_key}"}
    raw = [e for e in events_of({DAY}) if e["ts"] <= STEPS[-1].isoformat()]
    hub = srv.runtime.hub
    async with client_for(srv) as client:
        posted = 0
        for at in STEPS[::3]:
            srv.clock.set(at)
            batch = [e for e in raw[posted:] if datetime.fromisoformat(e["ts"]) <= at]
            if batch:
                assert (await client.post("/api/v1/events", json=batch)).status_code == 202
                posted += len(batch)
            await hub.refresh(hub.channels[SLUG])
        srv.clock.set(datetime(1999, 9, 1, 0, 20, tzinfo=ZONE))
        await srv.runtime.snapshots.run_due(to_us(datetime(1999, 9, 1, 0, 20, tzinfo=ZONE)))
        day = (await client.get(f"/api/v1/days/{SLUG}/1999-08-10")).json()
        live = [b for b in day["breaches"] if b["source"] == "live"]
        assert live and all(b["owner"] is not None for b in day["breaches"])
        assert "service_level_20s" in day["needs_explanation"]
        # A comment key writes the owner's note; a read key may not.
        refused = await client.post(
            f"/api/v1/days/{SLUG}/1999-08-10/commentary",
            json={"kpi": "service_level_20s", "text": "x"},
            headers={"Authorization": f"Bearer {srv.keys.read}"},
        )
        assert refused.status_code == 403
        card_before = (await client.get(f"/api/v1/scorecards/{SLUG}/1999-08")).json()
        note = await client.post(
            f"/api/v1/days/{SLUG}/1999-08-10/commentary",
            json={"kpi": "service_level_20s", "text": "Two agents off sick on the morning shift"},
            headers=as_owner,
        )
        assert note.status_code == 201 and note.json()["author"] == "Orna Ops"
        day = (await client.get(f"/api/v1/days/{SLUG}/1999-08-10")).json()
        sl = [b for b in day["breaches"] if b["kpi"] == "service_level_20s"]
        assert sl and all(b["explained"] and b["explanation"][0]["author"] == "Orna Ops" for b in sl)
        assert "service_level_20s" not in day["needs_explanation"]
        card = (await client.get(f"/api/v1/scorecards/{SLUG}/1999-08")).json()
    for c in (card_before, card):
        rows = c["kpis"]
        by_kpi = {}
        for b in c["breaches"]:
            by_kpi.setdefault(b["kpi"], []).append(b)
        for r in rows:  # the figures shown are the figures ranked on
            why = r["agenda_why"]
            miss = abs(r["variance_to_target_ratio"]) if r["variance_to_target_ratio"] is not None else None
            assert why["miss_ratio"] == (pytest.approx(miss) if miss is not None else None)
            assert why["weighted_miss"] == pytest.approx(r["weight"] * (miss or 0))
            assert why["breaches"] == len(by_kpi.get(r["kpi"], []))
            assert why["breaches_unexplained"] == sum(1 for b in by_kpi.get(r["kpi"], []) if not b["explained"])
            assert why["text"].startswith(str(r["status"] or "no status").upper())
        rank = {"red": 0, "amber": 1, "green": 2}
        resorted = sorted(
            rows,
            key=lambda r: (
                rank.get(r["status"], 3),
                -r["agenda_why"]["weighted_miss"],
                -r["red_streak_months"],
                -r["agenda_why"]["breaches_unexplained"],
                r["kpi"],
            ),
        )
        assert c["agenda"] == [r["kpi"] for r in resorted]
    before = {r["kpi"]: r["agenda_why"] for r in card_before["kpis"]}
    after = {r["kpi"]: r["agenda_why"] for r in card["kpis"]}
    assert before["service_level_20s"]["breaches_unexplained"] == before["service_level_20s"]["breaches"] > 0
    assert after["service_level_20s"]["breaches_unexplained"] == 0
    assert (
        "not explained" in before["service_level_20s"]["text"]
        and "not explained" not in after["service_level_20s"]["text"]
    )
