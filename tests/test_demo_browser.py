"""A fresh demo shows final, reconciled days (issue 9, item 0).

``pulseboard demo`` runs as a subprocess (the very command, on a port the OS picks, at
6000x so that the first replayed day, 1999-08-01, ends within seconds) on its own store
in event-time mode.  Headless Chromium (Playwright, ``/usr/bin/chromium``) pairs as the
wall through the printed one-time link before the first day ends, so the live wall's
close of the day is recorded and checked too.  Then:

* the wall's clock shows event time (1999), not the browser's;
* once the event clock has passed 1999-08-02 00:05 (the daily cut time), the day's
  snapshot exists as version 1, ``final``, with every check OK (at cut time and on demand,
  including the live wall's close of the day), and only one version;
* its end-of-day page ``/day/contact-centre/1999-08-01`` says ``v1 · FINAL`` and
  reconciliation OK (screenshot ``test-artifacts/demo-day.png``);
* the wall shows no notice (nothing restated, no failed check);
* ``pulseboard snapshot cut`` pointed at the demo's store as its banner says finds the day
  cut (same store, zone and event clock);
* no snapshot exists outside the replayed days: none before 1999-08-01, none for today's
  wall-clock date, no month (August has not ended in event time), none for a dashboard
  with no events; every snapshot in the demo's store is a version 1 ``final`` day of the
  replayed data.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_until_sync

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SLUG = "contact-centre"
FIRST_DAY = "1999-08-01"
REPLAYED_DAYS = {"1999-08-01", "1999-08-02", "1999-08-03", "1999-08-04"}  # the excerpt's event dates
SPEED = 6000  # event seconds per second: from 07:00 to the first event after the cut (06:59 the next day) in 15 s
READY_DAY = (
    "() => document.body.dataset.state === 'ready' && document.body.dataset.charts === 'ready'"
    " && document.body.dataset.breakdown === 'ready' && document.body.dataset.recon === 'ready'"
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require(ok: bool, why: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{why} (required in CI)")
        pytest.skip(why)


def _banner(proc: subprocess.Popen) -> dict[str, str]:
    """The demo's banner on stdout: base URL, one-time wall link, read key."""
    lines: list[str] = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if "the CLI on this store" in line:  # the banner's last line
            break
    text = "".join(lines)
    assert "the CLI on this store" in text, f"the demo stopped before its banner: {text!r}"
    link = next(line.strip() for line in lines if "/pair#s=" in line)
    cli = next(line.split(": ", 1)[1].rsplit(" pulseboard", 1)[0] for line in lines if "the CLI on this store" in line)
    wall = next(line.split()[-1] for line in lines if line.strip().startswith("then http"))
    read_key = next(line.split()[-1] for line in lines if "read key" in line)
    return {"base": wall.rsplit("/wall/", 1)[0], "link": link, "read_key": read_key, "cli_env": cli}


