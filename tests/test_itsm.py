"""Acceptance: the ServiceNow incident event log (``data/itsm-incident-log``), replayed
whole at --speed max through the HTTP API into each store, gives for every day of March
2016 and for the month the incident KPIs that a straightforward computation from the CSV
itself gives; plus the open/active incident gauges at each day's end and on the ``itsm``
dashboard; plus ``pulseboard replay itsm-incident-log`` on a small slice.

The expected values are computed here from the CSV with ``csv`` alone (no import of
``app.replay.itsm``), following the mapping documented there:

* one incident = its last row in the file; times are ``D/M/YYYY HH:MM`` taken as UTC;
* opened at ``opened_at``; resolved at ``resolved_at`` when present and not before
  ``opened_at``, with resolution time ``resolved_at - opened_at`` in seconds; closed at
  ``closed_at`` when the last row's state is ``Closed`` (and not before ``opened_at``);
* ``open_incidents`` at instant T: opened at or before T, neither resolved nor closed by T;
  ``active_incidents``: opened at or before T and not closed by T.

Counts must match exactly; means and ratios within 1e-9 relative; the p90 within the
sketch's 1 %.
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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from click.testing import CliRunner

from app.cli import main
from app.clock import ManualClock
from app.config import Settings
from app.main import create_app
from app.replay.client import replay_events
from tests.conftest import IN_CI, PG_URL, TestKeys, _drop_pg_schema, keyed_client, make_test_keys, pg_available, serve
from tests.helpers import ITSM_LOG

LOG = ITSM_LOG
UTC = UTC
DAYS = [date(2016, 3, d) for d in range(1, 32)]
MONTH_START = datetime(2016, 3, 1, tzinfo=UTC)
MONTH_END = datetime(2016, 4, 1, tzinfo=UTC)
PRIORITIES = ("1 - Critical", "2 - High", "3 - Moderate", "4 - Low")
MAX_OPEN = timedelta(seconds=34_560_000)  # the pack's max_open_s (400 days)
AFTER_ALL = datetime(2017, 3, 1, tzinfo=UTC)  # the server's wall clock while posting: after every event
DASHBOARD_AT = datetime(2016, 3, 24, 12, 0, tzinfo=UTC)  # a busy closing day (3,114 closures)


# ---------------------------------------------------------------------------------------------
# The expected values, from the file.


def _when(text: str) -> datetime | None:
    return None if text == "?" else datetime.strptime(text, "%d/%m/%Y %H:%M").replace(tzinfo=UTC)


@dataclass(frozen=True)
class Incident:
    number: str
    priority: str
    made_sla: bool
    opened: datetime
    resolved: datetime | None
    closed: datetime | None

    @property
    def ttr_s(self) -> float | None:
        return None if self.resolved is None else (self.resolved - self.opened).total_seconds()


@dataclass
class Tally:
    opened: int = 0
    resolved: int = 0
    closed: int = 0
    ttr_sum: float = 0.0
    made_sla: int = 0
    ttrs: list[float] = field(default_factory=list)

    def kpis(self) -> dict[str, float | None]:
        return {
            "incidents_opened": self.opened,
            "incidents_resolved": self.resolved,
            "incidents_closed": self.closed,
            "mttr_s": self.ttr_sum / self.resolved if self.resolved else None,
            "resolved_within_sla_ratio": self.made_sla / self.resolved if self.resolved else None,
        }

    def p90(self) -> float | None:
        if not self.ttrs:
            return None
        ordered = sorted(self.ttrs)
        return ordered[math.ceil(0.9 * len(ordered)) - 1]  # nearest rank


KPIS = ("incidents_opened", "incidents_resolved", "incidents_closed", "mttr_s", "resolved_within_sla_ratio")
COUNTS = ("incidents_opened", "incidents_resolved", "incidents_closed")


@dataclass
class Expected:
    rows: int
    incidents: list[Incident]
    days: dict[date, Tally] = field(default_factory=lambda: defaultdict(Tally))
    month: Tally = field(default_factory=Tally)
    month_by_priority: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))

    @property
    def events(self) -> int:
        return sum(1 + (i.resolved is not None) + (i.closed is not None) for i in self.incidents)

    def open_at(self, at: datetime, priority: str | None = None) -> int:
        """Opened at or before ``at``, neither resolved nor closed by then (first close ends it)."""
        return sum(
            1
            for i in self.incidents
            if (priority is None or i.priority == priority)
            and at - MAX_OPEN < i.opened <= at
            and all(t is None or t > at for t in (i.resolved, i.closed))
        )

    def active_at(self, at: datetime) -> int:
        """Opened at or before ``at`` and not closed by then."""
        return sum(1 for i in self.incidents if at - MAX_OPEN < i.opened <= at and (i.closed is None or i.closed > at))

    def open_until_last_close_at(self, at: datetime) -> int:
        """What a gauge that keeps the *latest* close of an item would say (see the gauge test)."""
        return sum(
            1
            for i in self.incidents
            if at - MAX_OPEN < i.opened <= at
            and (max((t for t in (i.resolved, i.closed) if t is not None), default=None) or AFTER_ALL) > at
        )


def expected_from_file(path: Path) -> Expected:
    last: dict[str, dict[str, str]] = {}
    rows = 0
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            rows += 1
            last[row["number"]] = row
    incidents = []
    for number, row in last.items():
        opened = _when(row["opened_at"])
        assert opened is not None, number
        resolved = _when(row["resolved_at"])
        if resolved is not None and resolved < opened:
            resolved = None
        closed = _when(row["closed_at"]) if row["incident_state"] == "Closed" else None
        if closed is not None and closed < opened:
            closed = None
        incidents.append(Incident(number, row["priority"], row["made_sla"] == "true", opened, resolved, closed))
    exp = Expected(rows, incidents)
    for inc in incidents:

        def tallies(at: datetime, priority: str = inc.priority) -> list[Tally]:
            out = [exp.days[at.date()]]
            if MONTH_START <= at < MONTH_END:
                out += [exp.month, exp.month_by_priority[priority]]
            return out

        for t in tallies(inc.opened):
            t.opened += 1
        if inc.resolved is not None:
            for t in tallies(inc.resolved):
                t.resolved += 1
                t.ttr_sum += inc.ttr_s
                t.ttrs.append(inc.ttr_s)
                t.made_sla += inc.made_sla
        if inc.closed is not None:
            for t in tallies(inc.closed):
                t.closed += 1
    return exp


def _need_the_file() -> None:
    if not LOG.is_file():
        message = f"the incident log is not at {LOG} (data/ of the repository)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def expected() -> Expected:
    _need_the_file()
    return expected_from_file(LOG)


def assert_kpis(found: dict[str, object], want: dict[str, float | None], where: str) -> None:
    for name, exp in want.items():
        got = found[name]
        if exp is None:
            assert got is None, f"{where} {name}: expected null, got {got!r}"
        elif name in COUNTS:
            assert got == exp, f"{where} {name}: expected {exp}, got {got!r}"
        else:
            assert got is not None and math.isclose(got, exp, rel_tol=1e-9, abs_tol=0.0), (
                f"{where} {name}: expected {exp!r}, got {got!r}"
            )


def _settings_kw(**kw) -> dict:
    if "snapshots_enabled" in Settings.model_fields:
        kw["snapshots_enabled"] = False  # this module checks the replay and the reads, not scheduled cuts
    return kw


# ---------------------------------------------------------------------------------------------
# One replay of the whole file per store, shared by the tests of this module.


@dataclass
class Replayed:
    kind: str
    url: str
    clock: ManualClock
    events: list[dict]
    summary: object
    seconds: float
    keys: TestKeys


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def replayed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A server (tz UTC, wall clock after every event) on a fresh store of each kind, with the
    whole incident log replayed at max speed."""
    from app.replay.itsm import load_events  # the code under test: turns the file into events

    kind = request.param
    _need_the_file()
    kw = _settings_kw(data_dir=tmp_path_factory.mktemp(f"itsm-{kind}") / "var", tz="UTC")
    if kind == "postgresql":
        if not pg_available():
            if IN_CI:
                pytest.fail(f"PostgreSQL is required in CI but does not answer at {PG_URL}")
            pytest.skip(f"no PostgreSQL at {PG_URL}")
        kw["database_url"] = PG_URL
        kw["db_schema"] = f"pb_test_itsm_{secrets.token_hex(4)}"
    settings = Settings(**kw)
    clock = ManualClock(AFTER_ALL)
    app = create_app(settings, clock=clock)
    server, task, url = await serve(app, settings)
    keys = await make_test_keys(app)
    try:
        events = load_events(LOG)
        began = time.monotonic()
        summary = await replay_events(
            events, url, speed=None, batch_size=1000, api_key=keys.ingest["itsm-incident-log"]
        )
        seconds = time.monotonic() - began
        print(f"\n[{kind}] replayed {summary.events} events in {seconds:.1f} s ({summary.events_per_s:.0f}/s)")
        yield Replayed(kind, url, clock, events, summary, seconds, keys)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        if kind == "postgresql":
            _drop_pg_schema(settings.db_schema)


