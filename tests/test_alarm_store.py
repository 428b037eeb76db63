"""Alarm lifecycles through the HTTP API into each store: out-of-order arrivals (one request per
event, in an adversarial order, with retries) leave exactly the rows a rebuild from the raw events
gives (``app.metrics.lifecycle.derive_all``), and the KPIs read the right values, including
availability over a 23-hour and a 25-hour day and across midnight in Europe/Paris."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from app.metrics.calendar import to_us
from app.metrics.lifecycle import derive_all
from app.metrics.rollup import EventRow
from tests.conftest import keyed_client

PARIS = ZoneInfo("Europe/Paris")


def _ev(n: int, kind: str, at: datetime, alarm: str, **dims) -> dict:
    return {
        "id": f"e{n}",
        "source": "default",
        "type": f"alarm.{kind}",
        "ts": at.isoformat(),
        "dims": {"alarm": alarm, **dims},
    }


def _events() -> list[dict]:
    # instants in UTC, so that "+ 2 h" is two real hours (Python adds wall-clock time in one zone)
    spring = datetime(2021, 3, 28, 1, 0, tzinfo=PARIS).astimezone(UTC)  # the 23-hour day
    autumn = datetime(2021, 10, 31, 1, 0, tzinfo=PARIS).astimezone(UTC)  # the 25-hour day
    night = datetime(2021, 6, 1, 23, 0, tzinfo=PARIS).astimezone(UTC)
    rows = [
        # a: down 01:00-04:00 local on the spring day (2 real hours); cleared first, raised twice
        ("cleared", spring + timedelta(hours=2), "a", {}),
        ("raised", spring + timedelta(minutes=30), "a", {"severity": "major", "device": "r1"}),
        ("raised", spring, "a", {"severity": "major", "device": "r1"}),
        ("acknowledged", spring + timedelta(minutes=10), "a", {}),
        ("acknowledged", spring + timedelta(minutes=5), "a", {}),
        ("cleared", spring + timedelta(hours=3), "a", {}),
        # b: 01:00-04:00 local on the autumn day (4 real hours), ack after the clear (none)
        ("raised", autumn, "b", {"severity": "critical", "device": "r1"}),
        ("acknowledged", autumn + timedelta(hours=5), "b", {}),
        ("cleared", autumn + timedelta(hours=4), "b", {}),
        # c, d: across midnight, overlapping on one device: counted once; d goes minor (not affecting)
        ("raised", night, "c", {"severity": "major", "device": "r2"}),
        ("cleared", night + timedelta(hours=2), "c", {}),
        ("updated", night + timedelta(minutes=90), "d", {"severity": "minor"}),
        ("raised", night + timedelta(minutes=30), "d", {"severity": "major", "device": "r2"}),
        ("cleared", night + timedelta(hours=3), "d", {}),
        ("updated", night - timedelta(hours=1), "d", {"severity": "critical"}),  # before its raise: nothing
        # e: a clear stamped before its raise: duration 0
        ("raised", night + timedelta(hours=5), "e", {"severity": "major", "device": "r3"}),
        ("cleared", night + timedelta(hours=4), "e", {}),
    ]
    return [_ev(n, kind, at, alarm, **dims) for n, (kind, at, alarm, dims) in enumerate(rows)]


async def _stored(srv) -> tuple[dict, dict]:
    async with srv.runtime.engine.connect() as conn:
        parts = {
            (m, d, b): (c, round(s, 6))
            for m, d, b, c, s in await conn.execute(
                text("SELECT measure, dim_key, bucket_us, count, sum FROM rollup_minute WHERE measure LIKE 'noc/%'")
            )
            if c
        }
        hours = {
            (m, d, b): (c, round(s, 6))
            for m, d, b, c, s in await conn.execute(
                text("SELECT measure, dim_key, bucket_us, count, sum FROM rollup_hour WHERE measure LIKE 'noc/%'")
            )
            if c
        }
        rows = {
            (g, d, i): (o, c)
            for g, d, i, o, c in await conn.execute(
                text("SELECT gauge, dim_key, item_key, opened_us, closed_us FROM gauge_item WHERE gauge LIKE 'noc/%'")
            )
        }
    return {"minute": parts, "hour": hours}, rows


async def test_out_of_order_alarms_equal_a_rebuild_and_read_right(make_settings, start_server) -> None:
    srv = await start_server(make_settings(tz="Europe/Paris"))
    events = _events()
    async with keyed_client(srv, timeout=60) as client:
        for e in events:  # one request each, in this (adversarial) order
            r = await client.post("/api/v1/events", json=e)
            assert r.status_code == 202, r.text
        r = await client.post("/api/v1/events", json=events[:5])  # a retry: duplicates, nothing moves
        assert r.json() == {"accepted": 0, "duplicates": 5}

        pack = srv.runtime.packs["noc"]
        rows_in = [EventRow(e["type"], to_us(datetime.fromisoformat(e["ts"])), None, e["dims"]) for e in events]
        want_parts, want_rows, _ = derive_all(pack, rows_in)
        stored, rows = await _stored(srv)
        minute = {k: (p.count, round(p.sum, 6)) for k, p in want_parts.items() if p.count}
        assert stored["minute"] == minute
        hours: dict = {}
        for (m, d, b), (c, s) in minute.items():
            key = (m, d, b - b % 3_600_000_000)
            hc, hs = hours.get(key, (0, 0.0))
            hours[key] = (hc + c, round(hs + s, 6))
        assert stored["hour"] == hours
        assert rows == want_rows

        async def one(kpi: str, grain: str, start: str, end: str, **dims: str) -> dict:
            params = {
                "grain": grain,
                "start": start,
                "end": end,
                "pack": "noc",
                **{f"dims.{k}": v for k, v in dims.items()},
            }
            r = await client.get(f"/api/v1/kpis/{kpi}/series", params=params)
            assert r.status_code == 200, r.text
            return r.json()["points"]

        spring = await one(
            "availability_ratio", "day", "2021-03-28T00:00:00+01:00", "2021-03-29T00:00:00+02:00", device="r1"
        )
        assert spring[0]["components"]["span_s_sum"] == 23 * 3600
        assert spring[0]["components"]["covered_s_sum"] == 2 * 3600  # 01:00-04:00 local is 2 real hours
        assert spring[0]["value"] == 1 - 2 / 23
        autumn = await one(
            "availability_ratio", "day", "2021-10-31T00:00:00+02:00", "2021-11-01T00:00:00+01:00", device="r1"
        )
        assert autumn[0]["components"]["span_s_sum"] == 25 * 3600
        assert autumn[0]["components"]["covered_s_sum"] == 4 * 3600
        nights = await one(
            "availability_ratio", "day", "2021-06-01T00:00:00+02:00", "2021-06-03T00:00:00+02:00", device="r2"
        )
        # c 23:00-01:00 and d 23:30-00:30 (major, then minor): down 23:00-01:00, counted once
        assert [p["components"]["covered_s_sum"] for p in nights] == [3600, 3600]
        assert [p["value"] for p in nights] == [1 - 1 / 24, 1 - 1 / 24]
        spring_mttr = await one("mttr_s", "day", "2021-03-28T00:00:00+01:00", "2021-03-29T00:00:00+02:00")
        assert spring_mttr[0]["value"] == 2 * 3600 and spring_mttr[0]["components"]["cleared_count"] == 1
        spring_mtta = await one("mtta_s", "day", "2021-03-28T00:00:00+01:00", "2021-03-29T00:00:00+02:00")
        assert spring_mtta[0]["value"] == 300  # the earlier of the two acks
        autumn_mtta = await one("mtta_s", "day", "2021-10-31T00:00:00+02:00", "2021-11-01T00:00:00+01:00")
        assert autumn_mtta[0]["value"] is None  # the ack came after the clear
        raised = await one("alarms_raised", "month", "2021-01-01T00:00:00+01:00", "2022-01-01T00:00:00+01:00")
        assert sum(p["value"] for p in raised) == 5  # a raised twice counts once
        june = await one("mttr_s", "day", "2021-06-01T00:00:00+02:00", "2021-06-03T00:00:00+02:00")
        # June 2: c 2 h, d 2.5 h, e 0 s (cleared before its raise)
        assert june[1]["components"]["cleared_count"] == 3
        assert june[1]["value"] == (7200 + 9000 + 0) / 3
        minor = await one("mttr_s", "day", "2021-06-01T00:00:00+02:00", "2021-06-03T00:00:00+02:00", severity="minor")
        assert minor[1]["value"] == 9000  # d cleared as minor
        both = await one(
            "mttr_s", "day", "2021-06-01T00:00:00+02:00", "2021-06-03T00:00:00+02:00", severity="minor", device="r2"
        )
        assert both[1]["value"] == 9000  # two filters: recomputed from raw events, same answer


async def test_a_group_of_calls_and_alarms_counts_each_once(make_settings, start_server) -> None:
    """One request with a call and an alarm: the call's rollups and the alarm's lifecycle deltas
    are written in one upsert per table (a second upsert of a table in one PostgreSQL transaction
    re-read the rows staged by the first: the call counted twice)."""
    srv = await start_server(make_settings(tz="Europe/Paris"))
    at = "2021-01-01T10:00:30+00:00"
    events = [
        {"id": "c1", "source": "default", "type": "call.answered", "ts": at, "value": 12.5, "dims": {"queue": "PS"}},
        {"id": "a1", "source": "default", "type": "alarm.raised", "ts": at, "dims": {"alarm": "x", "device": "d"}},
    ]
    async with keyed_client(srv, timeout=60) as client:
        r = await client.post("/api/v1/events", json=events)
        assert r.json() == {"accepted": 2, "duplicates": 0}
    async with srv.runtime.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT measure, dim_key, count, sum FROM rollup_minute "
                    "WHERE measure IN ('contact-centre/answered', 'noc/raised') ORDER BY measure, dim_key"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("contact-centre/answered", "", 1, 12.5),
        ("contact-centre/answered", "queue=PS", 1, 12.5),
        ("noc/raised", "", 1, 0.0),
        ("noc/raised", "device=d", 1, 0.0),
    ]
