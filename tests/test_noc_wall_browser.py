"""The NOC wall and the playlist in a real browser (issue 13, items 4-6).

Headless Chromium (Playwright, ``/usr/bin/chromium``) on a real server (event-time clock, the
``noc`` pack) while a busy afternoon of the real PCIC 2021 alarms (``data/noc-alarms/``,
2021-05-11 12:00-15:00 at the documented origin) is posted through the HTTP API:

1. ``/wall/noc``: the alarm list changes as alarms raise and clear, an alarm's age ticks, the
   severity tiles carry shape + word, the page fits 1920×1080 and 3840×2160 without scrolling
   (screenshots ``test-artifacts/noc-wall.png``, ``noc-wall-4k.png``); then the feed stops while
   the socket stays up and, once the wall clock (the injectable ``ManualClock``) passes the
   dashboard's ``every_s`` (300 s), every tile says STALE "no events from any source since
   hh:mm" (hh:mm = the event clock at the last arrival) and the banner says FEED SILENT
   (``noc-wall-feed-silent.png``); at 299 s it does not.
2. ``/wall/playlist/noc-rotation?interval_s=2``: the wall rotates noc -> noc?service=Git
   Operations -> contact-centre -> noc on ONE WebSocket (connections counted by the page's
   own WebSocket events), with subscribe/unsubscribe frames on it.

SQLite only: the page does not care which store is behind the server (the store suites run on both).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.clock import ManualClock
from app.replay.pcic import map_file
from tests.conftest import keyed_client
from tests.helpers import wait_until

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = Path("/usr/bin/chromium")
PCIC = Path(__file__).resolve().parents[1] / "data" / "noc-alarms" / "pcic2021-wireless-alarms.csv.gz"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
REPLAY_FROM = datetime(2021, 5, 11, 12, 0, tzinfo=UTC)
REPLAY_TO = datetime(2021, 5, 11, 15, 0, tzinfo=UTC)
SLICE = timedelta(minutes=3)
PAUSE_S = 0.05
STEPS = 8  # the wall is checked against the server after each step
FEED_EVERY_S = 300  # the noc dashboard's feeds: [{every_s: 300}]

pytestmark = pytest.mark.browser


def _require(ok: bool, why: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{why} (required in CI)")
        pytest.skip(why)


def _playwright():
    _require(CHROMIUM.exists(), f"{CHROMIUM} is missing")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _require(False, "playwright is not installed")
    return async_playwright


async def _launch(pw):
    return await pw.chromium.launch(
        executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    )


def _batches() -> list[list[dict]]:
    """The afternoon's events in time order, one batch per ``SLICE`` of event time."""
    events, _ = map_file(PCIC)
    events = sorted((e for e in events if REPLAY_FROM <= e["ts"] < REPLAY_TO), key=lambda e: (e["ts"], e["id"]))
    out: list[list[dict]] = []
    end = REPLAY_FROM + SLICE
    current: list[dict] = []
    for ev in events:
        while ev["ts"] >= end:
            out.append(current)
            current = []
            end += SLICE
        current.append({**ev, "ts": ev["ts"].isoformat()})
    out.append(current)
    return [b for b in out if b]


async def _post(srv, batches: list[list[dict]]) -> int:
    posted = 0
    async with keyed_client(srv, timeout=30) as client:
        for batch in batches:
            resp = await client.post("/api/v1/events", json=batch)
            assert resp.status_code == 202, resp.text
            posted += resp.json()["accepted"]
            await asyncio.sleep(PAUSE_S)
    return posted


