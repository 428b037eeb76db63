"""Acceptance: the whole August 1999 Anonymous Bank log, replayed at --speed max
through the HTTP API into each store, gives per day, per month and per queue the
KPIs a straightforward computation from the file itself gives.

The expected values are computed here from the TSV with ``csv`` alone (no import
of ``app.replay``): CONTRACT §5 plus the two refinements documented in
``app/replay/anonymous_bank.py``:

* a time of day counts as the next day only when it is more than 12 h earlier
  than ``vru_entry`` (dirty rows have a ``q_start`` a little *before* entry);
* an AGENT row with ``ser_start`` ``0:00:00`` (no recorded service) is answered,
  and ended, at ``q_exit`` if it queued, else at ``vru_exit``.

Counts must match exactly; ratios and means within 1e-9 relative.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import math
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio

from app.config import Settings
from app.main import create_app
from app.replay.client import replay_events
from tests.conftest import IN_CI, PG_URL, TestKeys, _drop_pg_schema, keyed_client, make_test_keys, pg_available, serve
from tests.helpers import AUGUST

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ZONE = ZoneInfo("Asia/Jerusalem")
KPIS = (
    "offered",
    "answered",
    "abandoned",
    "abandonment_rate",
    "service_level_20s",
    "service_level_60s",
    "asa_s",
    "aht_s",
)
COUNTS = ("offered", "answered", "abandoned")
NEVER = "0:00:00"
PS_DAY = date(1999, 8, 10)
DAYS = [date(1999, 8, d) for d in range(1, 32)]
MONTH_START = datetime(1999, 8, 1, tzinfo=ZONE)
MONTH_END = datetime(1999, 9, 1, tzinfo=ZONE)


# ---------------------------------------------------------------------------------------------
# The expected values, from the file.


@dataclass
class Tally:
    answered: int = 0
    abandoned: int = 0
    within_20: int = 0
    within_60: int = 0
    wait_sum: float = 0.0
    ended: int = 0
    handle_sum: float = 0.0

    def kpis(self) -> dict[str, float | None]:
        offered = self.answered + self.abandoned
        return {
            "offered": offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "abandonment_rate": self.abandoned / offered if offered else None,
            "service_level_20s": self.within_20 / offered if offered else None,
            "service_level_60s": self.within_60 / offered if offered else None,
            "asa_s": self.wait_sum / self.answered if self.answered else None,
            "aht_s": self.handle_sum / self.ended if self.ended else None,
        }


@dataclass
class Expected:
    days: dict[date, Tally] = field(default_factory=lambda: defaultdict(Tally))
    month: Tally = field(default_factory=Tally)
    ps_days: dict[date, Tally] = field(default_factory=lambda: defaultdict(Tally))
    rows: int = 0
    events: int = 0


def _seconds(tod: str) -> int:
    h, m, s = tod.split(":")
    return int(h) * 3600 + int(m) * 60 + int(s)


def _when(day: date, entry: str, tod: str) -> datetime:
    """Local naive instant of ``tod`` on the row's day, next day if > 12 h before entry."""
    secs = _seconds(tod)
    if _seconds(entry) - secs > 12 * 3600:
        day = day + timedelta(days=1)
    return datetime(day.year, day.month, day.day) + timedelta(seconds=secs)


def expected_from_file(path: Path) -> Expected:
    exp = Expected()
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            exp.rows += 1
            outcome = row["outcome"]
            if outcome == "PHANTOM":
                continue
            d = row["date"]
            day = date(1900 + int(d[:2]), int(d[2:4]), int(d[4:6]))
            entry = row["vru_entry"]
            queued = row["q_start"] != NEVER
            wait = int(row["q_time"])
            is_ps = row["type"] == "PS"

            def tallies(at: datetime, is_ps: bool = is_ps) -> list[Tally]:
                return (
                    [exp.days[at.date()]]
                    + ([exp.month] if at.month == 8 else [])
                    + ([exp.ps_days[at.date()]] if is_ps else [])
                )

            exp.events += 1 if queued else 0
            if outcome == "AGENT":
                if row["ser_start"] != NEVER:
                    answered_at = _when(day, entry, row["ser_start"])
                    ended_at = _when(day, entry, row["ser_exit"])
                else:
                    answered_at = ended_at = _when(day, entry, row["q_exit"] if queued else row["vru_exit"])
                for t in tallies(answered_at):
                    t.answered += 1
                    t.wait_sum += wait
                    t.within_20 += wait <= 20
                    t.within_60 += wait <= 60
                for t in tallies(ended_at):
                    t.ended += 1
                    t.handle_sum += int(row["ser_time"])
                exp.events += 2
            elif outcome == "HANG" and queued:
                for t in tallies(_when(day, entry, row["q_exit"])):
                    t.abandoned += 1
                exp.events += 1
    return exp