async def _series(
    srv: Replayed, kpi: str, grain: str, start: datetime, end: datetime, dims: dict[str, str] | None = None
) -> list[dict]:
    params = {"grain": grain, "start": start.isoformat(), "end": end.isoformat(), "pack": "itsm"}  # noc has mttr_s too
    params.update({f"dims.{k}": v for k, v in (dims or {}).items()})
    async with keyed_client(srv, timeout=120) as client:
        r = await client.get(f"/api/v1/kpis/{kpi}/series", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tz"] == "UTC"
    return body["points"]


async def _table(
    srv: Replayed, grain: str, kpis: tuple[str, ...], dims: dict[str, str] | None = None
) -> dict[str, dict[str, object]]:
    """period start (ISO) -> {kpi: value} over March 2016."""
    out: dict[str, dict[str, object]] = defaultdict(dict)
    for kpi in kpis:
        for point in await _series(srv, kpi, grain, MONTH_START, MONTH_END, dims):
            out[point["start"]][kpi] = point["value"]
    return out


def _day_key(d: date) -> str:
    return datetime(d.year, d.month, d.day, tzinfo=UTC).isoformat()


# ---------------------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_expected_values_are_sane(expected: Expected) -> None:
    """The reference computation itself, against the figures of SOURCE.md."""
    assert expected.rows == 119_998
    assert len(expected.incidents) == 20_769
    assert sum(i.resolved is None for i in expected.incidents) == 1_418  # Closed without resolved_at
    assert sum(i.closed is None for i in expected.incidents) == 1  # INC0029233, cut off after 'New'
    assert expected.days[date(2016, 3, 24)].closed == 3_114
    assert set(DAYS) <= set(expected.days)
    assert all(expected.days[d].opened > 0 for d in DAYS)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_replay_accepts_every_event(replayed: Replayed, expected: Expected) -> None:
    s = replayed.summary
    assert s.events == len(replayed.events) == expected.events == 60_888
    assert (s.accepted, s.duplicates) == (expected.events, 0)
    assert s.batches == math.ceil(expected.events / 1000)
    # The replay's speed is a bench figure, not an assertion (timed assertions fail on a busy machine).
    print(f"{replayed.kind}: replay took {replayed.seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_every_day_of_march_matches_the_file(replayed: Replayed, expected: Expected) -> None:
    table = await _table(replayed, "day", KPIS)
    assert sorted(table) == [_day_key(d) for d in DAYS]
    for d in DAYS:
        assert_kpis(table[_day_key(d)], expected.days[d].kpis(), f"[{replayed.kind}] {d}")


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_march_matches_the_file(replayed: Replayed, expected: Expected) -> None:
    table = await _table(replayed, "month", KPIS + ("mttr_p90_s",))
    key = MONTH_START.isoformat()
    assert list(table) == [key]
    assert_kpis(table[key], expected.month.kpis(), f"[{replayed.kind}] 2016-03")
    for name in COUNTS:  # the month is the merge of its days
        assert table[key][name] == sum(expected.days[d].kpis()[name] for d in DAYS)
    p90 = expected.month.p90()
    assert math.isclose(table[key]["mttr_p90_s"], p90, rel_tol=0.01), (table[key]["mttr_p90_s"], p90)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_march_mttr_per_priority_matches_the_file(replayed: Replayed, expected: Expected) -> None:
    assert sum(expected.month_by_priority[p].resolved for p in PRIORITIES) == expected.month.resolved
    for priority in PRIORITIES:
        want = expected.month_by_priority[priority]
        assert want.resolved > 0
        table = await _table(
            replayed, "month", ("mttr_s", "incidents_resolved", "incidents_opened"), {"priority": priority}
        )
        found = table[MONTH_START.isoformat()]
        assert found["incidents_resolved"] == want.resolved, priority
        assert found["incidents_opened"] == want.opened, priority
        assert math.isclose(found["mttr_s"], want.ttr_sum / want.resolved, rel_tol=1e-9), (
            f"[{replayed.kind}] 2016-03 priority={priority}: mttr {found['mttr_s']!r} vs {want.ttr_sum / want.resolved!r}"
        )
    # The priorities really differ (the filter filters).
    means = {p: expected.month_by_priority[p].ttr_sum / expected.month_by_priority[p].resolved for p in PRIORITIES}
    assert len({round(m) for m in means.values()}) == len(PRIORITIES)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_active_incidents_at_every_day_end(replayed: Replayed, expected: Expected) -> None:
    """The gauge read at each day's end (``series`` reads gauges at the period end)."""
    points = await _series(replayed, "active_incidents", "day", MONTH_START, MONTH_END)
    assert [p["start"] for p in points] == [_day_key(d) for d in DAYS]
    for d, point in zip(DAYS, points, strict=True):
        end = datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1)
        assert point["value"] == expected.active_at(end), f"[{replayed.kind}] active at {end}"


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_open_incidents_at_every_day_end(replayed: Replayed, expected: Expected) -> None:
    """Open = neither resolved nor closed: the first of the two closes ends an incident."""
    points = await _series(replayed, "open_incidents", "day", MONTH_START, MONTH_END)
    ends = [datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1) for d in DAYS]
    found = [p["value"] for p in points]
    want = [expected.open_at(e) for e in ends]
    assert want != [expected.open_until_last_close_at(e) for e in ends]  # the two readings differ here
    assert found == want
    critical = await _series(
        replayed, "open_incidents", "day", MONTH_END - timedelta(days=1), MONTH_END, {"priority": "1 - Critical"}
    )
    assert critical[0]["value"] == expected.open_at(MONTH_END, "1 - Critical")


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_itsm_dashboard_at_an_instant(replayed: Replayed, expected: Expected) -> None:
    """GET /api/v1/dashboards/itsm with the clock at 2016-03-24 12:00 UTC."""
    replayed.clock.set(DASHBOARD_AT)
    try:
        async with keyed_client(replayed, timeout=60) as client:
            r = await client.get("/api/v1/dashboards/itsm")
    finally:
        replayed.clock.set(AFTER_ALL)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tz"] == "UTC" and body["as_of"] == DASHBOARD_AT.isoformat()
    tiles = body["tiles"]
    day = expected.days[DASHBOARD_AT.date()].kpis()
    month = expected.month.kpis()
    crit = expected.month_by_priority["1 - Critical"]
    high = expected.month_by_priority["2 - High"]
    assert tiles["opened_today"]["value"] == day["incidents_opened"]
    assert tiles["resolved_today"]["value"] == day["incidents_resolved"]
    assert tiles["closed_today"]["value"] == day["incidents_closed"] == 3_114
    assert tiles["opened_month"]["value"] == month["incidents_opened"]
    assert tiles["resolved_month"]["value"] == month["incidents_resolved"]
    assert math.isclose(tiles["mttr_month"]["value"], month["mttr_s"], rel_tol=1e-9)
    assert math.isclose(tiles["mttr_critical_month"]["value"], crit.ttr_sum / crit.resolved, rel_tol=1e-9)
    assert math.isclose(tiles["mttr_high_month"]["value"], high.ttr_sum / high.resolved, rel_tol=1e-9)
    assert math.isclose(tiles["sla_month"]["value"], month["resolved_within_sla_ratio"], rel_tol=1e-9)
    assert tiles["active_now"]["value"] == expected.active_at(DASHBOARD_AT)
    # RAG from the pack's target (3 days) and amber band (2 days): March's MTTR is about 4.2 days.
    mttr = month["mttr_s"]
    assert tiles["mttr_month"]["status"] == ("green" if mttr <= 259_200 else "amber" if mttr <= 432_000 else "red")
    assert tiles["mttr_month"]["target"] == 259_200
    open_now = tiles["open_now"]["value"]
    assert open_now == expected.open_at(DASHBOARD_AT)
    assert tiles["open_critical_now"]["value"] == expected.open_at(DASHBOARD_AT, "1 - Critical")


