"""Distribution of cuts to subscribers, end to end, both stores: the end-of-day dashboard of
1999-08-31 (and the catch-up of 1999-08-30) and the August 1999 scorecard, from the replayed log.

The SMTP server (aiosmtpd on 127.0.0.1) is down at first: the deliveries fail after their tries
and are listed as failed on the admin page; once it is up, the retry pass sends each one, and
restarts send nothing again.  Each email has the summary in its body, a link to the page, a CSV
and an XLSX (opened with openpyxl) whose numbers equal the snapshot, and a PDF of the printed
page when Chromium is installed.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import date
from pathlib import Path

import httpx
import openpyxl
import pytest

from app.clock import ManualClock
from app.replay.client import replay_events
from tests.helpers import AUGUST, wait_closed, wait_until
from tests.notify_common import SmtpSink, august_events, local, write_yaml

pytestmark = pytest.mark.slow

DAYS = (date(1999, 8, 30), date(1999, 8, 31))
TO = "director@bank.example"
NOTIFY_YAML = f"""
subscriptions:
  - {{id: ops-daily, dashboard: contact-centre, grain: day, to: [{TO}]}}
  - {{id: ops-monthly, dashboard: contact-centre, grain: month, to: [{TO}], since: 1999-08-01}}
"""
RETRY_PASS_S = 600
HAS_CHROMIUM = Path("/usr/bin/chromium").is_file()


def attachments(msg) -> dict[str, bytes]:
    """Attachment filename -> bytes (text parts encoded back to UTF-8)."""
    out = {}
    for part in msg.iter_attachments():
        data = part.get_content()
        out[part.get_filename()] = data.encode() if isinstance(data, str) else data
    return out


def same_numbers(sheet: dict[str, object], want: dict[str, object]) -> None:
    """XLSX cells hold 16 significant digits (openpyxl writes "%.16g"; Excel keeps 15): counts
    exactly, other numbers to 1e-15 relative."""
    assert set(sheet) == set(want)
    for kpi, value in want.items():
        got = sheet[kpi]
        if value is None or isinstance(value, int):
            assert got == value, kpi
        else:
            assert isinstance(got, (int, float)) and math.isclose(got, value, rel_tol=1e-15), (kpi, got, value)


def xlsx_rows(data: bytes) -> list[dict[str, object]]:
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    sheet = book.worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


async def test_day_and_month_are_mailed_once_each_with_attachments_equal_to_the_snapshot(
    make_settings, start_server, tmp_path
):
    if not AUGUST.is_file():
        pytest.skip(f"no {AUGUST}")
    events = [ev for d in DAYS for ev in august_events(d)]
    smtp = SmtpSink()  # not started yet: deliveries fail first
    settings = make_settings(
        tz="Asia/Jerusalem",
        notify_file=write_yaml(tmp_path / "notify.yaml", NOTIFY_YAML),
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_from="pulseboard@bank.example",
        public_url="https://pulse.bank.example",
        notify_attempts=2,
        notify_retry_wait_s=0.01,
        notify_retry_pass_s=RETRY_PASS_S,
        smtp_timeout_s=5,
    )
    clock = ManualClock(local(date(1999, 9, 1), 0, 20))
    srv = await start_server(settings, clock=clock)
    try:
        summary = await replay_events(
            events, srv.url, speed=None, batch_size=1000, api_key=srv.keys.ingest["anonymous-bank"]
        )
        assert summary.accepted == len(events)
        async with httpx.AsyncClient(base_url=srv.url, timeout=60, headers=srv.auth("admin")) as c:
            for grain, period in (("day", "1999-08-30"), ("day", "1999-08-31"), ("month", "1999-08")):
                r = await c.post("/api/v1/snapshots/contact-centre/cut", json={"grain": grain, "period": period})
                assert r.status_code == 201, r.text

            async def failed() -> list[dict]:
                log = (await c.get("/api/v1/notifications")).json()["deliveries"]
                return log if len(log) == 3 and all(d["status"] == "failed" for d in log) else []

            log = await wait_until(failed, 60, what="three failed deliveries")
            assert all(d["attempts"] == 2 and "127.0.0.1" in d["last_error"] for d in log)
            page = await c.get("/admin/notifications")
            assert page.status_code == 200
            assert "3 deliveries shown, 3 failed or given up" in page.text
            assert page.text.count("Retry now") == 3
            snaps = {
                p: (await c.get(f"/api/v1/snapshots/contact-centre/{g}/{p}")).json()
                for g, p in (("day", "1999-08-31"), ("day", "1999-08-30"), ("month", "1999-08"))
            }
            card = (await c.get("/api/v1/scorecards/contact-centre/1999-08")).json()

        # The SMTP server comes up; a restart sends nothing new by itself (the next pass is not due) ...
        smtp.start()
        await srv.stop()
        await wait_closed(srv.url)
        srv = await start_server(settings, clock=clock)
        assert await srv.runtime.notifier.distribute() == []
        assert smtp.messages == []
        # ... and the retry pass, once due, sends each delivery once.
        clock.advance(RETRY_PASS_S + 1)
        assert await srv.runtime.notifier.retry_due() == 3
        assert await srv.runtime.notifier.retry_due() == 0
        await srv.stop()
        await wait_closed(srv.url)
        srv = await start_server(settings, clock=clock)
        assert await srv.runtime.notifier.distribute() == []
        assert await srv.runtime.notifier.retry_due() == 0

        mails = smtp.to(TO)
        by_subject = {m["Subject"]: m for m in mails}
        assert len(mails) == 3 == len(by_subject), sorted(by_subject)
        day = by_subject["[Pulseboard] contact-centre: end of day 1999-08-31"]
        month = by_subject["[Pulseboard] contact-centre: scorecard 1999-08"]
        assert "[Pulseboard] contact-centre: end of day 1999-08-30" in by_subject  # the catch-up

        # The end-of-day email: summary, link, CSV and XLSX equal to the snapshot, PDF.
        snap = snaps["1999-08-31"]
        body = day.get_body(("plain",)).get_content()
        assert "https://pulse.bank.example/day/contact-centre/1999-08-31" in body
        reds = [k["title"] for k in snap["kpis"].values() if k["status"] == "red"]
        assert f"{len(reds)} of {len(snap['kpis'])} KPIs red" in body
        assert str(snap["kpis"]["offered"]["value"]) in body
        files = attachments(day)
        stem = f"contact-centre-day-1999-08-31-v{snap['version']}"
        rows = list(csv.DictReader(io.StringIO(files[f"{stem}.csv"].decode())))
        assert {r["kpi"] for r in rows} == set(snap["kpis"])
        for r in rows:
            want = snap["kpis"][r["kpi"]]["value"]
            assert (float(r["value"]) if r["value"] else None) == want, r["kpi"]
        sheet = xlsx_rows(files[f"{stem}.xlsx"])
        same_numbers({r["kpi"]: r["value"] for r in sheet}, {k: v["value"] for k, v in snap["kpis"].items()})
        assert {r["kpi"]: r["rag_status"] or None for r in sheet} == {k: v["status"] for k, v in snap["kpis"].items()}
        if HAS_CHROMIUM:
            assert files[f"{stem}.pdf"].startswith(b"%PDF-")
        else:
            assert f"{stem}.pdf" not in files and "PDF omitted" in body

        # The scorecard email: agenda order, numbers equal to the monthly snapshot.
        msnap = snaps["1999-08"]
        mbody = month.get_body(("plain",)).get_content()
        assert "https://pulse.bank.example/scorecard/contact-centre/1999-08" in mbody
        mfiles = attachments(month)
        mstem = f"contact-centre-scorecard-1999-08-v{msnap['version']}"
        mrows = list(csv.DictReader(io.StringIO(mfiles[f"{mstem}.csv"].decode())))
        assert [r["kpi"] for r in mrows] == card["agenda"]
        msheet = xlsx_rows(mfiles[f"{mstem}.xlsx"])
        assert [r["kpi"] for r in msheet] == card["agenda"]
        same_numbers({r["kpi"]: r["value"] for r in msheet}, {k: v["value"] for k, v in msnap["kpis"].items()})
        assert msnap["kpis"]["offered"]["value"] == sum(
            snaps[d]["kpis"]["offered"]["value"] for d in ("1999-08-30", "1999-08-31")
        )
        if HAS_CHROMIUM:
            assert mfiles[f"{mstem}.pdf"].startswith(b"%PDF-")

        async with httpx.AsyncClient(base_url=srv.url, timeout=60, headers=srv.auth("admin")) as c:
            log = (await c.get("/api/v1/notifications")).json()["deliveries"]
        assert sorted(d["status"] for d in log) == ["sent"] * 3
        assert all(d["passes"] == 2 and d["attempts"] == 3 for d in log)  # 2 failed tries, then 1
    finally:
        smtp.stop()
