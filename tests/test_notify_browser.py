"""The admin page of notifications in headless Chromium: sign in, see a delivery that gave up,
retry it by hand, see it sent (real webhook receiver on 127.0.0.1)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.clock import ManualClock
from tests.conftest import ARTIFACTS, IN_CI
from tests.helpers import PACKS_DIR, sample
from tests.notify_common import SECRET, WebhookSink, write_yaml

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
HAS_CHROMIUM = CHROMIUM.exists()
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


async def test_admin_page_shows_a_dead_delivery_and_retries_it(make_settings, start_server, tmp_path):
    if not HAS_CHROMIUM:
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is required in CI")
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.async_api import async_playwright

    hook = WebhookSink(answers=[410]).start()  # the first try is refused for good
    try:
        notify = write_yaml(
            tmp_path / "notify.yaml",
            f"""
contacts:
  Ops manager: {{webhook: {hook.url}/ops}}
alerts:
  - {{id: mean-high, kpi: sample_mean, window: 15m, when: above, threshold: 20}}
""",
        )
        settings = make_settings(packs_dir=PACKS_DIR, notify_file=notify, webhook_secret=SECRET, notify_enabled=False)
        srv = await start_server(settings, clock=ManualClock(NOW))
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
            r = await c.post("/api/v1/events", json=[sample(NOW.isoformat(), 30)], headers=srv.auth("ingest"))
            assert r.status_code == 202, r.text
            unsigned = await c.get("/admin/notifications")
            assert unsigned.status_code == 401  # an API client without a key: no redirect
        assert [m.kind for m in await srv.runtime.notifier.evaluate_alerts()] == ["alert"]

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
            )
            try:
                page = await browser.new_page()
                await page.goto(f"{srv.url}/admin/notifications")
                await page.wait_for_url("**/login?next=*", timeout=10_000)
                await page.fill("#key", srv.keys.admin)
                await page.click("button[type=submit]")
                await page.wait_for_function("() => location.pathname === '/admin/notifications'", timeout=10_000)
                assert "1 deliveries shown, 1 failed or given up" in await page.text_content("#summary")
                row = page.locator("#deliveries tbody tr")
                assert await row.count() == 1
                assert await row.get_attribute("class") == "dead"
                cells = await row.locator("td").all_text_contents()
                assert cells[:5] == ["dead", "alert", "mean-high", "webhook", f"{hook.url}/ops"]
                assert "answered 410" in cells[8]
                assert await page.text_content("#rules tbody tr td:nth-child(4)") == "firing"
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "admin-notifications-dead.png"), full_page=True)
                async with page.expect_navigation(timeout=20_000) as nav:
                    await page.click("#deliveries button")  # "Retry now": a same-origin form post, then 303
                response = await nav.value
                assert response is not None and response.status == 200 and response.url.endswith("/admin/notifications")
                assert await page.locator("#deliveries tbody tr.sent").count() == 1
                assert "1 deliveries shown, 0 failed or given up" in await page.text_content("#summary")
            finally:
                await browser.close()
        received = hook.received()
        assert len(received) == 2 and all(h.signature_ok for h in received)
        assert received[0].headers["webhook-id"] == received[1].headers["webhook-id"]
    finally:
        hook.stop()