def _need_the_file() -> None:
    if not AUGUST.is_file():
        message = f"the August 1999 log is not at {AUGUST} (data/ of the repository)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def expected() -> Expected:
    _need_the_file()
    return expected_from_file(AUGUST)


def assert_kpis(found: dict[str, object], want: dict[str, float | None], where: str) -> None:
    for name in KPIS:
        got, exp = found[name], want[name]
        if exp is None:
            assert got is None, f"{where} {name}: expected null, got {got!r}"
        elif name in COUNTS:
            assert got == exp, f"{where} {name}: expected {exp}, got {got!r}"
        else:
            assert got is not None and math.isclose(got, exp, rel_tol=1e-9, abs_tol=0.0), (
                f"{where} {name}: expected {exp!r}, got {got!r}"
            )


# ---------------------------------------------------------------------------------------------
# One replay of the whole file per store, shared by the tests of this module.


@dataclass
class Replayed:
    kind: str
    url: str
    events: list[dict]
    summary: object
    seconds: float
    app: object
    keys: TestKeys


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def replayed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A server on a fresh store of each kind, with the whole August file replayed at max speed."""
    from app.replay.anonymous_bank import load_events  # the code under test: turns the file into events

    kind = request.param
    _need_the_file()
    settings_kw: dict = {
        "data_dir": tmp_path_factory.mktemp(f"august-{kind}") / "var",
        "tz": "Asia/Jerusalem",
        "snapshots_enabled": False,
    }  # the tests drive the scheduler with their own clock
    if kind == "postgresql":
        if not pg_available():
            if IN_CI:
                pytest.fail(f"PostgreSQL is required in CI but does not answer at {PG_URL}")
            pytest.skip(f"no PostgreSQL at {PG_URL}")
        settings_kw["database_url"] = PG_URL
        settings_kw["db_schema"] = f"pb_test_august_{secrets.token_hex(4)}"
    settings = Settings(**settings_kw)
    app = create_app(settings)
    server, task, url = await serve(app, settings)
    keys = await make_test_keys(app)
    try:
        events = load_events(AUGUST)
        began = time.monotonic()
        summary = await replay_events(events, url, speed=None, batch_size=1000, api_key=keys.ingest["anonymous-bank"])
        seconds = time.monotonic() - began
        print(f"\n[{kind}] replayed {summary.events} events in {seconds:.1f} s ({summary.events_per_s:.0f}/s)")
        yield Replayed(kind, url, events, summary, seconds, app, keys)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        if kind == "postgresql":
            _drop_pg_schema(settings.db_schema)


async def _series(
    srv: Replayed, kpi: str, grain: str, start: datetime, end: datetime, dims: dict[str, str] | None = None
) -> list[dict]:
    params = {"grain": grain, "start": start.isoformat(), "end": end.isoformat()}
    params.update({f"dims.{k}": v for k, v in (dims or {}).items()})
    async with keyed_client(srv, timeout=120) as client:
        r = await client.get(f"/api/v1/kpis/{kpi}/series", params=params)
    assert r.status_code == 200, r.text
    return r.json()["points"]


async def _table(
    srv: Replayed, grain: str, start: datetime, end: datetime, dims: dict[str, str] | None = None
) -> dict[str, dict[str, object]]:
    """period start (ISO) -> {kpi: value} for every KPI compared."""
    out: dict[str, dict[str, object]] = defaultdict(dict)
    for kpi in KPIS:
        for point in await _series(srv, kpi, grain, start, end, dims):
            out[point["start"]][kpi] = point["value"]
    return out


# ---------------------------------------------------------------------------------------------


async def test_expected_values_are_sane(expected: Expected) -> None:
    """The reference computation itself: the documented August totals."""
    assert expected.rows == 42_078
    assert sum(t.answered for t in expected.days.values()) == 31_402  # every AGENT row
    assert set(expected.days) >= set(DAYS)
    assert set(expected.days) - set(DAYS) <= {date(1999, 9, 1)}  # calls of 31 Aug ending after midnight


async def test_replay_accepts_every_event(replayed: Replayed, expected: Expected) -> None:
    s = replayed.summary
    assert s.events == len(replayed.events) == expected.events
    assert (s.accepted, s.duplicates) == (expected.events, 0)
    assert s.batches == math.ceil(expected.events / 1000)
    # The replay's speed is a bench figure, not an assertion (timed assertions fail on a busy machine).
    print(f"{replayed.kind}: replay took {replayed.seconds:.0f} s")


async def test_every_day_matches_the_file(replayed: Replayed, expected: Expected) -> None:
    table = await _table(replayed, "day", MONTH_START, MONTH_END)
    assert sorted(table) == [datetime(d.year, d.month, d.day, tzinfo=ZONE).isoformat() for d in DAYS]
    for d in DAYS:
        key = datetime(d.year, d.month, d.day, tzinfo=ZONE).isoformat()
        assert_kpis(table[key], expected.days[d].kpis(), f"[{replayed.kind}] {d}")


async def test_month_matches_the_file(replayed: Replayed, expected: Expected) -> None:
    table = await _table(replayed, "month", MONTH_START, MONTH_END)
    assert list(table) == [MONTH_START.isoformat()]
    assert_kpis(table[MONTH_START.isoformat()], expected.month.kpis(), f"[{replayed.kind}] 1999-08")
    # The month is the merge of its days (merged counts, not averaged ratios).
    assert table[MONTH_START.isoformat()]["offered"] == sum(expected.days[d].kpis()["offered"] for d in DAYS)


async def test_one_queue_one_day_matches_the_file(replayed: Replayed, expected: Expected) -> None:
    start = datetime(PS_DAY.year, PS_DAY.month, PS_DAY.day, tzinfo=ZONE)
    table = await _table(replayed, "day", start, start + timedelta(days=1), {"queue": "PS"})
    assert list(table) == [start.isoformat()]
    want = expected.ps_days[PS_DAY].kpis()
    assert want["offered"] < expected.days[PS_DAY].kpis()["offered"]  # the filter really filters
    assert_kpis(table[start.isoformat()], want, f"[{replayed.kind}] {PS_DAY} queue=PS")


async def test_posting_the_file_again_changes_nothing(replayed: Replayed, expected: Expected) -> None:
    before = await _table(replayed, "day", MONTH_START, MONTH_END)
    began = time.monotonic()
    again = await replay_events(
        replayed.events,
        replayed.url,
        speed=None,
        batch_size=1000,
        api_key=replayed.keys.ingest["anonymous-bank"],
    )
    print(f"\n[{replayed.kind}] re-posted {again.events} events in {time.monotonic() - began:.1f} s")
    assert (again.accepted, again.duplicates) == (0, expected.events)
    after = await _table(replayed, "day", MONTH_START, MONTH_END)
    assert after == before
    month = await _table(replayed, "month", MONTH_START, MONTH_END)
    assert_kpis(month[MONTH_START.isoformat()], expected.month.kpis(), f"[{replayed.kind}] 1999-08 after re-post")


# ---------------------------------------------------------------------------------------------
# Issue 3 acceptance: the scheduler (on an injected clock) cuts all 31 days and the month; the
# snapshots equal the file; late events restate. These run last: they add late events.

CUT_CLOCK = datetime(1999, 9, 1, 0, 20, tzinfo=ZONE)  # after the 00:05 daily and 00:15 monthly cuts


async def _get(srv: Replayed, path: str, **params) -> httpx.Response:
    async with keyed_client(srv, timeout=120) as client:
        return await client.get(path, params=params)


async def test_scheduler_cuts_every_day_and_the_month(replayed: Replayed, expected: Expected) -> None:
    from app.metrics.calendar import to_us

    service = replayed.app.state.runtime.snapshots
    assert (await _get(replayed, "/api/v1/snapshots/contact-centre/day/1999-08-10")).status_code == 404
    before_end = await service.run_due(to_us(datetime(1999, 8, 31, 23, 0, tzinfo=ZONE)))
    assert [(g, p) for s, g, p, c in before_end if s == "contact-centre"][-1] == ("day", "1999-08-30")
    done = await service.run_due(to_us(CUT_CLOCK))
    cc = [(g, p, created) for s, g, p, created in done if s == "contact-centre"]
    assert cc == [("day", "1999-08-31", True), ("month", "1999-08", True)]
    again = await service.run_due(to_us(CUT_CLOCK))  # idempotent
    assert [c for s, g, p, c in again if s == "contact-centre"] == []
    month_counts = defaultdict(int)
    for day in DAYS:
        snap = (await _get(replayed, f"/api/v1/snapshots/contact-centre/day/{day.isoformat()}")).json()
        assert snap["version"] == 1 and snap["status"] == "final"
        assert snap["period"]["start"] == datetime(day.year, day.month, day.day, tzinfo=ZONE).isoformat()
        assert snap["reconciliation"]["ok"] is True, snap["reconciliation"]
        assert_kpis({k: v["value"] for k, v in snap["kpis"].items()}, expected.days[day].kpis(), f"snapshot {day}")
        for name in COUNTS:
            month_counts[name] += snap["kpis"][name]["value"]
    month = (await _get(replayed, "/api/v1/snapshots/contact-centre/month/1999-08")).json()
    assert_kpis({k: v["value"] for k, v in month["kpis"].items()}, expected.month.kpis(), "month snapshot")
    assert {n: month["kpis"][n]["value"] for n in COUNTS} == dict(month_counts)
    assert month["reconciliation"]["ok"] is True, month["reconciliation"]
    assert {c["name"] for c in month["reconciliation"]["checks"]} == {"rollups_vs_raw", "month_vs_days"}
    recon = (await _get(replayed, "/api/v1/reconciliation/contact-centre/month/1999-08")).json()
    assert recon["ok"] is True and recon["mismatches"] == []


async def test_late_events_restate_the_day_and_the_month(replayed: Replayed, expected: Expected) -> None:
    from app.metrics.calendar import to_us

    service = replayed.app.state.runtime.snapshots
    day_path = "/api/v1/snapshots/contact-centre/day/1999-08-10"
    first = (await _get(replayed, day_path)).json()
    late = []
    for i in range(3):  # three late calls at 10:0i, answered after 5 s, and one abandoned
        t = datetime(1999, 8, 10, 10, i, tzinfo=ZONE)
        dims = {"queue": "PS", "priority": "1", "call": f"LATE-{i}"}
        late.append(
            {
                "id": f"LATE-{i}:call.answered",
                "source": "anonymous-bank",
                "type": "call.answered",
                "ts": t.isoformat(),
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
    async with keyed_client(replayed, timeout=60) as client:
        assert (await client.post("/api/v1/events", json=late)).status_code == 202
    recon = (await _get(replayed, "/api/v1/reconciliation/contact-centre/month/1999-08")).json()
    assert recon["ok"] is False
    causes = {m["kpi"]: m["cause"] for m in recon["mismatches"]}
    assert causes["offered"] == "late data: 4 events arrived after version 1 was cut"
    restated = await service.restate_pending(to_us(datetime(1999, 9, 1, 9, 0, tzinfo=ZONE)))
    assert sorted((r.grain, r.period, r.version) for r in restated if r.dashboard == "contact-centre") == [
        ("day", "1999-08-10", 2),
        ("month", "1999-08", 2),
    ]
    now = (await _get(replayed, day_path)).json()
    assert now["version"] == 2 and now["status"] == "restated" and now["late_events"] == 4
    assert now["cause"] == "late events: 4 arrived after version 1 was cut"
    assert now["kpis"]["offered"]["value"] == first["kpis"]["offered"]["value"] + 4
    assert now["changes"]["offered"]["difference"] == 4
    assert now["changes"]["abandoned"]["difference"] == 1
    v1 = (await _get(replayed, day_path, version=1)).json()
    assert v1 == first  # the original stays readable, unchanged
    versions = (await _get(replayed, day_path + "/versions")).json()["versions"]
    assert [(v["version"], v["status"], v["cause"]) for v in versions] == [
        (1, "final", None),
        (2, "restated", "late events: 4 arrived after version 1 was cut"),
    ]
    month = (await _get(replayed, "/api/v1/snapshots/contact-centre/month/1999-08")).json()
    assert month["version"] == 2 and month["kpis"]["offered"]["value"] == expected.month.kpis()["offered"] + 4
    assert month["reconciliation"]["ok"] is True  # month v2 agrees with the restated days
    after = (await _get(replayed, "/api/v1/reconciliation/contact-centre/month/1999-08")).json()
    assert after["ok"] is True, after["mismatches"]
