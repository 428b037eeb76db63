"""Acceptance: GitHub's status-page incidents (``data/noc-alarms``), replayed whole at --speed max
into each store (zone Europe/Paris), give the ``noc`` KPIs a straightforward computation from the
two CSVs gives: alarms raised per month and per day, MTTR per severity and per alarm type, the
MTTA proxy, availability per service per day (23- and 25-hour days included) and over the whole
span, open alarms at 20 instants.

The expected values are computed here with ``csv`` alone (no import of ``app.replay``), from the
mapping documented in ``app/replay/github_status.py``: one incident alarm per incident (severity
from impact, untimed when created_at = resolved_at: raised and cleared at resolved_at, not in
MTTA/MTTR; ack = second_update_at), one component alarm per stretch of non-operational status of
a component during a timed incident (severity from the status; cleared back at operational or at
resolved_at), renamed components mapped, the pseudo-component skipped.  Service-affecting =
severity critical or major.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest
import pytest_asyncio

from tests.conftest import IN_CI, keyed_client
from tests.helpers import NOC
from tests.noc_common import ZONE, Replayed, down_seconds, local_day_bounds, replay_into, series

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

INCIDENTS, STATUSES = NOC / "github-incidents.csv", NOC / "github-component-status.csv"
AFTER_ALL = datetime(2024, 1, 1, tzinfo=UTC)
IMPACT = {"critical": "critical", "major": "major", "minor": "minor", "none": "warning"}
STATUS = {
    "major_outage": "critical",
    "partial_outage": "major",
    "degraded_performance": "minor",
    "under_maintenance": "warning",
}
RENAMED = {
    "GitHub Actions": "Actions",
    "GitHub Pages": "Pages",
    "GitHub Packages": "Packages",
    "Issues, PRs, Projects": "Issues, Pull Requests, Projects",
}
SKIPPED = "Visit www.githubstatus.com for more information"
AFFECTING = ("critical", "major")
SPAN_START = datetime(2010, 1, 1, tzinfo=ZONE)
SPAN_END = datetime(2023, 11, 1, tzinfo=ZONE)
DAYS_FROM, DAYS_TO = datetime(2021, 1, 1, tzinfo=ZONE), datetime(2022, 1, 1, tzinfo=ZONE)
SERVICES_PER_DAY = ("Git Operations", "Actions", "API Requests")


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Alarm:
    key: str
    type: str
    raised: datetime
    cleared: datetime
    severities: list[tuple[datetime, str]]  # (from, severity), the first at the raise
    timed: bool = True
    acked: datetime | None = None
    service: str | None = None

    def severity_at(self, at: datetime) -> str:
        return [s for t, s in self.severities if t <= at][-1]

    def affecting(self) -> list[tuple[datetime, datetime]]:
        bounds = [t for t, _ in self.severities] + [self.cleared]
        return [(a, b) for (a, s), b in zip(self.severities, bounds[1:], strict=True) if s in AFFECTING and b > a]


@dataclass
class Expected:
    alarms: list[Alarm] = field(default_factory=list)
    incidents: int = 0


def expected_from_files() -> Expected:
    exp = Expected()
    updates: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
    with STATUSES.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["component"] != SKIPPED:
                updates[row["incident_id"]].append(
                    (_t(row["update_at"]), RENAMED.get(row["component"], row["component"]), row["new_status"])
                )
    with INCIDENTS.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            exp.incidents += 1
            inc, severity = row["incident_id"], IMPACT[row["impact"]]
            started, resolved = _t(row["started_at"]), _t(row["resolved_at"])
            if row["created_at"] == row["resolved_at"] or resolved < started:
                exp.alarms.append(Alarm(inc, "incident", resolved, resolved, [(resolved, severity)], timed=False))
                continue
            ack = _t(row["second_update_at"]) if row["second_update_at"] else None
            if ack is not None:
                ack = max(ack, started)
                ack = ack if ack <= resolved else None  # an ack after the clear is none
            exp.alarms.append(Alarm(inc, "incident", started, resolved, [(started, severity)], acked=ack))
            per: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
            for at, component, status in updates.get(inc, []):
                per[component].append((max(at, started), status))
            for component, rows in per.items():
                current, n, alarm = "operational", 0, None
                for at, status in sorted(rows, key=lambda r: r[0]):
                    if at >= resolved or status == current:
                        continue
                    if current == "operational":
                        n += 1
                        key = f"{inc}/{component}" + (f"#{n}" if n > 1 else "")
                        alarm = Alarm(key, "component", at, resolved, [(at, STATUS[status])], service=component)
                        exp.alarms.append(alarm)
                    elif status == "operational":
                        alarm.cleared = at
                    else:
                        alarm.severities.append((at, STATUS[status]))
                    current = status
    return exp


def _need_the_files() -> None:
    if not (INCIDENTS.is_file() and STATUSES.is_file()):
        (pytest.fail if IN_CI else pytest.skip)(f"the GitHub status files are not in {NOC}")


@pytest.fixture(scope="module")
def expected() -> Expected:
    _need_the_files()
    return expected_from_files()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def replayed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from app.replay.github_status import map_paths  # the code under test

    _need_the_files()
    events, _ = map_paths([NOC])
    async for srv in replay_into(request.param, tmp_path_factory.mktemp("github"), events, "github-status", AFTER_ALL):
        yield srv


def _months(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    out, d = [], start
    while d < end:
        nxt = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=ZONE)
        out.append((d.astimezone(UTC), nxt.astimezone(UTC)))
        d = nxt
    return out


async def test_expected_values_are_sane(expected: Expected) -> None:
    incidents = [a for a in expected.alarms if a.type == "incident"]
    assert expected.incidents == len(incidents) == 1_282
    assert sum(not a.timed for a in incidents) == 839  # 832 imported before 2019-01-02 + 7 posted after the fact
    assert sum(not a.timed and a.raised < datetime(2019, 1, 2, tzinfo=UTC) for a in incidents) == 832
    components = [a for a in expected.alarms if a.type == "component"]
    assert len(components) > 100 and all(a.cleared >= a.raised for a in expected.alarms)
    assert any(len(a.severities) > 1 for a in components)  # severity changes become alarm.updated


async def test_replay_accepts_every_event(replayed: Replayed) -> None:
    s = replayed.summary
    assert s.accepted == s.events == len(replayed.events) and s.duplicates == 0


async def test_alarms_raised_per_month_and_day(replayed: Replayed, expected: Expected) -> None:
    months = _months(SPAN_START, SPAN_END)
    points = await series(replayed, "alarms_raised", "month", SPAN_START, SPAN_END)
    assert [p["value"] for p in points] == [sum(lo <= a.raised < hi for a in expected.alarms) for lo, hi in months]
    assert sum(p["value"] for p in points) == len(expected.alarms)
    incidents = await series(replayed, "alarms_raised", "month", SPAN_START, SPAN_END, {"type": "incident"})
    assert sum(p["value"] for p in incidents) == 1_282
    days = await series(replayed, "alarms_raised", "day", DAYS_FROM, DAYS_TO)
    assert len(days) == 365
    for p in days:
        lo, hi = local_day_bounds(datetime.fromisoformat(p["start"]).date())
        assert p["value"] == sum(lo <= a.raised < hi for a in expected.alarms), p["start"]


def _mttr(alarms: list[Alarm], lo: datetime, hi: datetime) -> tuple[int, float]:
    picked = [a for a in alarms if a.timed and lo <= a.cleared < hi]
    return len(picked), sum((a.cleared - a.raised).total_seconds() for a in picked)


async def test_mttr_per_severity_and_type(replayed: Replayed, expected: Expected) -> None:
    lo_all, hi_all = datetime(2019, 1, 1, tzinfo=ZONE), SPAN_END
    months = _months(lo_all, hi_all)
    checked = 0
    for dims, pick in [
        (
            {"severity": s},
            lambda a, s=s: (
                a.severity_at(a.cleared - timedelta(microseconds=1) if a.cleared > a.raised else a.raised) == s
            ),
        )
        for s in ("critical", "major", "minor", "warning")
    ] + [({"type": t}, lambda a, t=t: a.type == t) for t in ("incident", "component")]:
        points = await series(replayed, "mttr_s", "month", lo_all, hi_all, dims)
        chosen = [a for a in expected.alarms if pick(a)]
        for p, (lo, hi) in zip(points, months, strict=True):
            n, total = _mttr(chosen, lo, hi)
            if n == 0:
                assert p["value"] is None, (dims, lo)
                continue
            checked += 1
            assert p["components"]["cleared_count"] == n, (dims, lo)
            assert math.isclose(p["value"], total / n, rel_tol=1e-9), (dims, lo)
    assert checked > 60


async def test_mtta_proxy(replayed: Replayed, expected: Expected) -> None:
    """MTTA from the proxy (second_update_at), per incident severity, merged from months."""
    lo_all, hi_all = datetime(2019, 1, 1, tzinfo=ZONE), SPAN_END
    for severity in ("major", "minor", "warning"):
        points = await series(replayed, "mtta_s", "month", lo_all, hi_all, {"severity": severity})
        n = sum(p["components"]["acknowledged_count"] for p in points)
        total = sum(p["components"]["acknowledged_sum"] for p in points)
        acked = [a for a in expected.alarms if a.acked is not None and a.severities[0][1] == severity]
        assert n == len(acked) > 0, severity
        assert math.isclose(total / n, sum((a.acked - a.raised).total_seconds() for a in acked) / n, rel_tol=1e-9)


def _service_intervals(expected: Expected, service: str) -> list[tuple[datetime, datetime]]:
    return [iv for a in expected.alarms if a.service == service for iv in a.affecting()]


async def test_availability_per_service_per_day(replayed: Replayed, expected: Expected) -> None:
    spans = set()
    for service in SERVICES_PER_DAY:
        intervals = _service_intervals(expected, service)
        assert intervals, service
        points = await series(replayed, "availability_ratio", "day", DAYS_FROM, DAYS_TO, {"service": service})
        assert len(points) == 365
        for p in points:
            lo, hi = local_day_bounds(datetime.fromisoformat(p["start"]).date())
            span = (hi - lo).total_seconds()
            spans.add(span)
            down = down_seconds(intervals, lo, hi)
            assert p["components"]["span_s_sum"] == span
            assert abs(p["components"]["covered_s_sum"] - down) < 1e-6, (service, p["start"])
            assert math.isclose(p["value"], 1 - down / span, rel_tol=1e-9, abs_tol=1e-12)
    assert spans == {23 * 3600, 24 * 3600, 25 * 3600}


async def test_availability_per_service_whole_span(replayed: Replayed, expected: Expected) -> None:
    services = sorted({a.service for a in expected.alarms if a.service})
    for service in services:
        lo = datetime(2019, 1, 1, tzinfo=ZONE)  # before it every incident is untimed: no component alarms
        points = await series(replayed, "availability_ratio", "month", lo, SPAN_END, {"service": service})
        covered = sum(p["components"]["covered_s_sum"] for p in points)
        want = down_seconds(_service_intervals(expected, service), SPAN_START, SPAN_END)
        assert abs(covered - want) < 1e-6, service


async def test_open_alarms_at_20_instants(replayed: Replayed, expected: Expected) -> None:
    timed = [
        a for a in expected.alarms if a.type == "incident" and a.timed and a.cleared - a.raised > timedelta(hours=2)
    ]
    instants = [
        (a.raised + (a.cleared - a.raised) / 2).replace(second=0, microsecond=0)
        for a in timed[:: max(1, len(timed) // 20)]
    ][:20]
    assert len(instants) == 20
    for at in instants:
        want = [a for a in expected.alarms if a.raised <= at < a.cleared]
        point = (await series(replayed, "open_alarms", "minute", at - timedelta(minutes=1), at))[0]
        assert point["value"] == len(want), at
        replayed.clock.set(at)
        try:
            async with keyed_client(replayed, timeout=120) as client:
                tiles = (await client.get("/api/v1/dashboards/noc")).json()["tiles"]
        finally:
            replayed.clock.set(AFTER_ALL)
        rank = {"critical": 0, "major": 1, "minor": 2, "warning": 3, "indeterminate": 4}
        order = sorted(want, key=lambda a: (rank[a.severity_at(at)], a.raised, a.key))[:12]
        listed = tiles["alarm_list"]["alarms"]
        assert tiles["alarm_list"]["value"] == len(want)
        assert [r["alarm"] for r in listed] == [a.key for a in order], at
        assert [r["severity"] for r in listed] == [a.severity_at(at) for a in order]
        assert [r["service"] for r in listed] == [a.service for a in order]
        assert [r["acknowledged"] for r in listed] == [a.acked is not None and a.acked <= at for a in order]
        affecting = [a for a in want if a.severity_at(at) in AFFECTING]
        assert tiles["affecting_now"]["value"] == len(affecting)
        for severity in ("critical", "major", "minor", "warning"):
            assert tiles[f"open_{severity}_now"]["value"] == sum(a.severity_at(at) == severity for a in want)


async def test_day_helper() -> None:
    lo, hi = local_day_bounds(date(2021, 10, 31))
    assert (hi - lo) == timedelta(hours=25)
