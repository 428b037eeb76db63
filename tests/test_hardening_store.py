"""Issue 10, hardening round 2, the store side: each attack reproduced and its right answer
asserted (status, body, what is stored, other clients unaffected), on SQLite and PostgreSQL.

Items: 1 (huge values / NaN poisoning, group isolation), 2 (instants outside the supported
range; scheduled jobs that keep going), 6 (gzip streams), 10 (late data, catch-up horizon),
11 (extreme dates: 422; every 5xx problem+json), 12 (year-1 month labels), 17 (cardinality cap),
18 (restatement coalescing, ingest keys bound to packs).  The rows are listed in
``tests/test_bad_inputs.py``'s table (rows R2-...).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from app.clock import ManualClock
from app.ingest.parse import Limits, parse_events
from app.metrics.calendar import to_us
from app.store.reads import event_count
from tests.helpers import PACKS_DIR, strict_json

JSON = {"content-type": "application/json"}
NOW = datetime(2024, 7, 1, 1, 0, tzinfo=UTC)
NOW_US = to_us(NOW)


async def stored(srv) -> int:
    async with srv.runtime.engine.connect() as conn:
        return await event_count(conn)


def problem_of(resp, *statuses: int) -> dict:
    """The problem+json body of ``resp``, asserting its status is one of ``statuses``."""
    assert resp.status_code in statuses, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"] == "application/problem+json"
    body = strict_json(resp.text)
    assert body["status"] == resp.status_code and body["title"] and body["detail"]
    return body


def sample(i: int, value: float, ts: str = "2024-06-30T10:00:00Z", source: str = "default") -> dict:
    return {"type": "sample", "ts": ts, "id": f"e{i}", "source": source, "value": value}


async def minute_sums(srv) -> list[float]:
    async with srv.runtime.engine.connect() as conn:
        rows = await conn.execute(text("SELECT sum FROM rollup_minute UNION ALL SELECT sum FROM rollup_hour"))
        return [float(r[0]) for r in rows]


# --- 1: huge finite values, NaN poisoning ----------------------------------------------------------


async def test_item01_values_past_the_bound_are_422_and_the_bound_is_configurable(
    make_settings, start_server, client_for
):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))
    async with client_for(srv) as client:
        for value in (1.7e308, -1.7e308, 1e15 * (1 + 1e-12)):
            resp = await client.post("/api/v1/events", json=[sample(1, 1.0), sample(2, value)])
            body = problem_of(resp, 422)
            assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "value")]
            assert "PULSEBOARD_MAX_ABS_VALUE" in body["errors"][0]["message"]
        resp = await client.post("/api/v1/events", json=[sample(1, 1e15), sample(2, -1e15)])
        assert resp.status_code == 202 and resp.json() == {"accepted": 2, "duplicates": 0}
    assert await stored(srv) == 2
    small = await start_server(make_settings(packs_dir=PACKS_DIR, max_abs_value=100.0), clock=ManualClock(NOW))
    async with client_for(small) as client:
        assert (await client.post("/api/v1/events", json=sample(11, 100.0))).status_code == 202
        assert (
            problem_of(await client.post("/api/v1/events", json=sample(12, 100.5)), 422)["errors"][0]["field"]
            == "value"
        )
    assert await stored(small) == 3  # the same store: 2 before, 1 now


def _events(srv, body: list[dict]) -> list:
    limits = Limits(NOW_US, 300.0, None, 1024, 20, 10_000, max_abs_value=srv.settings.max_abs_value)
    import msgspec

    return parse_events(msgspec.json.encode(body), "application/json", limits)


async def test_item01_a_poisoning_request_fails_alone_in_its_group(make_settings, start_server, client_for):
    """With the bound off (an old configuration), two 1.7e308 in one minute overflow the sum: that
    request gets 422 and its 9 group mates are stored and answered 202, in one group; a second
    attacker whose value overflows the sum already stored (SQL side) also fails alone."""
    srv = await start_server(
        make_settings(packs_dir=PACKS_DIR, max_abs_value=1.7976931348623157e308), clock=ManualClock(NOW)
    )
    writer = srv.runtime.writer
    groups_before = writer.stats.groups
    legit = [_events(srv, [sample(100 + i, float(i))]) for i in range(9)]
    attack = _events(srv, [sample(1, 1.7e308), sample(2, 1.7e308)])
    requests = [*legit[:4], attack, *legit[4:]]
    results = await asyncio.gather(*(writer.submit(r) for r in requests), return_exceptions=True)
    assert writer.stats.groups == groups_before + 1, "the ten requests should have shared one group"
    for i, res in enumerate(results):
        if i == 4:
            assert type(res).__name__ == "InvalidEvents" and res.status == 422, res
            assert res.errors[0]["field"] == "value"
        else:
            assert not isinstance(res, BaseException), res
            assert res.accepted == 1
    assert writer.stats.failed_requests == 1
    assert await stored(srv) == 9
    # SQL side: one 1.7e308 is stored; the next one in the same minute would overflow the stored sum.
    first = await writer.submit(_events(srv, [sample(3, 1.7e308)]))
    assert first.accepted == 1
    results = await asyncio.gather(
        writer.submit(_events(srv, [sample(200, 1.0)])),
        writer.submit(_events(srv, [sample(4, 1.7e308)])),
        writer.submit(_events(srv, [sample(201, 2.0)])),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["RequestOutcome", "InvalidEvents", "RequestOutcome"], results
    sums = await minute_sums(srv)
    assert sums and all(math.isfinite(s) for s in sums), sums
    assert await stored(srv) == 12
    async with client_for(srv) as client:  # reads answer, with finite numbers
        resp = await client.get("/api/v1/dashboards/generic-wall")
        assert resp.status_code == 200
        resp = await client.get(
            "/api/v1/kpis/sample_count/series",
            params={"grain": "day", "start": "2024-06-30T00:00:00Z", "end": "2024-07-01T00:00:00Z"},
        )
        assert resp.status_code == 200 and resp.json()["points"][0]["value"] == 12


@pytest.mark.parametrize("bound", ["default", "off"])
async def test_item01_legitimate_requests_are_all_served_while_an_attacker_loops(
    make_settings, start_server, client_for, bound
):
    """The attack of the issue over HTTP: an attacker loops posting 1.7e308 pairs while 60 legitimate
    requests are posted concurrently.  Default bound: the attacker gets 422 at once; bound off: 422
    from the writer.  Either way 100 % of the legitimate requests get 202 (the issue saw 63 % 503)."""
    extra = {} if bound == "default" else {"max_abs_value": 1.7976931348623157e308}
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, **extra), clock=ManualClock(NOW))
    stop = asyncio.Event()
    attacker_statuses: list[int] = []
    async with client_for(srv) as client:

        async def attacker() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                body = [sample(10_000 + 2 * n, 1.7e308), sample(10_001 + 2 * n, 1.7e308)]
                attacker_statuses.append((await client.post("/api/v1/events", json=body)).status_code)

        async def legit(i: int) -> int:
            return (await client.post("/api/v1/events", json=sample(i, 1.0, source="anonymous-bank"))).status_code

        loop = asyncio.create_task(attacker())
        statuses = await asyncio.gather(*(legit(i) for i in range(60)))
        stop.set()
        await loop
    assert statuses.count(202) == 60, statuses
    assert attacker_statuses and set(attacker_statuses) == {422}, attacker_statuses
    assert await stored(srv) == 60
    assert all(math.isfinite(s) for s in await minute_sums(srv))


@pytest.mark.parametrize("poison", ["nan", "inf"])
async def test_item01_a_store_holding_non_finite_partials_is_flagged_never_a_500(
    make_settings, start_server, client_for, store_kind, poison
):
    """Partials written as NaN/inf by an older version: the dashboard, the series and the
    reconciliation answer 200 (KPI values null, the reconciliation naming the cause)."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))
    async with client_for(srv) as client:
        assert (await client.post("/api/v1/events", json=sample(1, 5.0))).status_code == 202
    # SQLite turns NaN into NULL, which the NOT NULL column refuses: there the poison is -inf.
    literal = {"postgresql": f"'{'NaN' if poison == 'nan' else 'Infinity'}'::float8", "sqlite": "9e999"}[store_kind]
    if store_kind == "sqlite" and poison == "nan":
        literal = "-9e999"
    async with srv.runtime.engine.begin() as conn:
        for table in ("rollup_minute", "rollup_hour"):
            await conn.execute(text(f"UPDATE {table} SET sum = {literal} WHERE measure = 'generic/sample'"))
    async with client_for(srv) as client:
        resp = await client.get("/api/v1/dashboards/generic-wall")
        assert resp.status_code == 200, resp.text
        tiles = strict_json(resp.text)["tiles"]
        assert tiles["mean_today"]["value"] is None or math.isfinite(tiles["mean_today"]["value"])
        resp = await client.get(
            "/api/v1/kpis/sample_mean/series",
            params={"grain": "day", "start": "2024-06-30T00:00:00Z", "end": "2024-07-01T00:00:00Z"},
        )
        assert resp.status_code == 200, resp.text
        point = strict_json(resp.text)["points"][0]
        assert point["value"] is None and point["components"]["sample_sum"] is None
        resp = await client.get("/api/v1/reconciliation/generic-wall/day/2024-06-30")
        assert resp.status_code == 200, resp.text
        found = strict_json(resp.text)
        causes = [m["cause"] for m in found["mismatches"]]
        assert any("non-finite partial" in c for c in causes), found
        # New events for that minute are refused (422), never stored on top of the poison; others go on.
        resp = await client.post("/api/v1/events", json=sample(2, 1.0))
        assert resp.status_code in (202, 422), resp.text
        resp = await client.post("/api/v1/events", json=sample(3, 1.0, ts="2024-06-30T11:00:00Z"))
        assert resp.status_code == 202, resp.text


