"""The end-of-day and monthly scorecard pages in a real browser (issue 3, "Pages").

The real August 1999 Anonymous Bank log is posted through the HTTP API into a
SQLite store (business zone Asia/Jerusalem), the snapshot service cuts every
day and the month on an injected time, and late events restate 1999-08-10 (and
so the month).  Headless Chromium (Playwright, ``/usr/bin/chromium``) then:

* ``/day/contact-centre/1999-08-02``: every KPI shows the snapshot's value as
  formatted by unit, with target, shape+word status and owner; the Plotly hourly
  charts are drawn; the per-queue breakdown agrees with the series API and the
  snapshot's totals; reconciliation is OK;
* ``/day/contact-centre/1999-08-10``: RESTATED with the cause, both versions and
  the change of each KPI;
* an uncut day says NOT CUT YET;
* ``/scorecard/contact-centre/1999-08``: rows in the API's agenda order; a note
  ``<script>alert(1)</script>`` added through the form shows as text (no dialog);
  publishing while red KPIs lack notes lists them; with notes on every red KPI
  publishing locks the page (PUBLISHED, no forms); print media is white with no
  controls, and prints to PDF.

Screenshots go to ``test-artifacts/`` (day.png, day-restated.png, day-not-cut.png,
scorecard.png, scorecard-print.png, scorecard.pdf).  SQLite only: the pages do
not care which store is behind the server.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app.metrics.calendar import to_us
from app.replay.anonymous_bank import load_events, to_wire
from tests.conftest import keyed_client
from tests.helpers import AUGUST

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = Path("/usr/bin/chromium")
DATA = AUGUST
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ZONE = ZoneInfo("Asia/Jerusalem")
SLUG = "contact-centre"
QUEUES = ("PS", "NW", "IN", "NE", "TT", "PE")
XSS = "<script>alert(1)</script>"

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


# --- the pages' number formats, written out independently of the JavaScript -------------------


def _half_up(x: float, places: int = 0) -> Decimal:
    return Decimal(x).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _clock(seconds: float) -> str:
    t = int(_half_up(abs(seconds)))
    h, m, s = t // 3600, t % 3600 // 60, t % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt(value: float | None, unit: str | None) -> tuple[str, str]:
    """(number, unit) as the pages show them: ratio -> "82.4" "%", s -> "42" "s" / "1:14" "min", counts grouped."""
    if value is None:
        return "—", ""
    if unit == "ratio":
        return str(_half_up(value * 100, 1)), "%"
    if unit == "s":
        r = int(_half_up(value))
        if abs(r) < 60:
            return str(r), "s"
        if abs(r) < 3600:
            return _clock(value), "min"
        if abs(r) < 2 * 86400:
            return _clock(value), "h"
        return str(_half_up(value / 86400, 1)), "d"
    if float(value).is_integer():
        return f"{int(value):,}", unit or ""
    return str(_half_up(value, 2)), unit or ""


def test_formats() -> None:
    assert fmt(0.82345, "ratio") == ("82.3", "%")
    assert fmt(42.4, "s") == ("42", "s")
    assert fmt(73.8, "s") == ("1:14", "min")
    assert fmt(38715, "calls") == ("38,715", "calls")
    assert fmt(None, "calls") == ("—", "")


# --- the store: the real August, cut, with 1999-08-10 restated ----------------------------------


async def _load_august(srv) -> int:
    events = [to_wire(e) for e in load_events(DATA)]
    async with keyed_client(srv, timeout=120) as client:
        for i in range(0, len(events), 2000):
            resp = await client.post("/api/v1/events", json=events[i : i + 2000])
            assert resp.status_code == 202, resp.text
    return len(events)


def _late_events() -> list[dict]:
    late = []
    for i in range(3):  # three late calls on 1999-08-10, answered after 5 s, and one abandoned
        dims = {"queue": "PS", "priority": "1", "call": f"LATE-{i}"}
        late.append(
            {
                "id": f"LATE-{i}:call.answered",
                "source": "anonymous-bank",
                "type": "call.answered",
                "ts": datetime(1999, 8, 10, 10, i, tzinfo=ZONE).isoformat(),
                "value": 5,
                "dims": {**dims, "agent": "LATE"},
            }
        )
    late.append(
        {
            "id": "LATE-9:call.abandoned",
            "source": "anonymous-bank",
            "type": "call.abandoned",
            "ts": datetime(1999, 8, 10, 11, 0, tzinfo=ZONE).isoformat(),
            "value": 30,
            "dims": {"queue": "PS", "priority": "1", "call": "LATE-9"},
        }
    )
    return late


READY_DAY = (
    "() => document.body.dataset.state === 'ready' && document.body.dataset.charts === 'ready'"
    " && document.body.dataset.breakdown === 'ready' && document.body.dataset.recon === 'ready'"
)
READY_CARD = "() => document.body.dataset.state === 'ready' && document.body.dataset.sparklines === 'ready'"


async def _texts(page, selector: str) -> list[str]:
    return [t.strip() for t in await page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")]


async def _check_kpi_table(page, snap: dict) -> None:
    rows = await page.eval_on_selector_all(
        "#kpis tbody tr[data-kpi]",
        """rows => rows.map(r => ({
        kpi: r.dataset.kpi, status: r.dataset.status,
        num: r.querySelector('.value-cell .v').textContent,
        unit: (r.querySelector('.value-cell .unit') || {textContent: ''}).textContent,
        target: r.querySelector('td.target').textContent.trim(),
        badge: r.querySelector('td.status').textContent.trim(),
        owner: r.querySelector('.owner .role') ? r.querySelector('.owner .role').textContent : null}))""",
    )
    assert [r["kpi"] for r in rows] == list(snap["kpis"])
    for row in rows:
        k = snap["kpis"][row["kpi"]]
        num, unit = fmt(k["value"], k["unit"])
        assert (row["num"], row["unit"]) == (num, unit), (row, k)
        assert row["owner"] == (k["owner"] or {}).get("role")
        if k["target"] is None:
            assert row["status"] == "none" and row["target"] == "—"
        else:
            assert row["status"] == (k["status"] or "nodata")
            word = {"green": "●OK", "amber": "▲WATCH", "red": "■ALERT"}[k["status"]]
            assert row["badge"] == word
            assert row["target"].startswith("≤" if k["direction"] == "lower" else "≥")


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_day_and_scorecard_pages(make_settings, start_server) -> None:
    async_playwright = _playwright()
    _require(DATA.exists(), f"real data file {DATA} is missing")
    srv = await start_server(make_settings(tz="Asia/Jerusalem"))
    snapshots = srv.runtime.snapshots
    await _load_august(srv)
    await snapshots.run_due(to_us(datetime(1999, 9, 1, 0, 20, tzinfo=ZONE)))
    async with keyed_client(srv, timeout=60) as client:
        assert (await client.post("/api/v1/events", json=_late_events())).status_code == 202
        await snapshots.restate_pending(to_us(datetime(1999, 9, 1, 9, 0, tzinfo=ZONE)))
        # One more late call into 1999-08-03, not restated yet: the day's on-demand check must fail.
        late3 = [
            {
                "id": "LATE-3:call.abandoned",
                "source": "anonymous-bank",
                "type": "call.abandoned",
                "ts": datetime(1999, 8, 3, 12, 0, tzinfo=ZONE).isoformat(),
                "value": 12,
                "dims": {"queue": "NW", "priority": "1", "call": "LATE-3"},
            }
        ]
        assert (await client.post("/api/v1/events", json=late3)).status_code == 202
        day2 = (await client.get(f"/api/v1/snapshots/{SLUG}/day/1999-08-02")).json()
        day10 = (await client.get(f"/api/v1/snapshots/{SLUG}/day/1999-08-10")).json()
        assert day10["status"] == "restated" and day10["version"] == 2
        assert (await client.get(f"/api/v1/snapshots/{SLUG}/day/1999-09-05")).status_code == 404
        card = (await client.get(f"/api/v1/scorecards/{SLUG}/1999-08")).json()
        per_queue = {}
        for q in QUEUES:
            resp = await client.get(
                "/api/v1/kpis/offered/series",
                params={
                    "grain": "day",
                    "start": day2["period"]["start"],
                    "end": day2["period"]["end"],
                    "dims.queue": q,
                },
            )
            per_queue[q] = resp.json()["points"][0]["value"]
    red = [k["kpi"] for k in card["kpis"] if k["status"] == "red"]
    assert len(red) >= 2, "the real August has red KPIs to comment on"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            dialogs: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            async def on_dialog(dialog) -> None:
                dialogs.append(dialog.message)
                await dialog.dismiss()

            page.on("dialog", on_dialog)

            # --- an ordinary day -------------------------------------------------------------
            # Not signed in: the page sends the browser to /login, a read... here an admin key
            # is pasted once (scorecard notes and publishing need admin), and it comes back.
            await page.goto(f"{srv.url}/day/{SLUG}/1999-08-02")
            await page.wait_for_url("**/login?next=*", timeout=10_000)
            await page.fill("#key", srv.keys.admin)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"**/day/{SLUG}/1999-08-02", timeout=10_000)
            assert await page.evaluate("() => document.cookie") == ""  # the key is HttpOnly
            await page.wait_for_function(READY_DAY, timeout=20_000)
            assert await page.text_content("#title") == "Contact centre"
            assert re.fullmatch(r"Monday,? 2 August 1999", await page.text_content("#day-label"))
            await _check_kpi_table(page, day2)
            assert "v1 · FINAL" in await page.text_content("#status-chip")
            assert not await page.locator("#restated").is_visible()
            assert await page.get_attribute("#recon-state", "data-ok") == "true"
            for chart in ("chart-volume", "chart-rate", "chart-time"):
                assert await page.locator(f"#{chart}.js-plotly-plot .main-svg").count() > 0, chart
            assert await page.locator("#chart-volume .trace.bars .point").count() >= 24  # bars per hour
            assert await page.locator("#chart-rate .scatterlayer .trace").count() == 2  # SL 20 s + target
            shown = await page.eval_on_selector_all(
                "#breakdown tbody tr[data-dim-value]",
                "rs => rs.map(r => [r.dataset.dimValue, r.querySelector('td[data-kpi=offered]').textContent.trim()])",
            )
            want = sorted(
                ((q, f"{int(v):,}") for q, v in per_queue.items() if v), key=lambda x: -int(x[1].replace(",", ""))
            )
            assert shown == [list(w) for w in want]
            assert sum(per_queue.values()) == day2["kpis"]["offered"]["value"]
            total = await page.text_content("#breakdown tfoot td[data-kpi=offered]")
            assert total.strip() == f"{day2['kpis']['offered']['value']:,}"
            assert await page.get_attribute("#month-link", "href") == f"/scorecard/{SLUG}/1999-08"
            assert await page.get_attribute("#prev-day", "href") == f"/day/{SLUG}/1999-08-01"
            assert (
                await page.get_attribute("#csv-link", "href") == f"/api/v1/snapshots/{SLUG}/day/1999-08-02/export.csv"
            )
            await page.screenshot(path=str(ARTIFACTS / "day.png"), full_page=True)

            # --- the restated day ----------------------------------------------------------------
            await page.goto(f"{srv.url}/day/{SLUG}/1999-08-10")
            await page.wait_for_function(READY_DAY, timeout=20_000)
            await _check_kpi_table(page, day10)
            assert await page.locator("#restated").is_visible()
            assert day10["cause"] in await page.text_content("#restated")
            assert "RESTATED" in await page.text_content("#status-chip")
            await page.wait_for_selector("#versions [data-version='1']")
            versions = await _texts(page, "#versions [data-version]")
            assert [v.split(" (")[0] for v in versions] == ["v1 final", "v2 restated"]
            assert "1999, 00:20" in versions[0] and "1999, 09:00" in versions[1]
            change = await page.text_content("#kpis tr[data-kpi=offered] td.change-col")
            old = day10["changes"]["offered"]["from"]
            assert f"{old:,} calls → {old + 4:,} calls" in change and "+4" in change
            assert "4" in await page.text_content("#late-chip")
            await page.screenshot(path=str(ARTIFACTS / "day-restated.png"), full_page=True)

            # --- a day whose numbers moved after its cut: reconciliation FAILED, with the cause --------
            await page.goto(f"{srv.url}/day/{SLUG}/1999-08-03")
            await page.wait_for_function(READY_DAY, timeout=20_000)
            assert await page.get_attribute("#recon-state", "data-ok") == "false"
            assert await page.locator("#recon-failed").is_visible()
            assert "FAILED" in await page.text_content("#recon-chip")
            causes = await page.eval_on_selector_all(
                "#mismatches tbody tr", "rs => rs.map(r => [r.dataset.kpi, r.lastElementChild.textContent])"
            )
            assert ("offered", "late data: 1 event arrived after version 1 was cut") in [tuple(c) for c in causes]
            assert await page.locator("#restated").is_hidden()  # not restated yet: the snapshot is v1

            # --- a day not cut yet ---------------------------------------------------------------
            await page.goto(f"{srv.url}/day/{SLUG}/1999-09-05")
            await page.wait_for_function("() => document.body.dataset.state === 'not-cut'", timeout=10_000)
            assert await page.locator("#not-cut").is_visible()
            assert "NOT CUT YET" in await page.text_content("#not-cut")
            assert "has not been cut" in await page.text_content("#not-cut-text")
            assert not await page.locator("#content").is_visible()
            await page.screenshot(path=str(ARTIFACTS / "day-not-cut.png"))

            # --- the monthly scorecard -----------------------------------------------------------
            await page.goto(f"{srv.url}/scorecard/{SLUG}/1999-08")
            await page.wait_for_function(READY_CARD, timeout=20_000)
            rows = await page.eval_on_selector_all(
                "#scorecard tbody tr[data-kpi]", "rs => rs.map(r => [r.dataset.kpi, r.dataset.rank, r.dataset.status])"
            )
            assert [r[0] for r in rows] == card["agenda"]
            assert [int(r[1]) for r in rows] == list(range(1, len(card["agenda"]) + 1))
            for (name, _, status), k in zip(rows, card["kpis"], strict=True):
                assert status == (k["status"] or "none")
                num, _unit = fmt(k["value"], k["unit"])
                assert await page.text_content(f"#kpi-{name} .value-cell .v") == num
            assert await page.locator("#scorecard .spark .main-svg").count() >= len(card["agenda"])
            flagged = await page.eval_on_selector_all(
                "tr[data-kpi]:has(.needs-note)", "rs => rs.map(r => r.dataset.kpi)"
            )
            assert flagged == red
            assert await page.locator("#restated").is_visible()  # the month was restated by the late events
            assert card["snapshot"]["cause"] in await page.text_content("#restated")

            async def add_note(kpi: str, text: str, author: str = "Dana Levi") -> None:
                before = await page.locator(f"#kpi-{kpi} li.note").count()
                await page.click(f"#kpi-{kpi} button.add-note")
                await page.fill(f"#kpi-{kpi} form.note-form [name=author]", author)
                await page.fill(f"#kpi-{kpi} form.note-form textarea", text)
                await page.click(f"#kpi-{kpi} form.note-form button[type=submit]")
                await page.wait_for_function(
                    "([k, n]) => document.querySelectorAll(`#kpi-${k} li.note`).length > n", arg=[kpi, before]
                )

            # A note that looks like markup is shown as text; nothing runs.
            await add_note(red[0], XSS)
            assert await page.text_content(f"#kpi-{red[0]} li.note .note-text") == XSS
            assert await page.locator("#scorecard td.commentary script").count() == 0
            assert await page.locator(f"#kpi-{red[0]} .needs-note").count() == 0

            # Publishing while red KPIs lack notes: refused, and the page names them.
            await page.click("#publish-open")
            await page.fill("#publish-by", "Dana Levi")
            await page.click("#publish-confirm")
            await page.wait_for_selector("#publish-errors", state="visible")
            listed = await page.eval_on_selector_all("#publish-missing li", "ls => ls.map(l => l.dataset.kpi)")
            assert listed == red[1:]
            titles = {k["kpi"]: k["title"] for k in card["kpis"]}
            assert await _texts(page, "#publish-missing li a") == [titles[k] for k in red[1:]]
            assert await page.get_attribute("body", "data-published") == "false"

            for kpi in red[1:]:
                await add_note(
                    kpi,
                    f"{titles[kpi]}: staffing below forecast in the afternoon peaks; "
                    "two extra agents rostered from 1999-09-06.",
                )
            assert await page.locator("#scorecard .needs-note").count() == 0
            assert not await page.locator("#publish-errors").is_visible()  # nothing is missing any more
            assert await page.locator("#publish-form").is_visible()  # still open, name kept: publish again
            assert await page.input_value("#publish-by") == "Dana Levi"
            await page.click("#publish-confirm")
            await page.wait_for_function("() => document.body.dataset.published === 'true'", timeout=10_000)
            await page.wait_for_function(READY_CARD, timeout=10_000)
            assert await page.locator("#published").is_visible()
            assert "Published by Dana Levi" in await page.text_content("#published")
            assert await page.locator("form.note-form").count() == 0
            assert await page.locator("button.add-note").count() == 0
            assert not await page.locator("#publish-box").is_visible()
            assert not await page.locator("#publish-errors").is_visible()
            async with keyed_client(srv, timeout=60) as client:
                after = (await client.get(f"/api/v1/scorecards/{SLUG}/1999-08")).json()
            assert after["published"]["by"] == "Dana Levi"
            assert [n["text"] for n in after["kpis"][card["agenda"].index(red[0])]["commentary"]] == [XSS]
            await page.screenshot(path=str(ARTIFACTS / "scorecard.png"), full_page=True)

            # On paper: A4 landscape width, white, no controls, badges keep shape and word.
            await page.set_viewport_size({"width": 1123, "height": 794})
            await page.emulate_media(media="print")
            await page.wait_for_function(
                "() => getComputedStyle(document.body).backgroundColor === 'rgb(255, 255, 255)'"
            )
            assert not await page.locator("#print-btn").is_visible()
            assert not await page.locator(".pager").is_visible()
            widths = await page.evaluate(
                "() => [document.querySelector('#scorecard').getBoundingClientRect().right, window.innerWidth]"
            )
            assert widths[0] <= widths[1], f"the table is wider than the page in print: {widths}"
            assert re.search(r"■\s*ALERT", await page.text_content("#scorecard tbody"))
            await page.screenshot(path=str(ARTIFACTS / "scorecard-print.png"), full_page=True)
            await page.pdf(path=str(ARTIFACTS / "scorecard.pdf"), prefer_css_page_size=True, print_background=True)
            assert (ARTIFACTS / "scorecard.pdf").stat().st_size > 10_000

            assert dialogs == [], f"a dialog fired: {dialogs}"
            assert errors == [], f"page errors: {errors}"
        finally:
            await browser.close()
