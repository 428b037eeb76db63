"""A manager goes from a red tile on the wall to the owner's explanation on the scorecard (issue 14,
"Done when"), in headless Chromium, with the real morning of 1999-08-10: the service-level tile is
red, its "Why?" link opens the August scorecard at that KPI, where the owner's note on the day's
breach shows with the owner's name; the day page lists the breach with the same explanation and the
drill-down link of the day's abandoned calls."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from app.clock import ManualClock
from app.metrics.calendar import to_us
from tests.loop_data import SLUG, ZONE, events_of
from tests.test_pages_browser import CHROMIUM, _playwright

pytestmark = pytest.mark.browser
NOON = datetime(1999, 8, 10, 12, 0, tzinfo=ZONE)
NOTE = "Two agents off sick on the morning shift; cover booked from 13:00"


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_manager_goes_from_a_red_tile_to_the_owners_explanation(make_settings, start_server, client_for):
    async_playwright = _playwright()
    clock = ManualClock(NOON)
    srv = await start_server(make_settings(tz="Asia/Jerusalem"), clock=clock)
    owner_key, _ = await srv.runtime.keys.create("comment", "ops", 0, holder="Orna Ops")
    manager_key, _ = await srv.runtime.keys.create("read", "manager", 0, holder="Mira Manager")
    morning = [e for e in events_of({date(1999, 8, 10)}) if e["ts"] <= NOON.isoformat()]
    async with client_for(srv) as client:
        for i in range(0, len(morning), 2000):
            assert (await client.post("/api/v1/events", json=morning[i : i + 2000])).status_code == 202
        await srv.runtime.hub.refresh(srv.runtime.hub.channels[SLUG])  # the wall sees the red spell
        await srv.runtime.snapshots.run_due(to_us(datetime(1999, 9, 1, 0, 20, tzinfo=ZONE)))  # August is cut
        tile = (await client.get(f"/api/v1/dashboards/{SLUG}")).json()["tiles"]["sl20_today"]
        assert tile["status"] == "red"
        note = await client.post(
            f"/api/v1/days/{SLUG}/1999-08-10/commentary",
            json={"kpi": "service_level_20s", "text": NOTE},
            headers={"Authorization": f"Bearer {owner_key}"},
        )
        assert note.status_code == 201
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            context = await browser.new_context(viewport={"width": 1600, "height": 1000})
            signed = await context.request.post(f"{srv.url}/api/v1/session", data={"key": manager_key})
            assert signed.ok
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{srv.url}/wall/{SLUG}")
            red = page.locator('[data-tile-id="sl20_today"][data-status="red"]')
            await red.wait_for(timeout=20_000)
            why = red.locator("a.why")
            await why.wait_for(state="visible", timeout=20_000)
            await why.click()
            await page.wait_for_url(f"**/scorecard/{SLUG}/1999-08#kpi-service_level_20s", timeout=20_000)
            await page.wait_for_function("() => document.body.dataset.state === 'ready'", timeout=20_000)
            row = page.locator("#kpi-service_level_20s")
            explained = row.locator('li.explanation[data-explained="true"][data-day="1999-08-10"]')
            await explained.first.wait_for(timeout=20_000)
            text = await explained.first.text_content()
            assert NOTE in text and "Orna Ops" in text
            assert (await row.locator(".agenda-why").text_content()).startswith("RED")
            # The explanation's link leads to the day page's breach, with the same note.
            await explained.first.locator("a.breach-when").click()
            await page.wait_for_url(f"**/day/{SLUG}/1999-08-10#breach-*", timeout=20_000)
            await page.wait_for_function("() => document.body.dataset.breaches === 'ready'", timeout=20_000)
            rows = page.locator('#breach-table tr.breach[data-kpi="service_level_20s"]')
            assert await rows.count() >= 1
            assert NOTE in await rows.first.text_content()
            drill = page.locator('#kpis tr[data-kpi="abandoned"] a.drill')
            href = await drill.get_attribute("href")
            assert href.startswith("/api/v1/kpis/abandoned/events?start=1999-08-10T00%3A00%3A00%2B03%3A00")
            resp = await context.request.get(f"{srv.url}{href}")
            assert resp.ok and resp.headers["content-type"].startswith("text/csv")
            lines = (await resp.text()).strip().splitlines()
            day = await (await context.request.get(f"{srv.url}/api/v1/snapshots/{SLUG}/day/1999-08-10")).json()
            assert len(lines) - 1 == day["kpis"]["abandoned"]["value"] > 0  # the day's abandoned calls, one row each
            assert errors == []
        finally:
            await browser.close()