FITS_JS = """() => {
    const root = document.documentElement;
    const over = [...document.querySelectorAll('[data-tile-id]')].filter(t => {
        const v = t.querySelector('.value'), r = t.getBoundingClientRect(), b = v.getBoundingClientRect();
        return v.scrollWidth > v.clientWidth + 1 || b.right > r.right + 1 || b.bottom > r.bottom + 1;
    }).map(t => t.dataset.tileId);
    const rows = [...document.querySelectorAll('[data-tile-id="alarm_list"] .alarm:not([hidden])')].filter(a => {
        const r = a.getBoundingClientRect(), t = a.closest('.tile').getBoundingClientRect();
        return r.bottom > t.bottom + 1 || r.height < 12;
    }).length;
    return {scrollHeight: root.scrollHeight, innerHeight: window.innerHeight, scrollWidth: root.scrollWidth,
            innerWidth: window.innerWidth, overflowing: over, rowsCut: rows};
}"""
ROWS_JS = """() => [...document.querySelectorAll('[data-tile-id="alarm_list"] .alarm')].map(a => ({
    alarm: a.dataset.alarm, age: a.querySelector('.a-age').textContent, sev: a.querySelector('.a-sev').textContent,
    what: a.querySelector('.a-what').textContent, ack: a.querySelector('.a-ack').textContent}))"""


def _assert_fits(metrics: dict, label: str) -> None:
    assert metrics["scrollHeight"] <= metrics["innerHeight"], f"vertical scrollbar at {label}: {metrics}"
    assert metrics["scrollWidth"] <= metrics["innerWidth"], f"horizontal scrollbar at {label}: {metrics}"
    assert metrics["overflowing"] == [], f"tile values overflow at {label}: {metrics}"
    assert metrics["rowsCut"] == 0, f"alarm rows cut off or too small at {label}: {metrics}"