def test_a_fresh_demo_shows_version_1_final_reconciled_days(tmp_path: Path) -> None:
    _require(CHROMIUM.exists(), f"{CHROMIUM} is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed")
    exe = Path(sys.executable).parent / "pulseboard"
    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    env["PULSEBOARD_DATA_DIR"] = str(data)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "demo.log"

    with sync_playwright() as pw, log_path.open("w") as log:
        # The browser is up before the demo starts, so the wall watches from the first minutes.
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        proc = subprocess.Popen(
            [str(exe), "demo", "--speed", str(SPEED), "--port", "0", "--exit-after-s", "600"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            demo = _banner(proc)
            base, read = demo["base"], {"Authorization": f"Bearer {demo['read_key']}"}
            errors: list[str] = []
            wall = browser.new_page(viewport={"width": 1920, "height": 1080})
            wall.on("pageerror", lambda exc: errors.append(str(exc)))
            wall.goto(demo["link"])
            wall.wait_for_url(f"**/wall/{SLUG}", timeout=20_000)
            wall.wait_for_function("() => document.body.dataset.seq !== undefined", timeout=20_000)

            def first_day_cut() -> dict | None:
                resp = httpx.get(f"{base}/api/v1/snapshots/{SLUG}/day/{FIRST_DAY}", headers=read, timeout=10)
                return resp.json() if resp.status_code == 200 else None

            snap = wait_until_sync(
                first_day_cut, 240, what=f"the cut of {FIRST_DAY}", interval_s=0.2, ignore=(httpx.TransportError,)
            )
            assert (snap["version"], snap["status"], snap["late_events"]) == (1, "final", 0)
            assert snap["reconciliation"]["ok"] is True, snap["reconciliation"]
            # Cut on the event clock: at its scheduled time or at the first event after it, not before.
            assert snap["scheduled_for"] == "1999-08-02T00:05:00+03:00"
            assert snap["scheduled_for"] <= snap["cut_at"] < "1999-08-03", snap["cut_at"]
            assert snap["kpis"]["offered"]["value"] > 1000
            versions = httpx.get(f"{base}/api/v1/snapshots/{SLUG}/day/{FIRST_DAY}/versions", headers=read).json()
            assert [v["version"] for v in versions["versions"]] == [1]

            def live_checked() -> dict | None:
                """The on-demand reconciliation, once the hub has recorded the wall's close of the day
                (at its first refresh after the event clock left the day: within a tile interval)."""
                recon = httpx.get(f"{base}/api/v1/reconciliation/{SLUG}/day/{FIRST_DAY}", headers=read).json()
                live = next(c for c in recon["checks"] if c["name"] == "live_vs_snapshot")
                return recon if live["ok"] is not None else None

            recon = wait_until_sync(live_checked, 30, what="the wall's close of the day", interval_s=0.1)
            checks = {c["name"]: c["ok"] for c in recon["checks"]}
            assert recon["ok"] is True and recon["mismatches"] == [], recon
            assert checks == {"rollups_vs_raw": True, "snapshot_vs_current": True, "live_vs_snapshot": True}

            # The wall's clock is the event clock; nothing restated, no failed check to show.
            clock_date = wall.text_content("#clock-date") or ""
            assert "1999" in clock_date and "event time" in clock_date, clock_date
            assert wall.locator("#notices").is_hidden()
            wall.screenshot(path=str(ARTIFACTS / "demo-wall.png"))

            # The end-of-day page, signed in with the printed read key.
            page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/day/{SLUG}/{FIRST_DAY}")
            page.wait_for_url("**/login?next=*", timeout=10_000)
            page.fill("#key", demo["read_key"])
            page.click("button[type=submit]")
            page.wait_for_url(f"**/day/{SLUG}/{FIRST_DAY}", timeout=10_000)
            page.wait_for_function(READY_DAY, timeout=30_000)
            assert "v1 · FINAL" in (page.text_content("#status-chip") or "")
            assert page.get_attribute("#status-chip", "data-status") == "final"
            assert page.get_attribute("#recon-state", "data-ok") == "true"
            assert "● OK" in (page.text_content("#recon-chip") or "")
            assert page.locator("#restated").is_hidden() and page.locator("#recon-failed").is_hidden()
            now_checks = page.eval_on_selector_all(
                "#recon-now li.check", "ls => ls.map(l => [l.dataset.check, l.className])"
            )
            assert sorted(name for name, cls in now_checks if "ok" in cls.split()) == sorted(checks)
            page.screenshot(path=str(ARTIFACTS / "demo-day.png"), full_page=True)

            # Nothing outside the replayed data, nothing on wall-clock time.
            today = date.today().isoformat()
            for path in ("day/1999-07-31", f"day/{today}", "month/1999-08", "month/1999-07"):
                assert httpx.get(f"{base}/api/v1/snapshots/{SLUG}/{path}", headers=read).status_code == 404, path
            assert httpx.get(f"{base}/api/v1/snapshots/itsm/day/{FIRST_DAY}", headers=read).status_code == 404
            assert errors == [], errors
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops and exits 0
            try:
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()  # type: ignore[union-attr]
                browser.close()
    assert proc.returncode == 0, log_path.read_text()[-4000:]

    # The CLI pointed at the demo's store as the banner (and the README) says acts on its store,
    # zone and event clock: the day is there, already cut.
    assignments = dict(a.split("=", 1) for a in demo["cli_env"].split() if "=" in a)
    assert demo["cli_env"].startswith("env -u DATABASE_URL ") and assignments["PULSEBOARD_TZ"] == "Asia/Jerusalem"
    cli_env = {**{k: v for k, v in env.items() if k != "PULSEBOARD_DATA_DIR"}, **assignments}
    cut = subprocess.run(
        [str(exe), "snapshot", "cut", "--grain", "day", "--period", FIRST_DAY, "--dashboard", SLUG],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cut.returncode == 0, cut.stderr
    db_path = data / "demo" / "pulseboard.db"
    assert cut.stderr == f"store: sqlite:///{db_path.resolve()}, zone: Asia/Jerusalem, clock: event\n"
    assert cut.stdout == f"{SLUG} day {FIRST_DAY} (Asia/Jerusalem): version 1 final (unchanged)\n"

    with sqlite3.connect(data / "demo" / "pulseboard.db") as db:
        rows = db.execute("SELECT dashboard, grain, period, version, status, cut_at_us FROM snapshot").fetchall()
    assert rows, "the demo cut nothing"
    assert {(d, g) for d, g, *_ in rows} == {(SLUG, "day")}
    assert {p for _, _, p, *_ in rows} <= REPLAYED_DAYS
    assert {(v, s) for *_, v, s, _ in rows} == {(1, "final")}
    assert max(r[5] for r in rows) < datetime(1999, 9, 1, tzinfo=UTC).timestamp() * 1e6  # cut in event time
