"""A KPI definition changes on real data (issue 11 item 3), on both stores.

The first days of the August 1999 Anonymous Bank log are replayed through the HTTP API into a
pack that is the contact-centre pack under another name (``cc-august``: the shipped pack cannot
be edited by a test), every day and the month are cut, then the service-level threshold goes
from 20 s to 30 s and the packs are reloaded: by ``pulseboard packs reload`` (a real process) on
the stopped server's store, or by SIGHUP to the running server.  Then every day's and the
month's ``service_level_20s`` equal an independent computation from the file at 30 s, every cut
period has a restated version whose cause names the measure with its old and new hash, and the
earlier versions are unchanged (still the 20 s values).
"""

from __future__ import annotations

import asyncio
import csv
import functools
import gzip
import math
import os
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from app.clock import ManualClock
from app.metrics.calendar import to_us
from app.metrics.pack import load_pack
from app.replay.anonymous_bank import load_events, to_wire
from app.resources import packs_dir
from tests.conftest import IN_CI, keyed_client
from tests.helpers import AUGUST, wait_until
from tests.test_replay_august import NEVER, _when

EXE = Path(sys.executable).parent / "pulseboard"
ZONE = ZoneInfo("Asia/Jerusalem")
DAYS = [date(1999, 8, d) for d in (1, 2, 3)]
SLUG = "cc-august"


def _need_the_file() -> None:
    if not AUGUST.is_file():
        if IN_CI:
            pytest.fail(f"the August 1999 log is not at {AUGUST}")
        pytest.skip(f"the August 1999 log is not at {AUGUST}")


@functools.cache
def _events_of_days() -> list[dict]:
    lo, hi = datetime(1999, 8, 1, tzinfo=ZONE), datetime(1999, 8, 4, tzinfo=ZONE)
    return [to_wire(e) for e in load_events(AUGUST) if lo <= e["ts"] < hi]