def _age_s(text: str) -> float:
    """Seconds of an age in the common format ("42 s", "4:05 min", "2:03:00 h", "3.0 d")."""
    num, _, unit = text.replace("\u202f", " ").partition(" ")
    parts = [float(p) for p in num.split(":")]
    if unit == "d":
        return parts[0] * 86400
    total = 0.0
    for p in parts:
        total = total * 60 + p
    return total * (60 if unit == "min" and len(parts) == 1 else 1)


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_noc_wall_alarm_list_ages_and_feed_silence(make_settings, start_server):
    async_playwright = _playwright()
    _require(PCIC.exists(), f"real data file {PCIC} is missing")
    batches = _batches()
    assert sum(map(len, batches)) > 400, "the replay window should hold a busy afternoon"
    wall_clock = ManualClock(datetime.now(UTC))
    srv = await start_server(
        make_settings(clock="event", tz="UTC", heartbeat_interval_s=1, tile_interval_ms=200), clock=wall_clock
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await _launch(pw)
        try:
            context = await browser.new_context(viewport={"width": 1920, "height": 1080})
            await context.add_cookies([{"name": "pb_key", "value": srv.keys.read, "url": srv.url}])
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{srv.url}/wall/noc")
            await page.wait_for_function("() => document.body.dataset.epoch", timeout=15_000)
            # The afternoon in STEPS posts; after each, the wall shows that instant's open alarms
            # exactly as the server lists them (REST, same instant): the list follows raises and clears.
            shown: list[list[str]] = []
            posted = 0
            per_step = -(-len(batches) // STEPS)
            for i in range(0, len(batches), per_step):
                step = batches[i : i + per_step]
                posted += await _post(srv, step)
                at = max(datetime.fromisoformat(e["ts"]) for b in step for e in b)
                await page.wait_for_function(
                    "want => Date.parse(window.pulseboardWall.state.asOf) >= Date.parse(want)",
                    arg=at.isoformat(),
                    timeout=60_000,
                )
                async with keyed_client(srv) as client:
                    want = (await client.get("/api/v1/dashboards/noc")).json()["tiles"]["alarm_list"]
                keys = [a["alarm"] for a in want["alarms"]]
                await page.wait_for_function(
                    "keys => [...document.querySelectorAll('[data-tile-id=\"alarm_list\"] .alarm')]"
                    ".map(a => a.dataset.alarm).join() === keys.join()",
                    arg=keys,
                    timeout=60_000,
                )
                shown.append(keys)
            assert posted == sum(map(len, batches))
            assert len({tuple(k) for k in shown if k}) >= 3, f"the alarm list should change over the afternoon: {shown}"
            # Rows name the device, the type, a severity shape + word (none in this data), the ack state.
            rows = await page.evaluate(ROWS_JS)
            assert rows and all(r["what"] and r["sev"] == "·NO SEVERITY" and r["ack"] == "✖ NOT ACK" for r in rows)

            # An alarm's age ticks with the clock: one more event 10 minutes later (event time)
            # makes every listed alarm that is still open exactly 600 s older.
            last_event = max(datetime.fromisoformat(e["ts"]) for b in batches for e in b)
            await page.wait_for_function(
                "want => document.body.dataset.seq && window.pulseboardWall.state.asOf"
                " && Date.parse(window.pulseboardWall.state.asOf) === Date.parse(want)",
                arg=last_event.isoformat(),
                timeout=15_000,
            )
            await page.wait_for_timeout(1200)  # the page's 1 s age tick has run at this clock
            before = {r["alarm"]: _age_s(r["age"]) for r in await page.evaluate(ROWS_JS)}
            assert before, "no open alarm listed at the end of the afternoon"
            last_event += timedelta(minutes=10)
            tick = {"id": "wall-test:raised", "source": "pcic2021", "type": "alarm.raised", "ts": last_event.isoformat(),
                    "dims": {"alarm": "wall-test", "device": "wall-test", "type": "tick"}}  # fmt: skip
            async with keyed_client(srv) as client:
                resp = await client.post("/api/v1/events", json=[tick])
                assert resp.status_code == 202, resp.text

            async def aged() -> dict[str, float] | None:
                now = {r["alarm"]: _age_s(r["age"]) for r in await page.evaluate(ROWS_JS)}
                grown = {k: now[k] - before[k] for k in now if k in before}
                return grown if grown and all(d == 600 for d in grown.values()) else None

            grown = await wait_until(aged, 15, what="the listed alarms' ages to grow by 600 s")
            assert len(grown) >= 1

            # The wall agrees with the REST read of the same dashboard once the feed is done.
            async with keyed_client(srv) as client:
                dash = (await client.get("/api/v1/dashboards/noc")).json()
            want = dash["tiles"]["alarm_list"]
            await page.wait_for_function(
                "keys => [...document.querySelectorAll('[data-tile-id=\"alarm_list\"] .alarm')]"
                ".map(a => a.dataset.alarm).join() === keys.join()",
                arg=[a["alarm"] for a in want["alarms"]],
                timeout=15_000,
            )
            assert want["value"] == dash["tiles"]["open_now"]["value"]
            # Severity tiles: shape + word, not colour alone.
            badge = await page.text_content('[data-tile-id="open_critical_now"] .badge')
            assert badge == "◆CRITICAL"
            assert await page.get_attribute('[data-tile-id="open_major_now"]', "class") is not None
            assert all(t["feed"] is None for t in dash["tiles"].values())

            _assert_fits(await page.evaluate(FITS_JS), "1920x1080")
            await page.screenshot(path=str(ARTIFACTS / "noc-wall.png"))
            await page.set_viewport_size({"width": 3840, "height": 2160})
            await page.wait_for_timeout(600)
            _assert_fits(await page.evaluate(FITS_JS), "3840x2160")
            await page.screenshot(path=str(ARTIFACTS / "noc-wall-4k.png"))
            await page.set_viewport_size({"width": 1920, "height": 1080})

            # Feed silence: no events for 299 s of wall time -> still fine; 301 s -> STALE, loudly.
            wall_clock.set(wall_clock.now() + timedelta(seconds=FEED_EVERY_S - 1))
            await asyncio.sleep(2.5)  # a few refreshes (time_refresh 1 s) and heartbeats
            assert await page.locator('[data-feed="silent"]').count() == 0
            assert not await page.locator("#feed-banner").is_visible()
            wall_clock.set(wall_clock.now() + timedelta(seconds=2))
            await page.wait_for_function(
                "n => document.querySelectorAll('[data-feed=\"silent\"]').length === n",
                arg=len(dash["tile_order"]),
                timeout=10_000,
            )
            text = await page.text_content('[data-tile-id="mttr_today"] .feed')
            assert text == f"STALE · no events from any source since {last_event:%H:%M}"
            assert await page.locator("#feed-banner").is_visible()
            assert await page.text_content("#feed-text") == f"no events from any source since {last_event:%H:%M}"
            assert await page.text_content("#conn-text") == "LIVE"  # the socket is fine: it is the feed
            assert not await page.locator("#stale").is_visible()
            await page.screenshot(path=str(ARTIFACTS / "noc-wall-feed-silent.png"))

            # Events again: the tiles recover.
            async with keyed_client(srv) as client:
                resp = await client.post("/api/v1/events", json=[{**batches[-1][-1], "id": "again:raised"}])
                assert resp.status_code == 202, resp.text
            await page.wait_for_function(
                "() => document.querySelectorAll('[data-feed=\"silent\"]').length === 0", timeout=10_000
            )
            assert errors == []
        finally:
            await browser.close()


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_playlist_rotates_on_one_websocket(make_settings, start_server):
    async_playwright = _playwright()
    srv = await start_server(make_settings(clock="event", tz="UTC", heartbeat_interval_s=1, tile_interval_ms=200))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await _launch(pw)
        try:
            context = await browser.new_context(viewport={"width": 1920, "height": 1080})
            await context.add_cookies([{"name": "pb_key", "value": srv.keys.read, "url": srv.url}])
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            sockets: list[str] = []
            sent: list[str] = []

            def opened(ws) -> None:
                sockets.append(ws.url)
                ws.on("framesent", lambda payload: sent.append(payload if isinstance(payload, str) else ""))

            page.on("websocket", opened)
            await page.goto(f"{srv.url}/wall/playlist/noc-rotation?interval_s=4")
            views = ["noc", "noc?service=Git Operations", "contact-centre", "noc"]
            await page.wait_for_function("() => window.pulseboardWall.state.snapshots.length >= 4", timeout=90_000)
            state = await page.evaluate("() => window.pulseboardWall.state")
            assert state["shown"][:4] == views, state["shown"]
            assert state["snapshots"][:4] == views, state["snapshots"]  # each view's own snapshot, in turn
            await page.wait_for_function(
                "() => document.body.dataset.view === 'contact-centre'"
                " && document.querySelector('[data-tile-id=\"sl20_today\"]')",
                timeout=30_000,
            )
            assert await page.text_content("#title") == "Contact centre"
            assert sockets == [f"{srv.url.replace('http', 'ws')}/ws/screens"], sockets  # one socket, never reconnected
            assert await page.get_attribute("body", "data-connections") == "1"
            subs = [s for s in sent if '"subscribe"' in s]
            unsubs = [s for s in sent if '"unsubscribe"' in s]
            assert len(subs) >= 4 and len(unsubs) >= 3, sent
            assert await page.evaluate("() => document.body.classList.contains('kiosk')")
            cursor = await page.evaluate("() => getComputedStyle(document.querySelector('.tile')).cursor")
            assert cursor == "none"
            await page.screenshot(path=str(ARTIFACTS / "playlist.png"))

            # One dashboard definition, narrowed by a parameter on the single-dashboard wall.
            queue = await context.new_page()
            queue.on("pageerror", lambda exc: errors.append(str(exc)))
            queue.on("websocket", opened)
            await queue.goto(f"{srv.url}/wall/contact-centre?queue=PS")
            await queue.wait_for_function(
                "() => document.body.dataset.epoch && document.querySelector('[data-tile-id=\"offered_today\"]')",
                timeout=30_000,
            )
            assert await queue.text_content("#title") == "Contact centre · queue PS"
            assert "queue=PS" in sockets[-1] and sockets[-1].startswith(
                f"{srv.url.replace('http', 'ws')}/ws/dashboards/"
            )
            assert errors == []
        finally:
            await browser.close()
