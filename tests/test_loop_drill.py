"""Drill-down (issue 14, item 6) on both stores with real calls of August 1999: the events behind a
day's ``abandoned`` count are exactly that many, and exactly the file's abandoned calls of the day;
pages, CSV, a dimension filter, a ratio's numerator, and bad requests."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

import pytest

from app.clock import ManualClock
from tests.loop_data import SLUG, ZONE, abandoned_calls_from_file, events_of

DAY = date(1999, 8, 3)
START = datetime(1999, 8, 3, tzinfo=ZONE).isoformat()
END = datetime(1999, 8, 4, tzinfo=ZONE).isoformat()


@pytest.fixture
async def srv(make_settings, start_server):
    srv = await start_server(
        make_settings(tz="Asia/Jerusalem", drill_page_max_events=400),
        clock=ManualClock(datetime(1999, 8, 5, 1, 0, tzinfo=ZONE)),
    )
    edges = (datetime(1999, 8, 2, 22, tzinfo=ZONE).isoformat(), datetime(1999, 8, 4, 2, tzinfo=ZONE).isoformat())
    events = [  # the day, and two hours either side of it: the day's edges are tested
        e for e in events_of({date(1999, 8, 2), DAY, date(1999, 8, 4)}) if edges[0] <= e["ts"] < edges[1]
    ]
    async with _client(srv) as client:
        for i in range(0, len(events), 2000):
            assert (await client.post("/api/v1/events", json=events[i : i + 2000])).status_code == 202
    await srv.runtime.snapshots.run_due()
    return srv


def _client(srv):
    from tests.conftest import keyed_client

    return keyed_client(srv, timeout=60)


async def _all_pages(client, kpi: str, limit: int, **params) -> tuple[list[dict], int]:
    events, pages, after = [], 0, None
    while True:
        query = {"start": START, "end": END, "limit": limit, **params}
        if after:
            query["after"] = after
        resp = await client.get(f"/api/v1/kpis/{kpi}/events", params=query)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["count"] == len(body["events"]) <= limit
        events += body["events"]
        pages += 1
        after = body["next"]
        if after is None:
            return events, pages


async def test_abandoned_events_of_a_day_are_the_files_abandoned_calls(srv):
    async with _client(srv) as client:
        snap = (await client.get(f"/api/v1/snapshots/{SLUG}/day/{DAY}")).json()
        count = snap["kpis"]["abandoned"]["value"]
        expected = abandoned_calls_from_file()[DAY]
        assert count == len(expected) > 100
        events, pages = await _all_pages(client, "abandoned", 37)
        assert len(events) == count and pages >= count // 37
        assert sorted(e["dims"]["call"] for e in events) == sorted(expected)
        assert {e["type"] for e in events} == {"call.abandoned"} and all(e["measures"] == ["abandoned"] for e in events)
        assert [(e["ts"], e["seq"]) for e in events] == sorted((e["ts"], e["seq"]) for e in events)
        assert len({e["seq"] for e in events}) == count  # no event twice across pages
        assert all(START <= e["ts"] < END for e in events)
        # The cell's freshness: the newest of those events, and how many there are.
        cell = snap["kpis"]["abandoned"]["freshness"]
        newest = max(datetime.fromisoformat(e["ts"]) for e in events)
        assert cell["events"] == count and cell["watermark_us"] == int(newest.timestamp() * 1_000_000)
        assert cell["lag_at_end_s"] == (datetime(1999, 8, 4, tzinfo=ZONE) - newest).total_seconds()

        # CSV: the same events, one row each; each next page in a Link header.
        rows, url, params = (
            [],
            "/api/v1/kpis/abandoned/events",
            {"start": START, "end": END, "limit": 400, "format": "csv"},
        )
        while url:
            resp = await client.get(url, params=params)
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
            page = list(csv.DictReader(io.StringIO(resp.text)))
            assert len(page) <= 400
            rows += page
            link = resp.headers.get("link")
            url, params = (link.split(">", 1)[0].lstrip("<"), None) if link else (None, None)
            assert link is None or link.endswith('rel="next"')
        assert sorted(r["id"] for r in rows) == sorted(e["id"] for e in events)
        assert {r["measures"] for r in rows} == {"abandoned"}

        # A dimension filter: the PS queue's abandoned calls equal the series' PS value.
        series = await client.get(
            "/api/v1/kpis/abandoned/series",
            params={"grain": "day", "start": START, "end": END, "tz": "Asia/Jerusalem", "dims.queue": "PS"},
        )
        ps_count = series.json()["points"][0]["value"]
        ps, _ = await _all_pages(client, "abandoned", 400, **{"dims.queue": "PS"})
        assert len(ps) == ps_count > 0 and {e["dims"]["queue"] for e in ps} == {"PS"}
        bare, _ = await _all_pages(client, "abandoned", 400, queue="PS")
        assert [e["seq"] for e in bare] == [e["seq"] for e in ps]


async def test_ratio_events_tell_numerator_from_denominator(srv):
    async with _client(srv) as client:
        snap = (await client.get(f"/api/v1/snapshots/{SLUG}/day/{DAY}")).json()
        sl = snap["kpis"]["service_level_20s"]
        events, _ = await _all_pages(client, "service_level_20s", 400)
        within = [e for e in events if "answered_within_20s" in e["measures"]]
        offered = [e for e in events if {"answered", "abandoned"} & set(e["measures"])]
        assert len(offered) == snap["kpis"]["offered"]["value"]
        assert len(within) / len(offered) == pytest.approx(sl["value"], rel=1e-12)
        assert all(e["value"] <= 20 for e in within)


async def test_bad_drill_requests_say_what_is_wrong(srv):
    async with _client(srv) as client:
        base = {"start": START, "end": END}
        for params, field in (
            ({**base, "after": "nope"}, "after"),
            ({**base, "limit": 401}, "limit"),
            ({"start": END, "end": START}, "end"),
            ({**base, "limit": 0}, "limit"),
        ):
            resp = await client.get("/api/v1/kpis/abandoned/events", params=params)
            assert resp.status_code == 422, (params, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            assert field in {e["field"] for e in resp.json()["errors"]}, resp.json()
        assert (await client.get("/api/v1/kpis/nope/events", params=base)).status_code == 404
