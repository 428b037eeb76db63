"""The home page ``/`` and its read ``GET /api/v1/home`` (issue 9, item 0: what a newcomer meets).

- The API: every dashboard with its zone, today's date and this month there (by the server's view
  clock), and the paths of its wall, today's end-of-day page and this month's scorecard; read or
  admin keys only.  At 22:30 UTC on 30 June 2024 it is already 1 July in Asia/Jerusalem (the
  business zone here) but still 30 June on the ``itsm`` dashboard (its own zone, UTC).  In
  event-time mode "today" is the newest event's day.
- The page, in headless Chromium (``/usr/bin/chromium``): signed out it shows the sign-in link
  (no redirect); signing in at ``/login`` lands on ``/`` and lists the dashboards with those
  links, which open their pages; an admin also gets the pairing page; ``next=`` pointing off the
  site lands on ``/``; a wall screen's display key is told it cannot list; signing out shows the
  sign-in link again.  No inline script, and the CSP allows the page's module scripts.
  Screenshot: ``test-artifacts/home.png``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
import pytest

from app.clock import ManualClock
from tests.conftest import keyed_client
from tests.helpers import PACKS_DIR
from tests.test_pages_browser import ARTIFACTS, CHROMIUM, _playwright

NOW = datetime(2024, 6, 30, 22, 30, tzinfo=UTC)
# slug -> (title, zone, today, month) at NOW: the business zone is Asia/Jerusalem (UTC+3 in summer).
EXPECTED = {
    "contact-centre": ("Contact centre", "Asia/Jerusalem", "2024-07-01", "2024-07"),
    "itsm": ("IT service desk", "UTC", "2024-06-30", "2024-06"),
    "noc": ("Network operations", "Asia/Jerusalem", "2024-07-01", "2024-07"),
    "generic-wall": ("Generic test wall", "Asia/Jerusalem", "2024-07-01", "2024-07"),
}


def _links(slug: str, today: str, month: str) -> dict[str, str]:
    return {"wall": f"/wall/{slug}", "day": f"/day/{slug}/{today}", "scorecard": f"/scorecard/{slug}/{month}"}


@pytest.fixture
async def home_server(make_settings, start_server):
    return await start_server(make_settings(tz="Asia/Jerusalem", packs_dir=PACKS_DIR), clock=ManualClock(NOW))


async def test_home_api_lists_dashboards_with_today_and_month_in_their_zones(home_server):
    srv = home_server
    async with keyed_client(srv) as client:
        resp = await client.get("/api/v1/home")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["as_of"] == NOW.isoformat() and body["clock"] == "wall"
    got = {d["slug"]: d for d in body["dashboards"]}
    assert set(got) == set(EXPECTED)
    for slug, (title, tz, today, month) in EXPECTED.items():
        pack = "generic" if slug == "generic-wall" else slug
        assert got[slug] == {
            "slug": slug,
            "title": title,
            "pack": pack,
            "tz": tz,
            "today": today,
            "month": month,
            "links": _links(slug, today, month),
        }


async def test_home_api_needs_a_read_or_admin_key(home_server):
    srv = home_server
    keys = srv.keys
    answers = {}
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
        for name, key in (
            ("none", None),
            ("read", keys.read),
            ("admin", keys.admin),
            ("ingest", keys.ingest["default"]),
            ("display", keys.display["itsm"]),
        ):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            answers[name] = (await client.get("/api/v1/home", headers=headers)).status_code
    assert answers == {"none": 401, "read": 200, "admin": 200, "ingest": 403, "display": 403}


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_home_api_today_follows_the_event_clock(make_settings, start_server):
    srv = await start_server(make_settings(tz="Asia/Jerusalem", clock="event"))
    event = {"type": "call.queued", "ts": "1999-08-02T21:30:00Z", "source": "anonymous-bank", "dims": {"call": "1"}}
    async with keyed_client(srv) as client:
        assert (await client.post("/api/v1/events", json=event)).status_code == 202
        body = (await client.get("/api/v1/home")).json()
    got = {d["slug"]: (d["today"], d["links"]["day"]) for d in body["dashboards"]}
    assert body["clock"] == "event" and body["as_of"] == "1999-08-02T21:30:00+00:00"
    assert got == {  # 00:30 on 3 August in Jerusalem, 21:30 on 2 August in UTC
        "contact-centre": ("1999-08-03", "/day/contact-centre/1999-08-03"),
        "itsm": ("1999-08-02", "/day/itsm/1999-08-02"),
        "noc": ("1999-08-03", "/day/noc/1999-08-03"),  # the business zone (no tz of its own)
    }


async def test_home_page_is_static_html_with_module_scripts_only(home_server):
    async with httpx.AsyncClient(base_url=home_server.url, timeout=30) as client:
        resp = await client.get("/")
        script = await client.get("/static/home/home.js")
        common = await client.get("/static/common/common.js")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", resp.text, flags=re.S | re.I)
    assert scripts == [(' type="module" src="/static/home/home.js"', "")]
    assert not re.search(r"\son[a-z]+\s*=", resp.text, flags=re.I)
    csp = dict(part.strip().split(" ", 1) for part in resp.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'"
    for js in (script, common):  # a module script needs a JavaScript MIME type (nosniff is on)
        assert js.status_code == 200 and re.match(r"(text|application)/javascript", js.headers["content-type"])
        assert js.headers["x-content-type-options"] == "nosniff"


async def _rows(page) -> list[dict]:
    return await page.eval_on_selector_all(
        "#dashboards tbody tr[data-slug]",
        """rows => rows.map(r => ({slug: r.dataset.slug, title: r.querySelector('.kpi-title').textContent,
            tz: r.children[1].textContent, wall: r.querySelector('a.wall-link').getAttribute('href'),
            day: r.querySelector('a.day-link').getAttribute('href'), day_text: r.querySelector('a.day-link').textContent,
            scorecard: r.querySelector('a.scorecard-link').getAttribute('href'),
            scorecard_text: r.querySelector('a.scorecard-link').textContent}))""",
    )


@pytest.mark.browser
@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_home_page_signed_out_sign_in_lands_on_the_list(home_server):
    srv = home_server
    async_playwright = _playwright()
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("read")) as client:
        order = [d["slug"] for d in (await client.get("/api/v1/home")).json()["dashboards"]]
    assert sorted(order) == sorted(EXPECTED)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            def on_console(message) -> None:  # a refused (module) script shows up here, not as a page error
                if "Content Security Policy" in message.text:
                    errors.append(message.text)

            page.on("console", on_console)

            # Signed out: the page stays on / and offers the sign-in link.
            await page.goto(f"{srv.url}/")
            await page.wait_for_function("() => document.body.dataset.state === 'signed-out'", timeout=10_000)
            assert page.url == f"{srv.url}/"
            assert await page.locator("#signed-out").is_visible()
            assert not await page.locator("#content").is_visible()
            assert await page.get_attribute("#sign-in-main", "href") == "/login"
            assert not await page.locator("#sign-out").is_visible()

            # Sign in with a read key at /login: back on /, the list.
            await page.click("#sign-in-main")
            await page.wait_for_url(f"{srv.url}/login", timeout=10_000)
            await page.fill("#key", srv.keys.read)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{srv.url}/", timeout=10_000)
            await page.wait_for_function("() => document.body.dataset.state === 'ready'", timeout=10_000)
            assert await page.evaluate("() => document.cookie") == ""  # the key is HttpOnly
            rows = await _rows(page)
            assert [r["slug"] for r in rows] == order
            for r in rows:
                title, tz, today, month = EXPECTED[r["slug"]]
                assert (r["title"], r["tz"]) == (title, tz)
                assert {k: r[k] for k in ("wall", "day", "scorecard")} == _links(r["slug"], today, month)
            texts = {r["slug"]: (r["day_text"], r["scorecard_text"]) for r in rows}
            assert re.fullmatch(r"Monday,? 1 July 2024", texts["contact-centre"][0]), texts
            assert re.fullmatch(r"Sunday,? 30 June 2024", texts["itsm"][0]), texts
            assert (texts["contact-centre"][1], texts["itsm"][1]) == ("July 2024", "June 2024")
            assert "(read key)" in await page.text_content("#who")
            assert not await page.locator("#pairings-link").is_visible()  # only admins approve screens
            assert "22:30 UTC" in await page.text_content("#as-of")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)

            # The links open their pages: today's end of day is not cut yet, and says so.
            await page.click("tr[data-slug=itsm] a.day-link")
            await page.wait_for_url(f"{srv.url}/day/itsm/2024-06-30", timeout=10_000)
            await page.wait_for_function("() => document.body.dataset.state === 'not-cut'", timeout=10_000)
            await page.go_back()
            await page.wait_for_function("() => document.body.dataset.state === 'ready'", timeout=10_000)
            await page.click("tr[data-slug=contact-centre] a.wall-link")
            await page.wait_for_url(f"{srv.url}/wall/contact-centre", timeout=10_000)
            await page.wait_for_function("() => document.body.dataset.epoch", timeout=10_000)  # live
            await page.goto(f"{srv.url}/")
            await page.wait_for_function("() => document.body.dataset.state === 'ready'", timeout=10_000)

            # Signing out: the sign-in link again, and the cookie is gone.
            await page.click("#sign-out")
            await page.wait_for_function("() => document.body.dataset.state === 'signed-out'", timeout=10_000)
            assert [c for c in await page.context.cookies() if c["name"] == "pb_key"] == []

            # An admin, with next= pointing off the site: lands on / (no open redirect), sees the pairing page.
            for evil in ("//evil.example/x", "/%5Cevil.example/x", "https://evil.example/"):
                await page.goto(f"{srv.url}/login?next={evil}")
                await page.fill("#key", srv.keys.admin)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{srv.url}/", timeout=10_000)
                await page.wait_for_function("() => document.body.dataset.state === 'ready'", timeout=10_000)
            assert await page.locator("#pairings-link").is_visible()
            assert "(admin key)" in await page.text_content("#who")

            # A wall screen's display key cannot list dashboards: it is told so, with the sign-in link.
            screen = await browser.new_context()
            await screen.add_cookies([{"name": "pb_key", "value": srv.keys.display["itsm"], "url": srv.url}])
            wall_page = await screen.new_page()
            wall_page.on("pageerror", lambda exc: errors.append(str(exc)))
            await wall_page.goto(f"{srv.url}/")
            await wall_page.wait_for_function("() => document.body.dataset.state === 'signed-out'", timeout=10_000)
            assert "display key" in await wall_page.text_content("#signed-out-text")
            assert await wall_page.locator("#sign-in-main").is_visible()
            assert errors == [], f"page errors: {errors}"
        finally:
            await browser.close()
