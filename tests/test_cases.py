"""Field cases C1, C2, C3, C7, C8, C9, C10, C11 of shared/cases/CASES.md,
end to end (HTTP ingest -> store -> series reads) on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import PACKS_DIR, sample, series, strict_json


@pytest.fixture
def generic(make_settings, start_server):
    """Start a server with the generic test pack in zone ``tz``."""

    async def factory(tz: str):
        return await start_server(make_settings(tz=tz, packs_dir=PACKS_DIR))

    return factory


async def _post(client, events):
    resp = await client.post("/api/v1/events", json=events)
    assert resp.status_code == 202, resp.text
    return resp.json()


async def test_c1_fall_back_night_keeps_two_one_oclock_hours(generic, httpx_client):
    srv = await generic("America/Chicago")
    async with httpx_client(srv) as client:
        start = datetime(2022, 11, 6, 5, 0, tzinfo=UTC)
        events = [sample((start + timedelta(minutes=i)).isoformat(), 1) for i in range(1500)]
        assert (await _post(client, events))["accepted"] == 1500
        hours = await series(client, "sample_count", "hour", "2022-11-06T00:00:00-05:00", "2022-11-07T00:00:00-06:00")
        assert len(hours) == 25
        assert [p["value"] for p in hours] == [60] * 25
        labels = [p["start"] for p in hours]
        assert "2022-11-06T01:00:00-05:00" in labels and "2022-11-06T01:00:00-06:00" in labels
        day = await series(client, "sample_count", "day", "2022-11-06T00:00:00-05:00", "2022-11-07T00:00:00-06:00")
        assert [p["value"] for p in day] == [1500]
        assert sum(p["value"] for p in hours) == day[0]["value"]


async def test_c2_days_are_calendar_days(generic, httpx_client):
    srv = await generic("Europe/Athens")
    async with httpx_client(srv) as client:
        await _post(
            client, [sample("2022-10-29T09:00:00Z"), sample("2022-10-30T21:30:00Z"), sample("2022-10-30T22:30:00Z")]
        )
        days = await series(client, "sample_count", "day", "2022-10-29T00:00:00+03:00", "2022-11-01T00:00:00+02:00")
        assert [p["value"] for p in days] == [1, 1, 1]
        assert days[2]["start"] == "2022-10-31T00:00:00+02:00"
        assert datetime.fromisoformat(days[2]["start"]) == datetime(2022, 10, 30, 22, 0, tzinfo=UTC)
        assert datetime.fromisoformat(days[1]["end"]) - datetime.fromisoformat(days[1]["start"]) == timedelta(hours=25)


async def test_c3_months_in_business_zone(generic, httpx_client):
    srv = await generic("Europe/Amsterdam")
    async with httpx_client(srv) as client:
        await _post(
            client, [sample("2020-09-30T23:00:00Z"), sample("2020-10-24T22:00:00Z"), sample("2020-10-31T23:30:00Z")]
        )
        months = await series(client, "sample_count", "month", "2020-09-01T00:00:00+02:00", "2020-12-01T00:00:00+01:00")
        assert [p["value"] for p in months] == [0, 2, 1]


async def test_c7_late_event_reaches_every_level(generic, httpx_client):
    srv = await generic("UTC")
    async with httpx_client(srv) as client:
        await _post(client, [sample(f"2024-06-10T10:{m:02d}:00Z", 10) for m in (5, 15, 25, 35, 45)])
        hour = await series(client, "sample_sum", "hour", "2024-06-10T10:00:00Z", "2024-06-10T11:00:00Z")
        assert hour[0]["value"] == 50
        before_day = (await series(client, "sample_sum", "day", "2024-06-10T00:00:00Z", "2024-06-11T00:00:00Z"))[0]
        before_month = (await series(client, "sample_count", "month", "2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z"))[
            0
        ]
        await _post(client, [sample("2024-06-10T10:30:00Z", 7)])
        count = await series(client, "sample_count", "hour", "2024-06-10T10:00:00Z", "2024-06-10T11:00:00Z")
        total = await series(client, "sample_sum", "hour", "2024-06-10T10:00:00Z", "2024-06-10T11:00:00Z")
        mean = await series(client, "sample_mean", "hour", "2024-06-10T10:00:00Z", "2024-06-10T11:00:00Z")
        assert (count[0]["value"], total[0]["value"], mean[0]["value"]) == (6, 57, 9.5)
        day = (await series(client, "sample_sum", "day", "2024-06-10T00:00:00Z", "2024-06-11T00:00:00Z"))[0]
        month = (await series(client, "sample_count", "month", "2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z"))[0]
        assert day["value"] == before_day["value"] + 7
        assert month["value"] == before_month["value"] + 1


async def test_c8_retried_event_counted_once(generic, httpx_client):
    srv = await generic("UTC")
    async with httpx_client(srv) as client:
        ev = {"id": "7f3c-0001", "type": "orders", "ts": "2024-05-02T09:15:20Z", "value": 3}
        assert await _post(client, [ev]) == {"accepted": 1, "duplicates": 0}
        assert await _post(client, ev) == {"accepted": 0, "duplicates": 1}
        twice = [{**ev, "id": "7f3c-0002"}, {**ev, "id": "7f3c-0002"}]
        assert await _post(client, twice) == {"accepted": 1, "duplicates": 1}
        conflict = await client.post("/api/v1/events", json={**ev, "value": 4})
        assert conflict.status_code == 409
        assert conflict.headers["content-type"] == "application/problem+json"
        minute = ("2024-05-02T09:15:00Z", "2024-05-02T09:16:00Z")
        count = await series(client, "orders_count", "minute", *minute)
        total = await series(client, "orders_sum", "minute", *minute)
        # 7f3c-0001 once (3) + 7f3c-0002 once (3)
        assert (count[0]["value"], total[0]["value"]) == (2, 6)


async def test_c9_no_average_of_averages(generic, httpx_client):
    srv = await generic("UTC")
    async with httpx_client(srv) as client:
        await _post(
            client, [sample(f"2024-04-01T0{i}:00:00Z", 10) for i in range(4)] + [sample("2024-04-02T09:00:00Z", 50)]
        )
        month = await series(client, "sample_mean", "month", "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z")
        assert month[0]["value"] == 18.0
        assert month[0]["components"] == {"sample_sum": 90.0, "sample_count": 5}


async def test_c10_percentiles_are_not_added_or_averaged(generic, httpx_client):
    srv = await generic("UTC")
    async with httpx_client(srv) as client:
        events = [sample(f"2024-04-01T09:{(v - 1) % 60:02d}:00Z", v) for v in range(1, 101)]
        events += [sample(f"2024-04-01T10:{(v - 101) % 60:02d}:00Z", v) for v in range(101, 201)]
        await _post(client, events)
        hours = await series(client, "sample_p95", "hour", "2024-04-01T09:00:00Z", "2024-04-01T11:00:00Z")
        day = await series(client, "sample_p95", "day", "2024-04-01T00:00:00Z", "2024-04-02T00:00:00Z")
        # nearest rank, sketch relative accuracy 1 %
        assert hours[0]["value"] == pytest.approx(95, rel=0.01)
        assert hours[1]["value"] == pytest.approx(195, rel=0.01)
        assert day[0]["value"] == pytest.approx(190, rel=0.01)


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"sample","ts":"2024-04-01T09:00:00Z","value":"NaN"}',
        b'{"type":"sample","ts":"2024-04-01T09:00:00Z","value":"Infinity"}',
        b'{"type":"sample","ts":"2024-04-01T09:00:00Z","value":-1e400}',
        b'{"type":"sample","ts":"2024-04-01T09:00:00Z","value":NaN}',
    ],
)
async def test_c11_non_finite_numbers_never_get_in(generic, httpx_client, body):
    srv = await generic("UTC")
    async with httpx_client(srv) as client:
        resp = await client.post("/api/v1/events", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 422
        assert strict_json(resp.text)["errors"][0]["field"] == "value"
        ndjson = await client.post(
            "/api/v1/events", content=body + b"\n", headers={"content-type": "application/x-ndjson"}
        )
        assert ndjson.status_code == 422
        assert strict_json(ndjson.text)["errors"][0] == {**strict_json(ndjson.text)["errors"][0], "index": 0, "line": 1}
        points = await series(client, "sample_mean", "hour", "2024-04-01T09:00:00Z", "2024-04-01T10:00:00Z")
        assert points[0]["value"] is None
        assert points[0]["components"]["sample_count"] == 0


async def test_series_in_another_zone_on_request(generic, httpx_client):
    srv = await generic("UTC")
    async with httpx_client(srv) as client:
        await _post(
            client, [sample("2022-10-29T09:00:00Z"), sample("2022-10-30T21:30:00Z"), sample("2022-10-30T22:30:00Z")]
        )
        resp = await client.get(
            "/api/v1/kpis/sample_count/series",
            params={
                "grain": "day",
                "start": "2022-10-29T00:00:00+03:00",
                "end": "2022-11-01T00:00:00+02:00",
                "tz": "Europe/Athens",
            },
        )
        assert resp.json()["tz"] == "Europe/Athens"
        assert [p["value"] for p in resp.json()["points"]] == [1, 1, 1]
        bad = await client.get(
            "/api/v1/kpis/sample_count/series",
            params={
                "grain": "day",
                "start": "2022-10-29T00:00:00Z",
                "end": "2022-10-30T00:00:00Z",
                "tz": "Mars/Olympus",
            },
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "tz"
