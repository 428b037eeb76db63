"""Event-time mode (``PULSEBOARD_CLOCK=event``): cuts, catch-up, restatements and the wall's
day close follow the event clock, not wall time (issue 9, item 0), on both stores."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from websockets.asyncio.client import connect

from app.clock import EventClock
from app.metrics.calendar import to_us
from tests.helpers import PACKS_DIR, sample, wait_until

SLUG = "generic-wall"


def test_event_clock_watermark_and_listeners():
    clock = EventClock()
    seen: list[int] = []
    clock.on_advance(seen.append)
    assert clock.watermark() is None and clock.watermark_us is None
    assert clock.now().year >= 2024  # wall-time fallback before any event (live windows need an end)
    t = to_us(datetime(1999, 8, 1, 7, 0, 0, 123_457, tzinfo=UTC))
    clock.observe(t)
    clock.observe(t - 1)  # never backwards, and no call when it does not move
    clock.observe(t)
    assert seen == [t]
    assert clock.watermark() == datetime(1999, 8, 1, 7, 0, 0, 123_457, tzinfo=UTC)  # exact to the µs
    assert clock.now() == clock.watermark() and clock.watermark_us == t


def _settings(make_settings, **kw):
    return make_settings(packs_dir=PACKS_DIR, clock="event", restate_interval_s=3600, **kw)


async def _post(client, *events: dict) -> None:
    resp = await client.post("/api/v1/events", json=list(events))
    assert resp.status_code == 202, resp.text


async def _status(client, path: str) -> int:
    return (await client.get(f"/api/v1/snapshots/{path}")).status_code


async def test_a_day_is_cut_when_the_event_clock_passes_its_cut_time_not_before(
    make_settings, start_server, client_for
):
    srv = await start_server(_settings(make_settings, snapshots_enabled=True))
    service = srv.runtime.snapshots
    assert service.now_us() is None  # no event yet: nothing is due, whatever the wall clock says
    assert await service.run_due() == []
    async with client_for(srv) as client:
        await _post(client, sample("2024-06-01T10:00:00Z", id="a"), sample("2024-06-01T23:59:59Z", id="b"))
        assert await service.run_due() == []
        await _post(client, sample("2024-06-02T00:04:59Z", id="c"))  # the day has ended, its cut time (00:05) not
        assert await service.run_due() == []
        assert await _status(client, f"{SLUG}/day/2024-06-01") == 404

        await _post(client, sample("2024-06-02T00:05:00Z", id="d"))  # the event clock reaches 00:05: cut at once

        async def cut() -> dict | None:
            resp = await client.get(f"/api/v1/snapshots/{SLUG}/day/2024-06-01")
            return resp.json() if resp.status_code == 200 else None

        snap = await wait_until(cut, 30, what="the event-time cut of 2024-06-01")
        assert (snap["version"], snap["status"], snap["reconciliation"]["ok"]) == (1, "final", True)
        assert snap["kpis"]["sample_count"]["value"] == 2
        assert snap["cut_at"] == snap["scheduled_for"] == "2024-06-02T00:05:00+00:00"
        # Nothing on wall time, nothing before the first event, no month, no dashboard without events.
        for path in (
            f"{SLUG}/day/2024-05-31",
            f"{SLUG}/day/2024-06-02",
            f"{SLUG}/day/{date.today().isoformat()}",
            f"{SLUG}/month/2024-06",
            "contact-centre/day/2024-06-01",
        ):
            assert await _status(client, path) == 404, path

        # A late event restates on the event clock (cut_at is event time, not now).
        await _post(client, sample("2024-06-01T12:00:00Z", id="late"), sample("2024-06-02T09:00:00Z", id="e"))
        restated = await service.restate_pending()
        assert [(r.period, r.version, r.status) for r in restated] == [("2024-06-01", 2, "restated")]
        assert restated[0].cut_at_us == to_us(datetime(2024, 6, 2, 9, tzinfo=UTC))


async def test_catch_up_at_start_follows_the_stored_events(make_settings, start_server, client_for):
    settings = _settings(make_settings)
    down = await start_server(settings)
    async with client_for(down) as client:
        await _post(client, *(sample(f"2024-06-0{d}T12:00:00Z", id=f"d{d}") for d in (1, 2, 3)))
    await down.stop()
    up = await start_server(settings.model_copy(update={"snapshots_enabled": True}))
    async with client_for(up) as client:

        async def both_cut() -> bool:
            return all([await _status(client, f"{SLUG}/day/2024-06-0{d}") == 200 for d in (1, 2)])

        await wait_until(both_cut, 30, what="the catch-up of 2024-06-01 and 2024-06-02")
        assert await _status(client, f"{SLUG}/day/2024-06-03") == 404  # the event clock is inside it
        assert await _status(client, f"{SLUG}/day/{date.today().isoformat()}") == 404
        snap = (await client.get(f"/api/v1/snapshots/{SLUG}/day/2024-06-02")).json()
        assert snap["cut_at"] == "2024-06-03T12:00:00+00:00"  # the newest stored event, not wall time
    assert await up.runtime.snapshots.run_due() == []  # nothing else is due on the event clock


async def test_the_day_close_of_an_event_time_wall_is_read_at_the_days_end(make_settings, start_server, client_for):
    srv = await start_server(_settings(make_settings))
    hub = srv.app.state.hub
    channel = hub.channels[SLUG]
    async with client_for(srv) as client:
        await _post(client, sample("2024-06-01T23:50:00Z", id="a"))
        await hub.refresh(channel)  # the wall's last look at the day, at 23:50 event time
        # One commit that ends the day: 23:55 is in it, the wall never showed it live.
        await _post(client, sample("2024-06-01T23:55:00Z", id="b"), sample("2024-06-02T00:10:00Z", id="c"))
        await hub.refresh(channel)
    close = hub.day_close[SLUG]["2024-06-01"]
    assert close["count_today"]["value"] == 2 and close["mean_today"]["value"] == 1.0
    assert await srv.runtime.snapshots.run_due() == [(SLUG, "day", "2024-06-01", True)]
    recon = await srv.runtime.snapshots.reconcile(SLUG, "day", "2024-06-01")
    assert {c["name"]: c["ok"] for c in recon["checks"]}["live_vs_snapshot"] is True
    assert recon["ok"] is True


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_the_wall_is_told_it_runs_on_event_time(make_settings, start_server):
    srv = await start_server(_settings(make_settings))
    async with connect(srv.ws_url + f"/ws/dashboards/{SLUG}", additional_headers=srv.auth("display", SLUG)) as ws:
        snap = json.loads(await ws.recv())
    assert snap["type"] == "snapshot" and snap["clock"] == "event"