# ---------------------------------------------------------------------------------------------
# The CLI on a small slice.

SLICE_HEADER = (
    "number,incident_state,active,reassignment_count,reopen_count,sys_mod_count,made_sla,caller_id,"
    "opened_by,opened_at,sys_created_by,sys_created_at,sys_updated_by,sys_updated_at,contact_type,"
    "location,category,subcategory,u_symptom,cmdb_ci,impact,urgency,priority,assignment_group,"
    "assigned_to,knowledge,u_priority_confirmation,notify,problem_id,rfc,vendor,caused_by,closed_code,"
    "resolved_by,resolved_at,closed_at"
)


def _row(
    number: str,
    state: str,
    mod: int,
    made_sla: str,
    opened: str,
    updated: str,
    priority: str,
    group: str,
    resolved: str,
    closed: str,
    category: str = "Category 9",
) -> str:
    return (
        f"{number},{state},{'false' if state == 'Closed' else 'true'},0,0,{mod},{made_sla},Caller 1,"
        f"Opened by  1,{opened},?,?,Updated by 1,{updated},Phone,Location 1,{category},Subcategory 1,"
        f"Symptom 1,?,2 - Medium,2 - Medium,{priority},{group},?,false,false,Do Not Notify,?,?,?,?,"
        f"code 1,Resolved by 1,{resolved},{closed}"
    )