@functools.cache
def expected_sl(threshold_s: int) -> tuple[dict[date, float], float]:
    """Service level (answered within ``threshold_s`` / offered) per local day of ``DAYS`` and over
    them all, from the TSV alone (CONTRACT §5 rules, as tests/test_replay_august.py reads them)."""
    within: dict[date, int] = defaultdict(int)
    offered: dict[date, int] = defaultdict(int)
    with gzip.open(AUGUST, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            outcome = row["outcome"]
            if outcome == "PHANTOM":
                continue
            d = row["date"]
            day = date(1900 + int(d[:2]), int(d[2:4]), int(d[4:6]))
            entry, queued = row["vru_entry"], row["q_start"] != NEVER
            if outcome == "AGENT":
                at = _when(
                    day,
                    entry,
                    row["ser_start"] if row["ser_start"] != NEVER else (row["q_exit"] if queued else row["vru_exit"]),
                )
                offered[at.date()] += 1
                within[at.date()] += int(row["q_time"]) <= threshold_s
            elif outcome == "HANG" and queued:
                offered[_when(day, entry, row["q_exit"]).date()] += 1
    days = {d: within[d] / offered[d] for d in DAYS}
    return days, sum(within[d] for d in DAYS) / sum(offered[d] for d in DAYS)


def _write_pack(folder: Path, threshold_s: int) -> Path:
    doc = yaml.safe_load((packs_dir() / "contact-centre.yaml").read_text(encoding="utf-8"))
    doc["pack"] = SLUG
    doc["measures"]["answered_within_20s"]["where"]["value"]["le"] = threshold_s
    doc["dashboards"] = {SLUG: doc["dashboards"]["contact-centre"]}
    path = folder / "cc-august.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    for key, value in settings.model_dump(exclude_none=True).items():
        if key == "database_url":
            env["DATABASE_URL"] = value
        elif isinstance(value, (str, int, float, bool)) or hasattr(value, "__fspath__"):
            env[f"PULSEBOARD_{key.upper()}"] = str(value)
    return env


async def _versions(client, grain: str, label: str) -> list[dict]:
    r = await client.get(f"/api/v1/snapshots/{SLUG}/{grain}/{label}/versions")
    assert r.status_code == 200, r.text
    return r.json()["versions"]


async def _sl(client, grain: str, label: str, version: int | None = None) -> float:
    params = {"version": version} if version else {}
    r = await client.get(f"/api/v1/snapshots/{SLUG}/{grain}/{label}", params=params)
    assert r.status_code == 200, r.text
    return r.json()["kpis"]["service_level_20s"]["value"]


async def _series(client, grain: str, start: datetime, end: datetime) -> list[float]:
    params = {"grain": grain, "start": start.isoformat(), "end": end.isoformat()}
    r = await client.get(f"/api/v1/kpis/{SLUG}/service_level_20s/series", params=params)
    assert r.status_code == 200, r.text
    return [p["value"] for p in r.json()["points"]]


PERIODS = [("day", d.isoformat()) for d in DAYS] + [("month", "1999-08")]


@pytest.mark.parametrize("how", ["cli", "sighup"])
async def test_threshold_20_to_30_rebuilds_and_restates_every_cut_period(
    how: str, make_settings, start_server, tmp_path: Path
) -> None:
    _need_the_file()
    folder = tmp_path / "packs"
    folder.mkdir()
    path = _write_pack(folder, 20)
    old_hash = load_pack(path).measure_hash("answered_within_20s")
    settings = make_settings(packs_dir=folder, tz="Asia/Jerusalem")
    clock = ManualClock(datetime(1999, 9, 2, 12, tzinfo=ZONE))
    lo, hi = datetime(1999, 8, 1, tzinfo=ZONE), datetime(1999, 8, 4, tzinfo=ZONE)
    events = _events_of_days()
    at20, month20 = expected_sl(20)
    at30, month30 = expected_sl(30)
    assert all(at30[d] > at20[d] for d in DAYS)  # the change moves every day

    srv = await start_server(settings, clock=clock)
    async with keyed_client(srv, timeout=120) as client:
        for i in range(0, len(events), 2000):
            r = await client.post("/api/v1/events", json=events[i : i + 2000])
            assert r.status_code == 202, r.text
        for grain, label in PERIODS:
            r = await client.post(f"/api/v1/snapshots/{SLUG}/cut", json={"grain": grain, "period": label})
            assert r.status_code == 201, r.text
        for d in DAYS:
            assert math.isclose(await _sl(client, "day", d.isoformat()), at20[d], rel_tol=1e-12)
        assert math.isclose(await _sl(client, "month", "1999-08"), month20, rel_tol=1e-12)

        _write_pack(folder, 30)
        new_hash = load_pack(path).measure_hash("answered_within_20s")
        assert new_hash != old_hash
        cause = f"definition changed: {SLUG}/answered_within_20s: {old_hash} → {new_hash}"
        if how == "sighup":
            os.kill(os.getpid(), signal.SIGHUP)  # the server runs in this process's event loop

            async def restated() -> bool:
                counts = [len(await _versions(client, g, p)) for g, p in PERIODS]
                return all(n == 2 for n in counts)

            await wait_until(restated, 120, what="every cut period restated after SIGHUP")
    if how == "cli":
        srv.server.should_exit = True

        async def stopped() -> bool:
            try:
                async with httpx.AsyncClient(base_url=srv.url, timeout=2) as probe:
                    await probe.get("/healthz")
            except httpx.TransportError:
                return True
            return False

        await wait_until(stopped, 30, what="the first server stopped")
        done = await asyncio.to_thread(
            subprocess.run,
            [str(EXE), "packs", "reload"],
            env=_env(settings),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert cause in done.stdout and "snapshots restated: 4" in done.stdout, done.stdout
        assert done.stdout.count("definition changed: ") == 1  # exactly the measure whose hash moved
        assert "rebuilt 1 measure(s) over 1999-08-01T03:00:00+00:00 .. 1999-08-03T21:00:00+00:00" in done.stdout
        srv = await start_server(settings, clock=clock)  # at start: nothing left to change

    async with keyed_client(srv, timeout=120) as client:
        days = await _series(client, "day", lo, hi)
        for d, got in zip(DAYS, days, strict=True):
            assert math.isclose(got, at30[d], rel_tol=1e-12), (d, got, at30[d])
        (month,) = await _series(client, "month", datetime(1999, 8, 1, tzinfo=ZONE), datetime(1999, 9, 1, tzinfo=ZONE))
        assert math.isclose(month, month30, rel_tol=1e-12)
        for grain, label in PERIODS:
            versions = await _versions(client, grain, label)
            assert [v["version"] for v in versions] == [1, 2]
            assert versions[0]["cause"] is None and versions[0]["status"] == "final"
            assert versions[1]["status"] == "restated" and cause in versions[1]["cause"], versions[1]["cause"]
            want20 = at20[date.fromisoformat(label)] if grain == "day" else month20
            want30 = at30[date.fromisoformat(label)] if grain == "day" else month30
            assert math.isclose(await _sl(client, grain, label, 1), want20, rel_tol=1e-12)  # unchanged
            assert math.isclose(await _sl(client, grain, label), want30, rel_tol=1e-12)
        latest = (await client.get(f"/api/v1/snapshots/{SLUG}/day/1999-08-02")).json()
        assert latest["kpis"]["service_level_20s"]["definitions"][f"{SLUG}/answered_within_20s"] == new_hash
        assert (
            latest["kpis"]["answered"]["definition_hash"]
            == ((await client.get(f"/api/v1/snapshots/{SLUG}/day/1999-08-02", params={"version": 1})).json())["kpis"][
                "answered"
            ]["definition_hash"]
        )
    assert to_us(lo) < to_us(hi)