# --- 2: instants outside the supported range; scheduled jobs go on past a failure -------------------


async def test_item02_instants_outside_the_supported_range_are_422(make_settings, start_server, client_for):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))
    async with client_for(srv) as client:
        for ts in (
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59-01:00",
        ):
            body = problem_of(await client.post("/api/v1/events", json=[sample(1, 1.0), sample(2, 1.0, ts=ts)]), 422)
            assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "ts")], (ts, body)
            assert "supported range [1970-01-01T00:00:00Z, 2100-01-01T00:00:00Z)" in body["errors"][0]["message"]
        resp = await client.post("/api/v1/events", json=sample(3, 1.0, ts="1970-01-01T00:00:00Z"))
        assert resp.status_code == 202, resp.text
    assert await stored(srv) == 1
    narrow = await start_server(
        make_settings(packs_dir=PACKS_DIR, min_event_time="2024-01-01T00:00:00+02:00"), clock=ManualClock(NOW)
    )
    async with client_for(narrow) as client:
        body = problem_of(await client.post("/api/v1/events", json=sample(4, 1.0, ts="2023-12-31T21:59:59Z")), 422)
        assert "[2023-12-31T22:00:00Z, 2100-01-01T00:00:00Z)" in body["errors"][0]["message"]
        assert (await client.post("/api/v1/events", json=sample(5, 1.0, ts="2023-12-31T22:00:00Z"))).status_code == 202