def small_log(path: Path) -> Path:
    """Four incidents: a plain one (priority and group change on the last row), one Closed
    without resolved_at, one resolved before it was opened (dirty), one still New."""
    lines = [
        SLICE_HEADER,
        _row(
            "INC1",
            "New",
            0,
            "true",
            "1/3/2016 08:00",
            "1/3/2016 08:00",
            "4 - Low",
            "Group 1",
            "1/3/2016 10:30",
            "6/3/2016 11:00",
        ),
        _row(
            "INC1",
            "Resolved",
            1,
            "true",
            "1/3/2016 08:00",
            "1/3/2016 10:30",
            "4 - Low",
            "Group 1",
            "1/3/2016 10:30",
            "6/3/2016 11:00",
        ),
        _row(
            "INC1",
            "Closed",
            2,
            "false",
            "1/3/2016 08:00",
            "6/3/2016 11:00",
            "2 - High",
            "Group 2",
            "1/3/2016 10:30",
            "6/3/2016 11:00",
        ),
        _row(
            "INC2",
            "New",
            0,
            "true",
            "2/3/2016 23:59",
            "2/3/2016 23:59",
            "3 - Moderate",
            "?",
            "?",
            "10/3/2016 12:00",
            category="?",
        ),
        _row(
            "INC2",
            "Closed",
            1,
            "true",
            "2/3/2016 23:59",
            "10/3/2016 12:00",
            "3 - Moderate",
            "?",
            "?",
            "10/3/2016 12:00",
            category="?",
        ),
        _row(
            "INC3",
            "Closed",
            3,
            "true",
            "5/3/2016 09:00",
            "7/3/2016 09:00",
            "3 - Moderate",
            "Group 1",
            "4/3/2016 09:00",
            "7/3/2016 09:00",
        ),
        _row(
            "INC4",
            "New",
            0,
            "true",
            "12/3/2016 07:05",
            "12/3/2016 07:05",
            "1 - Critical",
            "Group 3",
            "13/3/2016 07:05",
            "20/3/2016 07:05",
        ),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def summary_of(stdout: str) -> dict[str, float]:
    lines = stdout.splitlines()
    assert "replay done" in lines, stdout
    return {name: float(value) for name, value in (ln.split() for ln in lines[lines.index("replay done") + 1 :])}


async def test_cli_replays_a_small_log(make_settings, start_server, tmp_path: Path) -> None:
    log = small_log(tmp_path / "slice.csv")
    srv = await start_server(make_settings(**_settings_kw(tz="UTC")))
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        [
            "replay",
            "itsm-incident-log",
            str(log),
            "--url",
            srv.url,
            "--api-key",
            srv.keys.ingest["itsm-incident-log"],
            "--speed",
            "max",
            "--batch-size",
            "3",
            "--no-progress",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    # opened x4; resolved: INC1 and INC4 (INC2 has no resolved_at, INC3 resolved before opened);
    # closed: INC1, INC2, INC3 (INC4 never reached Closed).
    s = summary_of(result.stdout)
    assert (s["events"], s["accepted"], s["duplicates"], s["batches"]) == (9, 9, 0, 3)
    assert "2 without resolved_at" not in result.stderr and "1 without resolved_at" in result.stderr
    assert "1 with resolved_at before opened_at" in result.stderr
    assert "1 not Closed on their last row" in result.stderr

    async with keyed_client(srv, timeout=30) as c:

        async def month(kpi: str, **dims: str) -> dict:
            params = {
                "grain": "month",
                "start": MONTH_START.isoformat(),
                "end": MONTH_END.isoformat(),
                "pack": "itsm",  # a bare name the noc pack defines too is refused (issue 11)
                **{f"dims.{k}": v for k, v in dims.items()},
            }
            r = await c.get(f"/api/v1/kpis/{kpi}/series", params=params)
            assert r.status_code == 200, r.text
            return r.json()["points"][0]

        assert (await month("incidents_opened"))["value"] == 4
        assert (await month("incidents_resolved"))["value"] == 2
        assert (await month("incidents_closed"))["value"] == 3
        assert (await month("mttr_s"))["value"] == (2.5 * 3600 + 24 * 3600) / 2
        # INC1's last row says 2 - High, Group 2, made_sla false.
        assert (await month("mttr_s", priority="2 - High"))["value"] == 2.5 * 3600
        assert (await month("incidents_opened", priority="4 - Low"))["value"] == 0
        assert (await month("incidents_opened", assignment_group="Group 2"))["value"] == 1
        assert (await month("incidents_opened", assignment_group="unassigned"))["value"] == 1  # INC2
        assert (await month("resolved_within_sla_ratio"))["value"] == 0.5
        r = await c.get(
            "/api/v1/kpis/incidents_opened/series",
            params={"grain": "day", "start": "2016-03-02T00:00:00Z", "end": "2016-03-04T00:00:00Z"},
        )
        assert [p["value"] for p in r.json()["points"]] == [1, 0]  # INC2 at 23:59 UTC on the 2nd
        r = await c.get(
            "/api/v1/kpis/active_incidents/series",
            params={"grain": "day", "start": "2016-03-12T00:00:00Z", "end": "2016-03-13T00:00:00Z"},
        )
        assert r.json()["points"][0]["value"] == 1  # INC4 (never Closed); INC1, INC3, INC2 closed 6th, 7th, 10th


def test_cli_names_a_malformed_row(tmp_path: Path) -> None:
    log = small_log(tmp_path / "slice.csv")
    lines = log.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace("6/3/2016 11:00", "2016-03-06 11:00")  # INC1's last row, closed_at
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["replay", "itsm-incident-log", str(log), "--url", "http://127.0.0.1:9", "--no-progress"]
    )
    assert result.exit_code == 1
    assert "line 4: column closed_at: expected D/M/YYYY HH:MM, got '2016-03-06 11:00'" in result.stderr
