"""Distinct counts on real data (issue 11 item 5), on both stores: ``unique_callers`` of the
contact-centre pack over August 1999, per local day, per queue and for the month, equal the
distinct identified callers (``customer_id`` ≠ 0) counted here from the file; a caller answered
on two days counts once in the month; a rebuild of the measure gives the same numbers.

Only ``call.answered`` events are posted (what the measure reads): every one of an identified
caller over the whole month (14,938), and 1,000 of unidentified callers, which must not count.
Every day (≤ 738 callers) and the month (4,182) are below the exact threshold (10,000), so the
values must be exact; the estimator past it is tested in tests/metrics/test_hll.py (≤ 2 %)."""

from __future__ import annotations

import asyncio
import csv
import functools
import gzip
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.clock import ManualClock
from app.metrics.calendar import to_us
from app.metrics.pack import load_packs
from app.replay.anonymous_bank import load_events, to_wire
from app.store import reads
from app.store.db import create_writer_engine
from app.store.rebuild import rebuild, select_measures
from tests.conftest import IN_CI, keyed_client
from tests.helpers import AUGUST
from tests.test_replay_august import NEVER, _when

ZONE = ZoneInfo("Asia/Jerusalem")
DAYS = [date(1999, 8, d) for d in range(1, 32)]
KPI = "contact-centre/unique_callers"
MKEY = "contact-centre/answered_callers"


@functools.cache
def exact_from_file() -> tuple[dict[date, set[str]], dict[date, set[str]], set[str]]:
    """Distinct identified callers answered per local day, per day in queue PS, and in August."""
    days: dict[date, set[str]] = defaultdict(set)
    ps: dict[date, set[str]] = defaultdict(set)
    month: set[str] = set()
    with gzip.open(AUGUST, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["outcome"] != "AGENT" or row["customer_id"].strip() == "0":
                continue
            d = row["date"]
            day = date(1900 + int(d[:2]), int(d[2:4]), int(d[4:6]))
            queued = row["q_start"] != NEVER
            when = row["ser_start"] if row["ser_start"] != NEVER else (row["q_exit"] if queued else row["vru_exit"])
            at = _when(day, row["vru_entry"], when)
            caller = row["customer_id"].strip()
            days[at.date()].add(caller)
            if row["type"] == "PS":
                ps[at.date()].add(caller)
            if at.month == 8:
                month.add(caller)
    return days, ps, month


@functools.cache
def _answered() -> list[dict]:
    """The answered calls of identified callers, and 1,000 of unidentified ones (not counted)."""
    answered = [to_wire(e) for e in load_events(AUGUST) if e["type"] == "call.answered"]
    anonymous = [e for e in answered if "customer" not in e["dims"]][:1000]
    return [e for e in answered if "customer" in e["dims"]] + anonymous


async def _series(client, grain: str, start: datetime, end: datetime, **dims: str) -> list[int]:
    params = {"grain": grain, "start": start.isoformat(), "end": end.isoformat()}
    params |= {f"dims.{k}": v for k, v in dims.items()}
    r = await client.get(f"/api/v1/kpis/{KPI}/series", params=params)
    assert r.status_code == 200, r.text
    return [p["value"] for p in r.json()["points"]]


async def test_unique_callers_of_august_1999(make_settings, start_server) -> None:
    if not AUGUST.is_file():
        (pytest.fail if IN_CI else pytest.skip)(f"the August 1999 log is not at {AUGUST}")
    days, ps, month = exact_from_file()
    assert len(month) < sum(len(days[d]) for d in DAYS)  # callers answered on several days exist
    settings = make_settings(tz="Asia/Jerusalem")
    srv = await start_server(settings, clock=ManualClock(datetime(1999, 9, 2, tzinfo=ZONE)))
    lo, hi = datetime(1999, 8, 1, tzinfo=ZONE), datetime(1999, 9, 1, tzinfo=ZONE)
    async with keyed_client(srv, timeout=300) as client:
        events = _answered()
        for i in range(0, len(events), 2000):
            r = await client.post("/api/v1/events", json=events[i : i + 2000])
            assert r.status_code == 202, r.text

        async def check() -> None:
            per_day = await _series(client, "day", lo, hi)
            assert per_day == [len(days[d]) for d in DAYS]
            assert await _series(client, "month", lo, hi) == [len(month)]
            ps_days = await _series(client, "day", lo, lo + timedelta(days=7), queue="PS")
            assert ps_days == [len(ps[d]) for d in DAYS[:7]]
            # an hour-unaligned window reads minute edges and whole hours: still each caller once
            odd_lo, odd_hi = datetime(1999, 8, 2, 9, 17, tzinfo=ZONE), datetime(1999, 8, 4, 15, 43, tzinfo=ZONE)
            async with srv.app.state.runtime.engine.connect() as conn:
                got = await reads.aggregate(conn, [MKEY], "", to_us(odd_lo), to_us(odd_hi), distinct_keys=[MKEY])
            want = set()
            for e in events:
                ts = datetime.fromisoformat(e["ts"])
                if odd_lo <= ts < odd_hi and "customer" in e["dims"]:
                    want.add(str(e["dims"]["customer"]))
            hll = got[MKEY].distinct
            assert hll is not None and hll.estimate() == len(want) > 0

        await check()
        packs = load_packs(settings.packs_dir)
        engine = create_writer_engine(settings)
        try:
            target = select_measures(packs, "contact-centre", "answered_callers")
            summary = await asyncio.to_thread(rebuild, engine, target, now_us=0, chunk_s=31 * 86_400)
        finally:
            engine.dispose()
        assert summary.events == len(events)
        await check()