async def test_item02_one_ancient_stored_period_fails_its_dashboard_only(make_settings, start_server, client_for):
    """Snapshots of year 1 stored by an older version (a day and a month ``1-01``, inserted here as
    it wrote them): the cuts and restatements of their dashboard (contact-centre, scheduled first)
    fail, are counted and shown on its wall's notice strip; every other dashboard is still cut
    and restated, and the next passes go on."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))
    async with client_for(srv) as client:
        assert (await client.post("/api/v1/events", json=sample(1, 2.0))).status_code == 202
    ancient_us = to_us(datetime(1, 1, 1, tzinfo=UTC)) - 3_600_000_000  # 0001-01-01T00:00+01:00
    async with srv.runtime.engine.begin() as conn:
        for grain, label in (("day", "0001-01-01"), ("month", "1-01")):
            await conn.execute(
                text(
                    "INSERT INTO snapshot (id, dashboard, grain, period, version, period_start_us, period_end_us, tz, "
                    "cut_at_us, status, event_seq_max, late_events, kpis) VALUES (:id, 'contact-centre', :g, :p, 1, "
                    ":s, :e, 'Europe/Lisbon', 0, 'final', 0, 0, '{}')"
                ),
                {"id": f"old{grain}", "g": grain, "p": label, "s": ancient_us - 86_400_000_000, "e": ancient_us},
            )
    service = srv.runtime.snapshots
    done = await service.run_due(NOW_US)
    assert ("generic-wall", "day", "2024-06-30", True) in done
    assert ("generic-wall", "month", "2024-06", True) in done
    assert not [d for d in done if d[0] == "contact-centre"]
    assert service.job_failures[("contact-centre", "cut")] == 2  # day and month
    notices = service.job_notices("contact-centre")
    assert [n["kind"] for n in notices] == ["job_failed", "job_failed"]
    assert "scheduled cut of days due failed (OverflowError)" in notices[0]["text"]
    assert service.job_notices("generic-wall") == []
    hub = srv.runtime.hub
    channel = hub.channels["contact-centre"]
    await hub.refresh(channel)
    assert [n["kind"] for n in channel.notices] == ["job_failed", "job_failed"]
    # a late event for generic-wall: its restatement is made although contact-centre's fail
    async with client_for(srv) as client:
        assert (await client.post("/api/v1/events", json=sample(2, 3.0))).status_code == 202
    restated = await service.restate_pending(NOW_US)
    assert [(r.dashboard, r.grain, r.period, r.version) for r in restated] == [
        ("generic-wall", "day", "2024-06-30", 2),
        ("generic-wall", "month", "2024-06", 2),
    ]
    assert service.job_failures[("contact-centre", "restate")] == 2  # each period on its own
    assert len(service.job_notices("contact-centre")) == 4
    again = await service.run_due(NOW_US)  # the next pass: nothing new to cut, the failure counted again
    assert [d for d in again if d[3]] == []
    assert service.job_failures[("contact-centre", "cut")] == 4


# --- 6: gzip bodies: every member, complete streams only --------------------------------------------


def _ndjson(first: int, n: int) -> bytes:
    return b"".join(
        b'{"type":"sample","ts":"2024-06-30T10:00:00Z","id":"g%d","value":1}\n' % i for i in range(first, first + n)
    )


async def test_item06_gzip_members_all_decoded_incomplete_streams_refused(make_settings, start_server, client_for):
    import gzip
    import zlib

    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))
    gz = {"content-type": "application/x-ndjson", "content-encoding": "gzip"}
    whole = gzip.compress(_ndjson(0, 1000))
    flusher = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    flushed = flusher.compress(_ndjson(0, 600)) + flusher.flush(zlib.Z_SYNC_FLUSH)  # no final block, no trailer
    corrupt_crc = whole[:-8] + bytes([whole[-8] ^ 0xFF]) + whole[-7:]
    refused = {
        "flushed, unfinished": flushed,
        "trailer cut": whole[:-8],
        "trailer half cut": whole[:-3],
        "trailing garbage": whole + b"garbage",
        "trailing zeros": whole + b"\0" * 16,
        "bad CRC-32": corrupt_crc,
        "bad length": whole[:-4] + (1001).to_bytes(4, "little"),
        "second member cut": gzip.compress(_ndjson(0, 500)) + gzip.compress(_ndjson(500, 500))[:-8],
        "empty": b"",
    }
    async with client_for(srv) as client:
        for what, body in refused.items():
            problem = problem_of(await client.post("/api/v1/events", content=body, headers=gz), 400)
            assert "gzip" in problem["detail"] and "nothing was stored" in problem["detail"], (what, problem)
        assert await stored(srv) == 0
        two = gzip.compress(_ndjson(0, 500)) + gzip.compress(_ndjson(500, 500))
        resp = await client.post("/api/v1/events", content=two, headers=gz)
        assert resp.status_code == 202 and resp.json() == {"accepted": 1000, "duplicates": 0}, resp.text
        resp = await client.post("/api/v1/events", content=gzip.compress(_ndjson(1000, 3)), headers=gz)
        assert resp.status_code == 202 and resp.json()["accepted"] == 3
    assert await stored(srv) == 1003
    small = await start_server(make_settings(packs_dir=PACKS_DIR, max_body_bytes=10_000), clock=ManualClock(NOW))
    async with client_for(small) as client:  # the bomb limit counts every member together
        members = b"".join(gzip.compress(_ndjson(2000 + 100 * i, 100)) for i in range(3))
        resp = await client.post("/api/v1/events", content=members, headers=gz)
        assert resp.status_code == 413, resp.text


# --- 11: extreme but valid dates are 422 problem+json; every 5xx is problem+json ---------------------

EXTREME = ("0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "1899-12-31T23:59:59Z")


async def test_item11_extreme_dates_are_422_problems_in_series_snapshots_reconciliation_cuts(
    make_settings, start_server, client_for
):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))
    async with client_for(srv) as client:
        assert (await client.post("/api/v1/events", json=sample(1, 1.0))).status_code == 202
        for instant in EXTREME:
            for name, params in (
                ("start", {"start": instant, "end": "2024-07-01T00:00:00Z"}),
                ("end", {"start": "2024-06-01T00:00:00Z", "end": instant}),
            ):
                resp = await client.get("/api/v1/kpis/sample_count/series", params={"grain": "month", **params})
                body = problem_of(resp, 422)
                assert body["errors"][0]["field"] == name and "supported calendar" in body["errors"][0]["message"]
        for grain, label in (("day", "0001-01-01"), ("month", "0001-01"), ("day", "9999-12-31"), ("month", "9999-12")):
            for path in (
                f"/api/v1/snapshots/generic-wall/{grain}/{label}",
                f"/api/v1/snapshots/generic-wall/{grain}/{label}/versions",
                f"/api/v1/reconciliation/generic-wall/{grain}/{label}",
            ):
                body = problem_of(await client.get(path), 422)
                assert body["errors"] == [{"field": "period", "message": body["detail"]}], (path, body)
            resp = await client.post("/api/v1/snapshots/generic-wall/cut", json={"grain": grain, "period": label})
            assert problem_of(resp, 422)["title"] == "Period out of range"
        # the server goes on: a normal read and cut still answer
        resp = await client.post("/api/v1/snapshots/generic-wall/cut", json={"grain": "day", "period": "2024-06-30"})
        assert resp.status_code == 201 and resp.json()["kpis"]["sample_count"]["value"] == 1


async def test_item11_an_unexpected_error_is_a_500_problem_without_internals(make_settings):
    """Any exception no handler answers: 500 problem+json (the real app's handlers, a real server)."""
    from app.main import create_app
    from tests.conftest import serve

    app = create_app(make_settings(packs_dir=PACKS_DIR))

    async def boom() -> None:
        raise RuntimeError("internal detail: /secret/path")

    app.add_api_route("/api/v1/boom-for-test", boom)
    server, task, url = await serve(app, app.state.settings)
    try:
        import httpx

        async with httpx.AsyncClient(base_url=url) as client:
            resp = await client.get("/api/v1/boom-for-test")
        body = problem_of(resp, 500)
        assert body["title"] == "Internal server error" and "secret" not in resp.text
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


# --- 12: month labels are zero-padded ---------------------------------------------------------------


def test_item12_month_labels_are_zero_padded_for_every_year():
    from zoneinfo import ZoneInfo

    from app.metrics.calendar import month_period

    assert month_period(1, 1, ZoneInfo("UTC")).label == "0001-01"
    assert month_period(999, 7, ZoneInfo("UTC")).label == "0999-07"
    assert month_period(2024, 2, ZoneInfo("Europe/Lisbon")).label == "2024-02"


async def test_item12_a_stored_month_label_is_readable_by_the_api(make_settings, start_server, client_for):
    srv = await start_server(
        make_settings(packs_dir=PACKS_DIR, min_event_time="1900-01-01T00:00:00Z"), clock=ManualClock(NOW)
    )
    async with client_for(srv) as client:
        resp = await client.post("/api/v1/events", json=sample(1, 1.0, ts="1900-03-10T10:00:00Z"))
        assert resp.status_code == 202, resp.text
        resp = await client.post("/api/v1/snapshots/generic-wall/cut", json={"grain": "month", "period": "1900-03"})
        assert resp.status_code == 201 and resp.json()["period"]["label"] == "1900-03"
        resp = await client.get("/api/v1/snapshots/generic-wall/month/1900-03")
        assert resp.status_code == 200 and resp.json()["kpis"]["sample_count"]["value"] == 1
    async with srv.runtime.engine.connect() as conn:
        labels = [r[0] for r in await conn.execute(text("SELECT period FROM snapshot WHERE grain = 'month'"))]
    assert labels == ["1900-03"]


# --- 10: late data by one set-based query; catch-up from a horizon ---------------------------------


async def test_item10_catch_up_starts_at_the_horizon_not_at_a_1970_event(make_settings, start_server, client_for):
    srv = await start_server(
        make_settings(packs_dir=PACKS_DIR, snapshot_catchup_horizon_days=10), clock=ManualClock(NOW)
    )
    async with client_for(srv) as client:
        resp = await client.post(
            "/api/v1/events",
            json=[sample(1, 1.0, ts="1970-01-01T00:00:00Z"), sample(2, 1.0, ts="2024-06-25T10:00:00Z")],
        )
        assert resp.status_code == 202
    done = await srv.runtime.snapshots.run_due(NOW_US)
    mine = [(g, p) for slug, g, p, created in done if slug == "generic-wall" and created]
    assert mine == [*(("day", f"2024-06-{d}") for d in range(21, 31)), ("month", "2024-06")]
    async with srv.runtime.engine.connect() as conn:
        oldest = (
            await conn.execute(text("SELECT min(period) FROM snapshot WHERE dashboard = 'generic-wall'"))
        ).scalar()
    assert oldest == "2024-06"  # the month; the oldest day is 2024-06-21, no 1970 period anywhere


async def test_item10_late_data_is_found_by_a_constant_number_of_queries(make_settings, start_server, client_for):
    """The statements a restatement pass runs do not grow with the snapshots kept (the issue saw
    one query per snapshot: 10.1 s a tick at 14,283 snapshots), and late events are still found."""
    from sqlalchemy import event as sa_event

    # Without the notification loops: a cut wakes distribution, whose queries would be counted too.
    srv = await start_server(
        make_settings(packs_dir=PACKS_DIR, snapshot_catchup_horizon_days=10, notify_enabled=False),
        clock=ManualClock(NOW),
    )
    async with client_for(srv) as client:
        body = [sample(d, 1.0, ts=f"2024-06-{d:02d}T10:00:00Z") for d in range(1, 31)]
        assert (await client.post("/api/v1/events", json=body)).status_code == 202
    service = srv.runtime.snapshots
    await service.run_due(NOW_US)  # 10 days and June
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    sync_engine = srv.runtime.engine.sync_engine
    sa_event.listen(sync_engine, "before_cursor_execute", count)
    try:
        assert await service.restate_pending(NOW_US) == []  # first pass: definitions compared too
        first_pass = len(statements)
        per_pass = []
        for days in (range(11, 21), range(1, 11)):  # 10 then 20 more day snapshots
            for d in days:
                await service.cut_period("generic-wall", "day", f"2024-06-{d:02d}", NOW_US)
            statements.clear()
            assert await service.restate_pending(NOW_US) == []
            per_pass.append(len(statements))
        async with client_for(srv) as client:  # late events for an old and a recent day
            late = [sample(100, 5.0, ts="2024-06-03T12:00:00Z"), sample(101, 5.0, ts="2024-06-27T12:00:00Z")]
            assert (await client.post("/api/v1/events", json=late)).status_code == 202
        restated = await service.restate_pending(NOW_US)
    finally:
        sa_event.remove(sync_engine, "before_cursor_execute", count)
    dashboards = len(service.targets)
    assert per_pass[0] == per_pass[1] == 2 * dashboards, (per_pass, first_pass)  # watermark + one query each
    # the first pass also compares definitions (one more query each; PostgreSQL may add a session set-up)
    assert 3 * dashboards <= first_pass <= 3 * dashboards + 2
    assert sorted((r.grain, r.period, r.version) for r in restated) == [
        ("day", "2024-06-03", 2),
        ("day", "2024-06-27", 2),
        ("month", "2024-06", 2),
    ]


# --- 17: cardinality cap per rolled-up dimension -----------------------------------------------------


async def test_item17_values_past_the_cap_roll_up_as_other(make_settings, start_server, client_for):
    settings = make_settings(packs_dir=PACKS_DIR, max_dim_values=3)
    srv = await start_server(settings, clock=ManualClock(NOW))
    day = {"grain": "day", "start": "2024-06-30T00:00:00Z", "end": "2024-07-01T00:00:00Z"}

    def ev(i: int, host: str) -> dict:
        return {**sample(i, 1.0), "dims": {"host": host}}

    async with client_for(srv) as client:
        body = [ev(i, f"h{i}") for i in range(10)] + [ev(10, "h1")]
        assert (await client.post("/api/v1/events", json=body)).status_code == 202

        async def count(host: str) -> int:
            resp = await client.get("/api/v1/kpis/sample_count/series", params={**day, "dims.host": host})
            assert resp.status_code == 200, resp.text
            return resp.json()["points"][0]["value"]

        assert [await count(h) for h in ("h0", "h1", "h2", "__other__")] == [1, 2, 1, 7]
        problem = problem_of(
            await client.get("/api/v1/kpis/sample_count/series", params={**day, "dims.host": "h7"}), 422
        )
        assert problem["errors"][0]["field"] == "dims.host" and "__other__" in problem["errors"][0]["message"]
    async with srv.runtime.engine.connect() as conn:
        keys = sorted(
            r[0]
            for r in await conn.execute(
                text("SELECT DISTINCT dim_key FROM rollup_minute WHERE measure = 'generic/sample'")
            )
        )
        raw_hosts = {r[0] for r in await conn.execute(text("SELECT dims FROM event"))}
    assert keys == ["", "host=__other__", "host=h0", "host=h1", "host=h2"]
    assert len(raw_hosts) == 10  # raw events keep their true values
    await srv.stop()
    again = await start_server(settings, clock=ManualClock(NOW))  # the cap's values are reloaded from the store
    async with client_for(again) as client:
        body = [ev(20, "h2"), ev(21, "h99")]
        assert (await client.post("/api/v1/events", json=body)).status_code == 202
        resp = await client.get("/api/v1/kpis/sample_count/series", params={**day, "dims.host": "h2"})
        assert resp.json()["points"][0]["value"] == 2
        resp = await client.get("/api/v1/kpis/sample_count/series", params={**day, "dims.host": "__other__"})
        assert resp.json()["points"][0]["value"] == 8


# --- 18: restatements coalesced per period -----------------------------------------------------------


async def test_item18_late_events_every_minute_make_one_version_per_interval(make_settings, start_server, client_for):
    """An ingest key posting one late event a minute into a cut day: the first restatement is made
    at once, later ones at most once per ``restate_min_interval_s`` (here 600 s), carrying every
    late event since; other periods are not held back."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, restate_min_interval_s=600), clock=ManualClock(NOW))
    service = srv.runtime.snapshots
    async with client_for(srv) as client:
        assert (await client.post("/api/v1/events", json=sample(0, 1.0))).status_code == 202
        await service.run_due(NOW_US)
        versions: list[tuple[int, int]] = []  # (minute, version made)
        for minute in range(12):
            resp = await client.post("/api/v1/events", json=sample(100 + minute, 1.0, ts="2024-06-30T12:00:00Z"))
            assert resp.status_code == 202
            for row in await service.restate_pending(NOW_US + minute * 60_000_000):
                if row.grain == "day":
                    versions.append((minute, row.version))
        resp = await client.get("/api/v1/snapshots/generic-wall/day/2024-06-30")
        latest = resp.json()
    assert versions == [(0, 2), (10, 3)]  # 12 late minutes: 2 versions, not 12
    assert service.restatements_coalesced >= 9
    assert latest["version"] == 3 and latest["kpis"]["sample_count"]["value"] == 12  # minutes 0-10 counted
    assert srv.settings.restate_min_interval_s == 600


# --- 20: reconciliation errors ----------------------------------------------------------------------


async def test_item20_reconciliation_is_404_only_for_no_such_period_and_500_without_internals_otherwise(
    make_settings, start_server, client_for
):
    """A stored snapshot row that does not decode (an internal error, a ValueError inside) is a 500
    problem+json without the decoder's message; an impossible date or an unknown dashboard is 404;
    a period not cut yet is reconciled (200) with its snapshot checks skipped."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))
    async with client_for(srv) as client:
        assert (await client.post("/api/v1/events", json=sample(1, 1.0))).status_code == 202
        resp = await client.get("/api/v1/reconciliation/generic-wall/day/2024-06-30")
        assert resp.status_code == 200, resp.text
        assert {"name": "snapshot_vs_current", "ok": None, "detail": "skipped: not cut yet"} in resp.json()["checks"]
        for path in (
            "/api/v1/reconciliation/generic-wall/day/2024-02-30",
            "/api/v1/reconciliation/no-such-wall/day/2024-06-30",
        ):
            assert problem_of(await client.get(path), 404)["title"] == "Not found", path
        resp = await client.post("/api/v1/snapshots/generic-wall/cut", json={"grain": "day", "period": "2024-06-30"})
        assert resp.status_code == 201
        from sqlalchemy import select

        from app.store.schema import snapshot

        async with srv.runtime.engine.begin() as conn:  # rows are immutable: a newer version that does not decode
            row = (await conn.execute(select(snapshot).where(snapshot.c.period == "2024-06-30"))).mappings().one()
            await conn.execute(
                snapshot.insert(), {**row, "id": "f" * 32, "version": row["version"] + 1, "kpis": "{not json"}
            )
        resp = await client.get("/api/v1/reconciliation/generic-wall/day/2024-06-30")
        body = problem_of(resp, 500)
        assert body["title"] == "Internal server error"
        assert "JSON" not in resp.text and "not json" not in resp.text and "line 1" not in resp.text
        # the other periods still reconcile
        resp = await client.get("/api/v1/reconciliation/generic-wall/day/2024-06-29")
        assert resp.status_code == 200 and resp.json()["period"] == "2024-06-29"
