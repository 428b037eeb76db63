"""Acceptance: the PCIC 2021 wireless alarms (``data/noc-alarms``), replayed whole at --speed max
through the HTTP API into each store (zone Europe/Paris, origin 2021-01-01T00:00:00Z), give the
``noc`` KPIs a straightforward computation from the CSV gives: alarms raised per local day,
MTTR per alarm type and month, availability per device per day (a 23-hour day included) and over
the whole span (merged from months), open alarms and the alarm list at 20 instants.

The expected values are computed here with ``csv`` alone (no import of ``app.replay``), from the
mapping documented in ``app/replay/pcic.py``: raise at origin + start s, clear at origin + end s,
no severity (every alarm service-affecting), device = device_id, type = alarm_id.
Counts exact; means 1e-9 relative; availability exact to the microsecond of downtime.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest
import pytest_asyncio

from tests.conftest import IN_CI, keyed_client
from tests.helpers import PCIC_ALARMS
from tests.noc_common import ZONE, Replayed, availability, down_seconds, local_day_bounds, replay_into, series

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ORIGIN = datetime(2021, 1, 1, tzinfo=UTC)
AFTER_ALL = datetime(2022, 1, 1, tzinfo=UTC)
SPAN_START = datetime(2021, 1, 1, tzinfo=ZONE)
SPAN_END = datetime(2021, 9, 1, tzinfo=ZONE)
DST_DAY = date(2021, 3, 28)  # 23 hours in Europe/Paris
DEVICES_PER_DAY = ("28", "37", "5")


@dataclass(frozen=True)
class Alarm:
    key: str
    device: str
    type: str
    raised: datetime
    cleared: datetime


@dataclass
class Expected:
    alarms: list[Alarm] = field(default_factory=list)

    def raised_per_day(self) -> dict[date, int]:
        out: dict[date, int] = defaultdict(int)
        for a in self.alarms:
            out[a.raised.astimezone(ZONE).date()] += 1
        return out

    def intervals(self, device: str | None = None) -> list[tuple[datetime, datetime]]:
        return [(a.raised, a.cleared) for a in self.alarms if device is None or a.device == device]

    def open_at(self, at: datetime) -> list[Alarm]:
        return [a for a in self.alarms if a.raised <= at < a.cleared]


def expected_from_file() -> Expected:
    exp = Expected()
    with gzip.open(PCIC_ALARMS, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            start, end = int(row["start_timestamp"]), int(row["end_timestamp"])
            exp.alarms.append(
                Alarm(
                    f"{row['device_id']}-{row['alarm_id']}-{start}",
                    row["device_id"],
                    row["alarm_id"],
                    ORIGIN + timedelta(seconds=start),
                    ORIGIN + timedelta(seconds=end),
                )
            )
    return exp


def _need_the_file() -> None:
    if not PCIC_ALARMS.is_file():
        (pytest.fail if IN_CI else pytest.skip)(f"the PCIC alarms are not at {PCIC_ALARMS}")


@pytest.fixture(scope="module")
def expected() -> Expected:
    _need_the_file()
    return expected_from_file()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def replayed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from app.replay.pcic import map_file  # the code under test

    _need_the_file()
    events, _ = map_file(PCIC_ALARMS, ORIGIN)
    async for srv in replay_into(request.param, tmp_path_factory.mktemp("pcic"), events, "pcic2021", AFTER_ALL):
        yield srv


def _days() -> list[date]:
    d, out = SPAN_START.date(), []
    while d < SPAN_END.date():
        out.append(d)
        d += timedelta(days=1)
    return out


async def test_expected_values_are_sane(expected: Expected) -> None:
    """The reference computation against SOURCE.md's figures."""
    assert len(expected.alarms) == 34_838
    assert sum(a.raised == a.cleared for a in expected.alarms) == 977
    assert len({a.device for a in expected.alarms}) == 55
    assert all(a.cleared >= a.raised for a in expected.alarms)


async def test_replay_accepts_every_event(replayed: Replayed, expected: Expected) -> None:
    s = replayed.summary
    assert (s.events, s.accepted, s.duplicates) == (2 * 34_838, 2 * 34_838, 0)


async def test_alarms_raised_per_day(replayed: Replayed, expected: Expected) -> None:
    points = await series(replayed, "alarms_raised", "day", SPAN_START, SPAN_END)
    want = expected.raised_per_day()
    days = _days()
    assert [p["start"] for p in points] == [datetime(d.year, d.month, d.day, tzinfo=ZONE).isoformat() for d in days]
    assert [p["value"] for p in points] == [want.get(d, 0) for d in days]
    assert sum(p["value"] for p in points) == 34_838
    cleared = await series(replayed, "alarms_cleared", "month", SPAN_START, SPAN_END)
    assert sum(p["value"] for p in cleared) == 34_838


async def test_mttr_per_alarm_type_and_month(replayed: Replayed, expected: Expected) -> None:
    types = sorted({a.type for a in expected.alarms}, key=int)
    assert len(types) == 18
    months = [datetime(2021, m, 1, tzinfo=ZONE) for m in range(1, 10)]
    for kind in types:
        points = await series(replayed, "mttr_s", "month", SPAN_START, SPAN_END, {"type": kind})
        for p, lo, hi in zip(points, months[:-1], months[1:], strict=True):
            durations = [
                (a.cleared - a.raised).total_seconds()
                for a in expected.alarms
                if a.type == kind and lo <= a.cleared < hi
            ]
            if not durations:
                assert p["value"] is None, (kind, lo)
                continue
            assert p["components"]["cleared_count"] == len(durations), (kind, lo)
            assert math.isclose(p["value"], sum(durations) / len(durations), rel_tol=1e-9), (kind, lo)
    # No acknowledge in this source: MTTA is undefined, not 0.
    assert all(p["value"] is None for p in await series(replayed, "mtta_s", "month", SPAN_START, SPAN_END))


