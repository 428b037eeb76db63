"""The wall page in a real browser (issue 2, item 7).

1. Headless Chromium (Playwright, ``/usr/bin/chromium``) opens
   ``/wall/contact-centre`` on a real server while the real Anonymous Bank log
   (the morning of 1999-08-02) is replayed into it through the HTTP API: the
   tiles must move, the page must fit 1920×1080 and 3840×2160 without
   scrolling, it must say STALE once the server is gone, and recover by itself
   when a server is back on the same address (same store: same numbers, new
   epoch).  Screenshots go to ``test-artifacts/`` (wall.png, wall-4k.png,
   wall-stale.png).  SQLite only: the page does not care which store is
   behind the server, and the store suites run on both.
2. The page's own logic against a scripted socket (no server): value and
   target formats, status shape + word, STALE on silence with the socket open,
   recovery on a heartbeat, and resume with ``?epoch=E&since=N`` after a drop.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import uvicorn

from app.main import create_app, uvicorn_options
from app.replay.anonymous_bank import ZONE, load_events, to_wire
from tests.conftest import keyed_client
from tests.helpers import AUGUST, wait_closed, wait_until

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = Path("/usr/bin/chromium")
DATA = AUGUST
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

REPLAY_FROM = datetime(1999, 8, 2, 7, 0, tzinfo=ZONE)
REPLAY_TO = datetime(1999, 8, 2, 12, 30, tzinfo=ZONE)
SLICE = timedelta(minutes=5)  # one batch per 5 minutes of event time ...
BATCH_MAX = 200  # ... of at most 200 events
PAUSE_S = 0.15  # between batches: about 11 s for the whole morning
STALE_AFTER_S = 3

pytestmark = pytest.mark.browser


def _require(ok: bool, why: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{why} (required in CI)")
        pytest.skip(why)


def _batches(events: list[dict]) -> list[list[dict]]:
    """Events of the replay window in time order, cut per ``SLICE`` of event time, at most ``BATCH_MAX`` each."""
    out: list[list[dict]] = []
    slice_end = REPLAY_FROM + SLICE
    current: list[dict] = []
    for ev in events:
        if ev["ts"] < REPLAY_FROM or ev["ts"] >= REPLAY_TO:
            continue
        while ev["ts"] >= slice_end:
            if current:
                out.append(current)
                current = []
            slice_end += SLICE
        current.append(to_wire(ev))
        if len(current) >= BATCH_MAX:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


async def _replay(srv, batches: list[list[dict]]) -> int:
    posted = 0
    async with keyed_client(srv, timeout=30) as client:
        for batch in batches:
            resp = await client.post("/api/v1/events", json=batch)
            assert resp.status_code == 202, resp.text
            posted += resp.json()["accepted"]
            await asyncio.sleep(PAUSE_S)  # pacing: a live feed, one batch per PAUSE_S
    return posted


VALUE_JS = 'id => document.querySelector(`[data-tile-id="${id}"] .value`).textContent'
FITS_JS = """() => {
    const root = document.documentElement;
    const over = [...document.querySelectorAll('[data-tile-id]')].filter(t => {
        const v = t.querySelector('.value'), r = t.getBoundingClientRect(), b = v.getBoundingClientRect();
        return v.scrollWidth > v.clientWidth + 1 || b.right > r.right + 1 || b.bottom > r.bottom + 1;
    }).map(t => t.dataset.tileId);
    return {scrollHeight: root.scrollHeight, innerHeight: window.innerHeight,
            scrollWidth: root.scrollWidth, innerWidth: window.innerWidth, overflowing: over};
}"""


def _assert_fits(metrics: dict, label: str) -> None:
    assert metrics["scrollHeight"] <= metrics["innerHeight"], f"vertical scrollbar at {label}: {metrics}"
    assert metrics["scrollWidth"] <= metrics["innerWidth"], f"horizontal scrollbar at {label}: {metrics}"
    assert metrics["overflowing"] == [], f"tile values overflow their tiles at {label}: {metrics}"


def _playwright():
    _require(CHROMIUM.exists(), f"{CHROMIUM} is missing")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _require(False, "playwright is not installed")
    return async_playwright


async def _launch(pw):
    return await pw.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_wall_moves_during_replay_and_shows_stale_when_server_stops(make_settings, start_server):
    async_playwright = _playwright()
    _require(DATA.exists(), f"real data file {DATA} is missing")

    batches = _batches(load_events(DATA))
    assert sum(map(len, batches)) > 1500, "the replay window should hold a busy morning"
    srv = await start_server(
        make_settings(clock="event", tz="Asia/Jerusalem", heartbeat_interval_s=1, tile_interval_ms=200)
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    replay: asyncio.Task | None = None
    restarted: tuple[uvicorn.Server, asyncio.Task] | None = None

    async with async_playwright() as pw:
        browser = await _launch(pw)
        try:
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # A new screen has no key: the wall sends it to pairing, shows a code, an admin approves
            # it, and the screen gets its display key as an HttpOnly cookie (no secret typed).
            await page.goto(f"{srv.url}/wall/contact-centre?stale_after_s={STALE_AFTER_S}")
            await page.wait_for_url("**/pair?dashboard=contact-centre", timeout=10_000)
            await page.wait_for_function("() => document.getElementById('code').textContent.length === 8")
            code = await page.text_content("#code")
            await page.screenshot(path=str(ARTIFACTS / "pair.png"))
            async with keyed_client(srv) as admin:
                approved = await admin.post(f"/api/v1/pairings/{code}/approve", json={"dashboard": "contact-centre"})
                assert approved.status_code == 200, approved.text
            await page.wait_for_url("**/wall/contact-centre", timeout=10_000)
            cookies = {c["name"]: c for c in await page.context.cookies()}
            assert cookies["pb_key"]["httpOnly"] and cookies["pb_key"]["value"].startswith("pbd_")
            assert await page.evaluate("() => document.cookie") == ""  # scripts cannot read the key
            await page.goto(f"{srv.url}/wall/contact-centre?stale_after_s={STALE_AFTER_S}")

            # The snapshot renders every tile of the dashboard, in the dashboard's order.
            await page.wait_for_function(
                "() => document.body.dataset.epoch && document.querySelectorAll('[data-tile-id]').length === 12",
                timeout=10_000,
            )
            async with keyed_client(srv) as client:
                dash = (await client.get("/api/v1/dashboards/contact-centre")).json()
            shown = await page.eval_on_selector_all("[data-tile-id]", "els => els.map(e => e.dataset.tileId)")
            large = [t for t in dash["tile_order"] if dash["tiles"][t]["size"] == "large"]
            assert shown == large + [t for t in dash["tile_order"] if t not in large]
            assert await page.locator("[data-tile-id][data-size=large]").count() == 3
            assert not await page.locator("#stale").is_visible()
            before = await page.evaluate(VALUE_JS, "offered_today")

            replay = asyncio.create_task(_replay(srv, batches))

            # Values change as the replay proceeds (twice: live updates, not one refresh).
            first = await page.wait_for_function(
                '([id, old]) => { const v = document.querySelector(`[data-tile-id="${id}"] .value`).textContent;'
                " return v !== old && v !== '—' ? v : null; }",
                arg=["offered_today", before],
                timeout=15_000,
            )
            first = await first.json_value()
            await page.wait_for_function(
                '([id, old]) => document.querySelector(`[data-tile-id="${id}"] .value`).textContent !== old',
                arg=["offered_today", first],
                timeout=15_000,
            )
            await page.wait_for_function(
                "() => /%$/.test(document.querySelector('[data-tile-id=\"sl20_today\"] .value').textContent)",
                timeout=15_000,
            )
            posted = await asyncio.wait_for(replay, 45)
            assert posted == sum(map(len, batches))

            # After the replay the wall agrees with the REST read of the same dashboard.
            async with keyed_client(srv) as client:
                dash = (await client.get("/api/v1/dashboards/contact-centre")).json()
            offered = dash["tiles"]["offered_today"]["value"]
            assert offered and offered > 500
            await page.wait_for_function(
                '([id, want]) => document.querySelector(`[data-tile-id="${id}"] .value`).textContent.startsWith(want)',
                arg=["offered_today", f"{round(offered):,}"],
                timeout=10_000,
            )
            statuses = await page.eval_on_selector_all("[data-tile-id]", "els => els.map(e => e.dataset.status)")
            assert set(statuses) <= {"green", "amber", "red", "none"}
            assert {"green", "amber", "red"} & set(statuses)
            badge = await page.text_content('[data-tile-id="sl20_today"] .badge')
            assert any(word in badge for word in ("OK", "WATCH", "ALERT"))
            assert await page.locator('[data-tile-id="sl20_today"] .spark path.line').get_attribute("d")
            assert "1999" in await page.text_content("#asof-date")
            assert not await page.locator("#stale").is_visible()

            _assert_fits(await page.evaluate(FITS_JS), "1920x1080")
            await page.screenshot(path=str(ARTIFACTS / "wall.png"))

            await page.set_viewport_size({"width": 3840, "height": 2160})
            await page.wait_for_function("() => window.innerWidth === 3840")
            await page.wait_for_timeout(400)  # let the debounced re-fit run before measuring
            _assert_fits(await page.evaluate(FITS_JS), "3840x2160")
            await page.screenshot(path=str(ARTIFACTS / "wall-4k.png"))
            await page.set_viewport_size({"width": 1920, "height": 1080})

            # The server goes away: the wall must say so, loudly, within seconds.
            await srv.stop()
            await wait_closed(srv.url)
            await page.wait_for_function("() => document.body.classList.contains('stale')", timeout=10_000)
            assert await page.locator("#stale").is_visible()
            assert "STALE" in await page.text_content("#stale")
            await page.screenshot(path=str(ARTIFACTS / "wall-stale.png"))
            stale_value = await page.evaluate(VALUE_JS, "offered_today")
            old_epoch = await page.evaluate("() => document.body.dataset.epoch")

            # A server comes back on the same address and store: the wall reconnects on its own
            # (backoff), takes the new epoch's snapshot, and STALE goes away.
            port = int(srv.url.rsplit(":", 1)[1])
            opts = {**uvicorn_options(srv.settings), "host": "127.0.0.1", "port": port, "log_level": "warning"}
            again = uvicorn.Server(uvicorn.Config(create_app(srv.settings), **opts))
            restarted = (again, asyncio.create_task(again.serve()))
            await page.wait_for_function(
                "old => !document.body.classList.contains('stale') && document.body.dataset.epoch !== old",
                arg=old_epoch,
                timeout=20_000,
            )
            assert not await page.locator("#stale").is_visible()
            assert await page.evaluate(VALUE_JS, "offered_today") == stale_value
            assert errors == [], f"page errors: {errors}"
        finally:
            if replay is not None and not replay.done():
                replay.cancel()
                await asyncio.gather(replay, return_exceptions=True)
            await browser.close()
            if restarted is not None:
                restarted[0].should_exit = True
                await asyncio.wait_for(restarted[1], 15)


# --- The page's own logic against a scripted socket (no server): formats, silence, resume. ---

FRONTEND = Path(__file__).resolve().parents[1] / "frontend"
ORIGIN = "http://wall.test"
AS_OF = "1999-08-02T10:15:00+03:00"


def _tile(title, value, unit, status, target, direction="lower", size="normal", trend=None):
    return {
        "kpi": "k",
        "window": "today",
        "value": value,
        "unit": unit,
        "status": status,
        "target": target,
        "direction": direction,
        "as_of": AS_OF,
        "title": title,
        "dims": {},
        "size": size,
        **({"trend": trend} if trend is not None else {}),
    }


SCRIPTED = {
    "sl": _tile("Service level", 0.8234, "ratio", "green", 0.8, "higher", "large", [0.7, None, 0.81, 0.8234]),
    "asa": _tile("ASA", 42.4, "s", "amber", 30, trend=[20, 42.4]),
    "aht": _tile("AHT", 125, "s", "red", 60, trend=[125]),
    "offered": _tile("Offered", 1234, "calls", None, None, "higher", trend=[1000, 1234]),
    "nodata": _tile("Abandonment", None, "ratio", None, 0.05, trend=[None]),
}


async def _serve_frontend(route) -> None:
    path = route.request.url[len(ORIGIN) :].split("?")[0]
    if path == "/wall/contact-centre":
        await route.fulfill(path=str(FRONTEND / "wall" / "index.html"), content_type="text/html")
    elif path.startswith("/static/") and ".." not in path:
        await route.fulfill(path=str(FRONTEND / path[len("/static/") :]))
    elif path == "/api/v1/dashboards/contact-centre":
        await route.fulfill(
            json={
                "slug": "contact-centre",
                "title": "Scripted",
                "tz": "Asia/Jerusalem",
                "as_of": AS_OF,
                "tile_order": list(SCRIPTED),
                "tiles": {k: {kk: vv for kk, vv in v.items() if kk != "trend"} for k, v in SCRIPTED.items()},
            }
        )
    else:
        await route.fulfill(status=404, body="not found")


async def test_wall_formats_goes_stale_on_silence_and_resumes_with_since():
    async_playwright = _playwright()
    sockets: list = []

    def on_socket(ws) -> None:
        sockets.append(ws)
        ws.on_message(lambda msg: ws.send('{"type":"pong"}') if "ping" in str(msg) else None)
        if len(sockets) == 1:
            ws.send(
                json.dumps(
                    {
                        "type": "snapshot",
                        "dashboard": "contact-centre",
                        "epoch": "e1",
                        "seq": 5,
                        "as_of": AS_OF,
                        "title": "Scripted",
                        "tz": "Asia/Jerusalem",
                        "tiles": SCRIPTED,
                    }
                )
            )

    async with async_playwright() as pw:
        browser = await _launch(pw)
        try:
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.route(f"{ORIGIN}/**", _serve_frontend)
            await page.route_web_socket("**/ws/dashboards/**", on_socket)
            await page.goto(f"{ORIGIN}/wall/contact-centre?stale_after_s=1")
            await page.wait_for_function("() => document.body.dataset.epoch === 'e1'")

            async def text(tile: str, part: str) -> str:
                return (await page.text_content(f'[data-tile-id="{tile}"] {part}')).strip()

            assert [await text(t, ".value .num") for t in SCRIPTED] == ["82.3", "42", "2:05", "1,234", "—"]
            assert [await text(t, ".value .unit") for t in SCRIPTED][:4] == ["%", "s", "min", "calls"]
            assert await text("sl", ".target") == "target ≥ 80.0 %"
            assert await text("asa", ".target") == "target ≤ 30 s"
            assert await text("aht", ".target") == "target ≤ 1:00 min"
            assert await text("offered", ".target") == ""
            # Status in shape and word as well as colour.
            assert [await text(t, ".badge") for t in ("sl", "asa", "aht", "nodata")] == [
                "●OK",
                "▲WATCH",
                "■ALERT",
                "○NO DATA",
            ]
            assert not await page.locator('[data-tile-id="offered"] .badge').is_visible()
            statuses = await page.eval_on_selector_all("[data-tile-id]", "els => els.map(e => e.dataset.status)")
            assert statuses == ["green", "amber", "red", "none", "none"]
            # A null in the trend splits the sparkline into two runs.
            assert (await page.get_attribute('[data-tile-id="sl"] .spark path.line', "d")).count("M") == 2

            # Socket open but silent for longer than stale_after_s: STALE.
            await page.wait_for_function("() => document.body.classList.contains('stale')", timeout=5_000)
            assert "No data" in await page.text_content("#stale-reason")
            sockets[0].send(json.dumps({"type": "heartbeat", "epoch": "e1", "seq": 5, "as_of": AS_OF}))
            await page.wait_for_function("() => !document.body.classList.contains('stale')", timeout=5_000)

            # An update changes only its tiles and moves seq.
            sockets[0].send(
                json.dumps(
                    {
                        "type": "update",
                        "epoch": "e1",
                        "seq": 6,
                        "as_of": AS_OF,
                        "tiles": {"asa": {**SCRIPTED["asa"], "value": 12, "status": "green"}},
                    }
                )
            )
            await page.wait_for_function(
                "() => document.querySelector('[data-tile-id=\"asa\"]').dataset.status === 'green'"
            )
            assert await text("asa", ".value .num") == "12"
            assert await text("aht", ".value .num") == "2:05"

            # The socket drops: STALE at once; the page reconnects by itself and resumes from seq 6.
            await sockets[0].close(code=1011, reason="gone")
            await page.wait_for_function("() => document.body.classList.contains('stale')", timeout=2_000)
            assert await page.evaluate("() => document.body.dataset.seq") == "6"
            await wait_until(lambda: len(sockets) >= 2, 10, what="the page to reconnect")
            assert len(sockets) == 2
            assert sockets[1].url.endswith("/ws/dashboards/contact-centre?epoch=e1&since=6")
            sockets[1].send(json.dumps({"type": "heartbeat", "epoch": "e1", "seq": 6, "as_of": AS_OF}))
            await page.wait_for_function("() => !document.body.classList.contains('stale')", timeout=5_000)
            assert await text("asa", ".value .num") == "12"
            assert errors == [], f"page errors: {errors}"
        finally:
            await browser.close()
