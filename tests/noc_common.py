"""Shared by the NOC acceptance modules: one replay of a data set per store (module fixture),
series reads, and the reference computations (union of intervals per period) written here
from scratch, so that they do not share code with ``app.metrics``."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.clock import ManualClock
from app.config import Settings
from app.main import create_app
from app.replay.client import replay_events
from tests.conftest import IN_CI, PG_URL, TestKeys, _drop_pg_schema, keyed_client, make_test_keys, pg_available, serve

ZONE_NAME = "Europe/Paris"  # the business zone: 23- and 25-hour days fall inside the data
ZONE = ZoneInfo(ZONE_NAME)
US = 1_000_000


@dataclass
class Replayed:
    kind: str
    url: str
    clock: ManualClock
    events: list[dict]
    summary: object
    seconds: float
    keys: TestKeys


async def replay_into(kind: str, tmp, events: list[dict], source: str, after_all: datetime):
    """A server (zone Europe/Paris, manual clock at ``after_all``) on a fresh store of ``kind``
    with ``events`` replayed at max speed; yields ``Replayed``, then stops and drops it."""
    kw = {"data_dir": tmp / "var", "tz": ZONE_NAME, "snapshots_enabled": False}
    if kind == "postgresql":
        if not pg_available():
            if IN_CI:
                pytest.fail(f"PostgreSQL is required in CI but does not answer at {PG_URL}")
            pytest.skip(f"no PostgreSQL at {PG_URL}")
        kw["database_url"] = PG_URL
        kw["db_schema"] = f"pb_test_noc_{secrets.token_hex(4)}"
    settings = Settings(**kw)
    clock = ManualClock(after_all)
    app = create_app(settings, clock=clock)
    server, task, url = await serve(app, settings)
    keys = await make_test_keys(app)
    try:
        began = time.monotonic()
        summary = await replay_events(events, url, speed=None, batch_size=1000, api_key=keys.ingest[source])
        seconds = time.monotonic() - began
        print(f"\n[{kind}] replayed {summary.events} events in {seconds:.1f} s ({summary.events_per_s:.0f}/s)")
        yield Replayed(kind, url, clock, events, summary, seconds, keys)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        if kind == "postgresql":
            _drop_pg_schema(settings.db_schema)


async def series(
    srv: Replayed, kpi: str, grain: str, start: datetime, end: datetime, dims: dict[str, str] | None = None
) -> list[dict]:
    params = {"grain": grain, "start": start.isoformat(), "end": end.isoformat(), "pack": "noc"}
    params.update({f"dims.{k}": v for k, v in (dims or {}).items()})
    async with keyed_client(srv, timeout=300) as client:
        r = await client.get(f"/api/v1/kpis/{kpi}/series", params=params)
    assert r.status_code == 200, r.text
    assert r.json()["pack"] == "noc"
    return r.json()["points"]


def local_day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[local midnight, next local midnight)`` of ``day`` in the business zone, as UTC instants."""
    start = datetime(day.year, day.month, day.day, tzinfo=ZONE).astimezone(UTC)
    nxt = day + timedelta(days=1)
    return start, datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZONE).astimezone(UTC)


def down_seconds(intervals: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> float:
    """Length (s) of the union of ``intervals`` inside ``[start, end)``: a plain sweep (aware
    datetimes; Python subtracts two datetimes of one zone by wall clock, so go through UTC)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    cut = sorted((max(a, start), min(b, end)) for a, b in intervals if min(b, end) > max(a, start))
    total = timedelta(0)
    run_a = run_b = None
    for a, b in cut:
        if run_a is None or a > run_b:
            if run_a is not None:
                total += run_b - run_a
            run_a, run_b = a, b
        elif b > run_b:
            run_b = b
    if run_a is not None:
        total += run_b - run_a
    return total.total_seconds()


def availability(intervals: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> float:
    return 1 - down_seconds(intervals, start, end) / (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds()
