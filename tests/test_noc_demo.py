"""``pulseboard demo --pack noc`` runs the NOC wall on both real data sets (issue 13, "Done when").

The very command runs as a subprocess (port picked by the OS, the whole replay at ``--speed
max``, its own SQLite store under a temp data dir).  Its banner gives the wall link and a read
key; both feeds finish with every event of them accepted (the counts equal the data files' events
from 1 May to 29 August 2021, computed here with the replay mappings); the wall's REST read then lists the
open alarms of both sources, and headless Chromium shows ``/wall/noc`` with the alarms of both
(screenshot ``test-artifacts/noc-demo.png``).  The default demo (no ``--pack``) is unchanged:
``tests/test_demo_browser.py``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.replay.github_status import map_paths
from app.replay.pcic import DEFAULT_ORIGIN, map_file
from tests.helpers import wait_until_sync

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
DATA = Path(__file__).resolve().parents[1] / "data" / "noc-alarms"
FROM = datetime(2021, 5, 1, tzinfo=UTC)
UNTIL = datetime(2021, 8, 30, tzinfo=UTC)

pytestmark = [pytest.mark.browser]


def _require(ok: bool, why: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{why} (required in CI)")
        pytest.skip(why)


def test_noc_demo_replays_both_data_sets_into_the_wall(tmp_path: Path) -> None:
    _require(CHROMIUM.exists(), f"{CHROMIUM} is missing")
    pcic, _ = map_file(DATA / "pcic2021-wireless-alarms.csv.gz", DEFAULT_ORIGIN)
    github, _ = map_paths([DATA / "github-incidents.csv", DATA / "github-component-status.csv"])
    want = {
        source: sum(FROM <= e["ts"] < UNTIL for e in events)
        for source, events in (("pcic2021", pcic), ("github-status", github))
    }
    assert want["pcic2021"] > 10_000 and want["github-status"] > 50

    exe = Path(sys.executable).with_name("pulseboard")
    env = {**os.environ, "PULSEBOARD_DATA_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(exe), "demo", "--pack", "noc", "--speed", "max", "--port", "0", "--exit-after-s", "300"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        try:
            lines: list[str] = []
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)
                if "the CLI on this store" in line:
                    break
            text = "".join(lines)
            assert "Pulseboard NOC demo" in text, text
            base = next(line.split()[-1] for line in lines if line.strip().startswith("then http")).rsplit("/wall/", 1)[
                0
            ]
            read_key = next(line.split()[-1] for line in lines if "read key" in line)

            def finished() -> dict[str, int] | None:
                got = dict(
                    (m.group(1), int(m.group(2)))
                    for m in re.finditer(r"replay of (\S+) finished: (\d+) accepted", log_path.read_text())
                )
                return got if len(got) == 2 else None

            done = wait_until_sync(finished, 240, what="both NOC feeds to finish")
            backfilled = {
                source: sum(e["ts"] >= FROM and e["ts"] < datetime(2021, 5, 11, 12, tzinfo=UTC) for e in events)
                for source, events in (("pcic2021", pcic), ("github-status", github))
            }
            # The paced part's summary counts what it posted after the backfill: together, every event.
            assert {s: done[s] + backfilled[s] for s in done} == want, done
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {read_key}"}, timeout=30) as client:
                dash = client.get("/api/v1/dashboards/noc").json()
            tiles = dash["tiles"]
            newest = max(e["ts"] for e in pcic + github if e["ts"] < UNTIL)
            assert datetime.fromisoformat(dash["as_of"]) == newest  # the event clock: the newest event
            assert tiles["alarm_list"]["value"] == tiles["open_now"]["value"]
            assert tiles["availability_month"]["value"] is not None

            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=str(CHROMIUM),
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                try:
                    context = browser.new_context(viewport={"width": 1920, "height": 1080})
                    context.add_cookies([{"name": "pb_key", "value": read_key, "url": base}])
                    page = context.new_page()
                    page.goto(f"{base}/wall/noc")
                    page.wait_for_function("() => document.body.dataset.epoch", timeout=30_000)
                    page.wait_for_timeout(1500)
                    shown = page.eval_on_selector_all(
                        '[data-tile-id="alarm_list"] .alarm', "els => els.map(e => e.dataset.alarm)"
                    )
                    assert shown == [a["alarm"] for a in tiles["alarm_list"]["alarms"]]
                    ARTIFACTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "noc-demo.png"))
                finally:
                    browser.close()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:  # the pipe the banner was read from (else a ResourceWarning later)
                proc.stdout.close()
