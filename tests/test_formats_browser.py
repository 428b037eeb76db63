"""One formatting rule on every page (issue 9, item 5): a KPI in days reads the same on the wall,
the end-of-day page and the monthly scorecard.

The ITSM pack's MTTR (``mttr_s``, unit s) has a target of 259,200 s (3 days).  One incident
resolved in 259,200 s on 1999-08-02 makes the day's and the month's MTTR 259,200 s too.  Headless
Chromium (``/usr/bin/chromium``) then reads the live wall tile (``mttr_month``), the day page of
1999-08-02 and the scorecard of August 1999, and every one must show "3.0 d" against
"≤ 3.0 d" (the wall used to say "72:00:00 h" and "target ≤ 72:00:00 min").  The clock is a
``ManualClock``: 3 August while the wall shows August live, 1 September when the day and the
month are cut.  SQLite only: the pages do not care which store is behind the server.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.clock import ManualClock
from tests.conftest import keyed_client
from tests.test_pages_browser import CHROMIUM, READY_CARD, READY_DAY, _playwright, fmt

pytestmark = pytest.mark.browser

SLUG = "itsm"
SOURCE = "itsm-incident-log"
THREE_DAYS_S = 259_200
DIMS = {"priority": "3 - Moderate", "incident": "INC0000001", "made_sla": True}
EVENTS = [
    {
        "id": "INC0000001:opened",
        "source": SOURCE,
        "type": "incident.opened",
        "ts": "1999-07-30T10:00:00Z",
        "dims": DIMS,
    },
    {
        "id": "INC0000001:resolved",
        "source": SOURCE,
        "type": "incident.resolved",
        "ts": "1999-08-02T10:00:00Z",
        "value": THREE_DAYS_S,
        "dims": DIMS,
    },
]

TILE_JS = """id => { const t = document.querySelector(`[data-tile-id="${id}"]`);
    return t && [t.querySelector('.value .num').textContent, t.querySelector('.value .unit').textContent,
                 t.querySelector('.target').textContent]; }"""
ROW_JS = """sel => { const r = document.querySelector(sel);
    return [r.querySelector('.value-cell .v').textContent,
            (r.querySelector('.value-cell .unit') || {textContent: ''}).textContent,
            r.querySelector('td.target').textContent.trim()]; }"""


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_a_kpi_in_days_reads_the_same_on_the_wall_the_day_page_and_the_scorecard(make_settings, start_server):
    async_playwright = _playwright()
    clock = ManualClock(datetime(1999, 8, 3, 12, 0, tzinfo=UTC))
    srv = await start_server(make_settings(tz="UTC"), clock=clock)
    async with keyed_client(srv, timeout=30) as client:
        posted = await client.post("/api/v1/events", json=EVENTS)
        assert posted.status_code == 202 and posted.json()["accepted"] == 2, posted.text
        live = (await client.get(f"/api/v1/dashboards/{SLUG}")).json()["tiles"]
    assert live["mttr_month"]["value"] == THREE_DAYS_S and live["mttr_month"]["target"] == THREE_DAYS_S
    p90 = live["mttr_p90_month"]["value"]  # a sketch quantile (within 1 %): whatever it is, the same text everywhere
    p90_text = fmt(p90, "s")
    assert p90_text[1] == "d"

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            context = await browser.new_context(viewport={"width": 1920, "height": 1080})
            await context.add_cookies([{"name": "pb_key", "value": srv.keys.admin, "url": srv.url}])
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            def on_console(message) -> None:  # a refused (module) script shows up here, not as a page error
                if "Content Security Policy" in message.text:
                    errors.append(message.text)

            page.on("console", on_console)

            # The live wall: the month's MTTR tile, in days, its target in days.
            await page.goto(f"{srv.url}/wall/{SLUG}")
            await page.wait_for_function(
                "() => document.body.dataset.epoch && document.querySelector('[data-tile-id=\"mttr_month\"] .num')"
                ".textContent !== '—'",
                timeout=15_000,
            )
            wall = await page.evaluate(TILE_JS, "mttr_month")
            wall_p90 = await page.evaluate(TILE_JS, "mttr_p90_month")
            assert wall == ["3.0", "d", "target ≤ 3.0 d"]
            assert wall_p90 == [*p90_text, "target ≤ 10.0 d"]

            # 1 September: the day and the month are closed and cut, then read on their pages.
            clock.set(datetime(1999, 9, 1, 1, 0, tzinfo=UTC))
            async with keyed_client(srv, timeout=60) as client:
                for grain, period in (("day", "1999-08-02"), ("month", "1999-08")):
                    cut = await client.post(f"/api/v1/snapshots/{SLUG}/cut", json={"grain": grain, "period": period})
                    assert cut.status_code == 201, cut.text
                snap = (await client.get(f"/api/v1/snapshots/{SLUG}/day/1999-08-02")).json()
                card = (await client.get(f"/api/v1/scorecards/{SLUG}/1999-08")).json()
            assert snap["kpis"]["mttr_s"]["value"] == THREE_DAYS_S
            assert snap["kpis"]["mttr_p90_s"]["value"] == p90
            card_kpis = {k["kpi"]: k for k in card["kpis"]}
            assert card_kpis["mttr_s"]["value"] == THREE_DAYS_S and card_kpis["mttr_p90_s"]["value"] == p90

            await page.goto(f"{srv.url}/day/{SLUG}/1999-08-02")
            await page.wait_for_function(READY_DAY, timeout=20_000)
            day = await page.evaluate(ROW_JS, "#kpis tr[data-kpi=mttr_s]")
            day_p90 = await page.evaluate(ROW_JS, "#kpis tr[data-kpi=mttr_p90_s]")
            assert day == ["3.0", "d", "≤ 3.0 d"]
            assert day_p90 == [*p90_text, "≤ 10.0 d"]

            await page.goto(f"{srv.url}/scorecard/{SLUG}/1999-08")
            await page.wait_for_function(READY_CARD, timeout=20_000)
            scorecard = await page.evaluate(ROW_JS, "#kpi-mttr_s")
            scorecard_p90 = await page.evaluate(ROW_JS, "#kpi-mttr_p90_s")
            assert scorecard == ["3.0", "d", "≤ 3.0 d"]
            assert scorecard_p90 == [*p90_text, "≤ 10.0 d"]

            # The same words on all three: the wall's target is the pages' target after "target ".
            assert wall[:2] == day[:2] == scorecard[:2] and wall[2] == "target " + day[2] == "target " + scorecard[2]
            assert errors == [], f"page errors: {errors}"
        finally:
            await browser.close()