async def test_mttr_p90_whole_span(replayed: Replayed, expected: Expected) -> None:
    points = await series(
        replayed, "mttr_p90_s", "month", datetime(2021, 3, 1, tzinfo=ZONE), datetime(2021, 4, 1, tzinfo=ZONE)
    )
    lo, hi = datetime(2021, 3, 1, tzinfo=ZONE), datetime(2021, 4, 1, tzinfo=ZONE)
    durations = sorted((a.cleared - a.raised).total_seconds() for a in expected.alarms if lo <= a.cleared < hi)
    p90 = durations[math.ceil(0.9 * len(durations)) - 1]
    assert math.isclose(points[0]["value"], p90, rel_tol=0.01)


async def test_availability_per_device_per_day(replayed: Replayed, expected: Expected) -> None:
    days = _days()
    assert DST_DAY in days
    for device in DEVICES_PER_DAY:
        intervals = expected.intervals(device)
        points = await series(replayed, "availability_ratio", "day", SPAN_START, SPAN_END, {"device": device})
        assert len(points) == len(days)
        for d, p in zip(days, points, strict=True):
            start, end = local_day_bounds(d)
            span = (end - start).total_seconds()
            assert p["components"]["span_s_sum"] == span, (device, d)
            assert p["components"]["covered_s_sum"] == down_seconds(intervals, start, end), (device, d)
            assert math.isclose(p["value"], availability(intervals, start, end), rel_tol=1e-9, abs_tol=1e-12)
        dst = points[days.index(DST_DAY)]
        assert dst["components"]["span_s_sum"] == 23 * 3600
    # the devices really differ (the filter filters), and some day really had downtime
    assert len({down_seconds(expected.intervals(d), SPAN_START, SPAN_END) for d in DEVICES_PER_DAY}) == 3


async def test_availability_per_device_whole_span(replayed: Replayed, expected: Expected) -> None:
    """Months merged into the whole span (covered and span seconds add up), for all 55 devices."""
    devices = sorted({a.device for a in expected.alarms}, key=int)
    for device in devices:
        points = await series(replayed, "availability_ratio", "month", SPAN_START, SPAN_END, {"device": device})
        covered = sum(p["components"]["covered_s_sum"] for p in points)
        span = sum(p["components"]["span_s_sum"] for p in points)
        want = down_seconds(expected.intervals(device), SPAN_START, SPAN_END)
        assert span == (SPAN_END.astimezone(UTC) - SPAN_START.astimezone(UTC)).total_seconds()
        assert abs(covered - want) < 1e-6, (device, covered, want)
    total = await series(replayed, "availability_ratio", "month", SPAN_START, SPAN_END)
    covered = sum(p["components"]["covered_s_sum"] for p in total)
    assert abs(covered - down_seconds(expected.intervals(), SPAN_START, SPAN_END)) < 1e-6  # any device down


def _instants(expected: Expected) -> list[datetime]:
    """20 instants: 17 spread over the span, a raise instant, a clear instant, a zero-length alarm's."""
    step = (SPAN_END.astimezone(UTC) - SPAN_START.astimezone(UTC)) / 18
    spread = [SPAN_START.astimezone(UTC) + step * (i + 1) for i in range(17)]
    spread = [t.replace(second=0, microsecond=0) for t in spread]  # whole minutes: read as minute series too
    a = expected.alarms[1234]
    zero = next(x for x in expected.alarms if x.raised == x.cleared)
    return [*spread, a.raised, a.cleared, zero.raised]


async def test_open_alarms_at_20_instants(replayed: Replayed, expected: Expected) -> None:
    instants = _instants(expected)
    assert len(instants) == 20
    for at in instants:
        want = expected.open_at(at)
        if at.second == 0 and at.microsecond == 0:  # a minute's gauge reading is at its end
            point = (await series(replayed, "open_alarms", "minute", at - timedelta(minutes=1), at))[0]
            assert point["end"] == at.astimezone(ZONE).isoformat()
            assert point["value"] == len(want), at
        replayed.clock.set(at)
        try:
            async with keyed_client(replayed, timeout=120) as client:
                r = await client.get("/api/v1/dashboards/noc")
        finally:
            replayed.clock.set(AFTER_ALL)
        tiles = r.json()["tiles"]
        assert tiles["open_now"]["value"] == len(want)
        assert tiles["affecting_now"]["value"] == len(want)  # no severity: every alarm is service-affecting
        alarm_list = tiles["alarm_list"]
        assert alarm_list["kind"] == "alarm_list" and alarm_list["value"] == len(want)
        order = sorted(want, key=lambda x: (x.raised, x.key))[:12]  # no severity: oldest first
        assert [row["alarm"] for row in alarm_list["alarms"]] == [x.key for x in order]
        for row, alarm in zip(alarm_list["alarms"], order, strict=True):
            assert row["device"] == alarm.device and row["type"] == alarm.type and row["severity"] is None
            assert datetime.fromisoformat(row["raised_at"]) == alarm.raised
            assert row["acknowledged"] is False
        oldest = min((x.raised for x in want), default=None)
        longest = tiles["longest_open_now"]["value"]
        assert longest == ((at - oldest).total_seconds() if oldest else 0.0)
