"""Live tiles over real WebSocket connections (CONTRACT §4, CASES C12)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from datetime import UTC, datetime

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from app.clock import ManualClock
from tests.helpers import PACKS_DIR, sample, wait_until

NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)
WALL = "/ws/dashboards/generic-wall"


@pytest.fixture
async def live(make_settings, start_server):
    settings = make_settings(
        packs_dir=PACKS_DIR, tile_interval_ms=50, heartbeat_interval_s=0.5, ws_ping_interval_s=1, ws_ping_timeout_s=1
    )
    return await start_server(settings, clock=ManualClock(NOW))


def wsconnect(srv, url: str, scope: str = "read", **kw):
    """A WebSocket client holding the test key of ``scope`` (keys go in the handshake header)."""
    return connect(url, additional_headers=srv.auth(scope, "generic-wall"), **kw)


async def recv_json(ws, timeout_s: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def next_update(ws, timeout_s: float = 10) -> dict:
    """Skip heartbeats; return the next update."""
    while True:
        msg = await recv_json(ws, timeout_s)
        if msg["type"] == "update":
            return msg
        assert msg["type"] == "heartbeat", msg


async def post(client, n: int, start: int = 0, value: float = 1) -> None:
    events = [sample(f"2024-06-10T11:{(start + i) % 60:02d}:00Z", value, id=f"s{start + i}") for i in range(n)]
    resp = await client.post("/api/v1/events", json=events)
    assert resp.status_code == 202, resp.text


async def test_snapshot_then_changed_tiles_only(live, client_for):
    async with client_for(live) as client, wsconnect(live, live.ws_url + WALL) as ws:
        snap = await recv_json(ws)
        assert snap["type"] == "snapshot" and snap["dashboard"] == "generic-wall"
        assert set(snap["tiles"]) == {"count_today", "sum_15m", "mean_today"}
        assert snap["stale_after_s"] == live.settings.stale_after_s
        assert snap["tiles"]["count_today"]["value"] == 0
        assert snap["tiles"]["mean_today"]["value"] is None
        await post(client, 3, start=0, value=2)  # 11:00..11:02, outside the 15 m window
        upd = await next_update(ws)
        assert upd["epoch"] == snap["epoch"] and upd["seq"] == snap["seq"] + 1
        assert set(upd["tiles"]) == {"count_today", "mean_today"}  # sum_15m did not change
        assert upd["tiles"]["count_today"]["value"] == 3
        assert upd["tiles"]["mean_today"]["value"] == 2.0


async def test_resume_gets_missed_updates_or_a_snapshot(live, client_for):
    async with client_for(live) as client:
        async with wsconnect(live, live.ws_url + WALL) as ws:
            snap = await recv_json(ws)
            await post(client, 1, start=0)
            first = await next_update(ws)
        await post(client, 1, start=1)
        await post_until_seq(live, first["seq"] + 1)
        async with wsconnect(live, f"{live.ws_url}{WALL}?epoch={snap['epoch']}&since={first['seq']}") as ws:
            missed = await recv_json(ws)
            assert missed["type"] == "update" and missed["seq"] == first["seq"] + 1
            assert missed["tiles"]["count_today"]["value"] == 2
            current = await recv_json(ws, timeout_s=0.4)  # at once, not after the heartbeat interval
            assert current["type"] == "heartbeat" and current["seq"] == missed["seq"]
        async with wsconnect(live, f"{live.ws_url}{WALL}?epoch=not-this-one&since=1") as ws:
            fresh = await recv_json(ws)
            assert fresh["type"] == "snapshot" and fresh["tiles"]["count_today"]["value"] == 2


async def post_until_seq(live, seq: int, timeout_s: float = 10) -> None:
    """Wait until the hub has published ``seq`` on the generic wall (a watcher keeps it refreshing)."""
    channel = live.runtime.hub.channels["generic-wall"]
    async with wsconnect(live, live.ws_url + WALL):
        await wait_until(lambda: channel.seq >= seq, timeout_s, what=f"the hub to publish seq {seq}")


async def test_heartbeats_when_idle(live):
    async with wsconnect(live, live.ws_url + WALL) as ws:
        snap = await recv_json(ws)
        beat = await recv_json(ws, timeout_s=5)
        assert beat == {"type": "heartbeat", "epoch": snap["epoch"], "seq": snap["seq"], "as_of": beat["as_of"]}


async def test_unknown_dashboard_is_refused(live):
    with pytest.raises(Exception) as info:
        async with wsconnect(live, live.ws_url + "/ws/dashboards/no-such-wall") as ws:
            await recv_json(ws, 5)
    assert "403" in str(info.value) or "1008" in str(info.value)


def _drop_without_close(ws) -> None:
    """Reset the TCP connection (SO_LINGER 0): no close frame, no FIN."""
    sock: socket.socket = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


async def test_c12_one_dead_screen_never_stops_the_others(live, client_for):
    hub = live.runtime.hub
    broker = live.runtime.broker
    async with (
        client_for(live) as client,
        wsconnect(live, live.ws_url + WALL) as a,
        wsconnect(live, live.ws_url + WALL) as c,
    ):
        b = await wsconnect(live, live.ws_url + WALL)
        for ws in (a, b, c):
            assert (await recv_json(ws))["type"] == "snapshot"
        assert broker.subscriber_count("generic-wall") == 3
        _drop_without_close(b)
        seen_a, seen_c = [], []
        for i in range(2):
            await post(client, 1, start=10 + i)
            seen_a.append(await next_update(a))
            seen_c.append(await next_update(c))
        assert [u["tiles"]["count_today"]["value"] for u in seen_a] == [1, 2]
        assert [u["seq"] for u in seen_a] == [u["seq"] for u in seen_c]
        assert hub._task is not None and not hub._task.done()  # the publisher raised nothing
        # heartbeat 0.5 s + ping 1 s + timeout 1 s, with margin
        await wait_until(lambda: broker.subscriber_count("generic-wall") == 2, 6, what="the dead screen to go")


async def test_screen_that_stops_reading_does_not_delay_the_others(live, client_for):
    broker = live.runtime.broker
    async with client_for(live) as client, wsconnect(live, live.ws_url + WALL) as fast:
        stuck = await wsconnect(live, live.ws_url + WALL, max_queue=1)
        assert (await recv_json(fast))["type"] == "snapshot"
        stuck.transport.pause_reading()  # the stuck screen never reads again
        for i in range(40):
            await post(client, 1, start=i)
            upd = await next_update(fast)
            assert upd["tiles"]["count_today"]["value"] == i + 1
        # The stuck screen cannot answer pings: it is dropped after ping interval +
        # timeout, and its outbox (at most one merged update) goes with it.
        await wait_until(lambda: broker.subscriber_count("generic-wall") == 1, 6, what="the stuck screen to go")
        stuck.transport.abort()


async def test_restated_snapshot_is_flagged_on_the_wall(live, client_for):
    """Walls show when a recent number was restated (issue 3): notices in the snapshot and updates."""
    async with client_for(live) as client, wsconnect(live, live.ws_url + WALL) as ws:
        snap = await recv_json(ws)
        assert snap["notices"] == []
        await post(client, 1, start=0)  # 2024-06-10 11:00, the clock stands at 12:00
        await next_update(ws)
        live.runtime.clock.set(datetime(2024, 6, 11, 1, 0, tzinfo=UTC))
        await live.runtime.snapshots.run_due()
        late = sample("2024-06-10T09:00:00Z", 5, id="late-1")
        assert (await client.post("/api/v1/events", json=late)).status_code == 202
        assert await live.runtime.snapshots.restate_pending() != []
        for _ in range(50):
            upd = await next_update(ws)
            if upd.get("notices"):
                break
        texts = [n["text"] for n in upd["notices"]]
        assert texts == ["day 2024-06-10 restated (v2): late events: 1 arrived after version 1 was cut"]
        assert upd["notices"][0]["kind"] == "restated"


async def test_snapshot_carries_trends_from_stored_minutes(live, client_for):
    """A wall opened late still gets its sparklines: one point per minute from the stored rollups."""
    async with client_for(live) as client:
        events = [sample(f"2024-06-10T11:{m:02d}:30Z", 2, id=f"t{i}") for i, m in enumerate((50, 52, 52, 58))]
        assert (await client.post("/api/v1/events", json=events)).status_code == 202
    async with wsconnect(live, live.ws_url + WALL) as ws:
        snap = await recv_json(ws)
    count = snap["tiles"]["count_today"]["trend"]
    assert len(count) == 60 and count[-1] == 4
    # cumulative "today" count at the end of 11:49 .. 11:59 (the clock stands at 12:00)
    assert count[-12:] == [0, 1, 1, 3, 3, 3, 3, 3, 3, 4, 4, 4]
    window = snap["tiles"]["sum_15m"]["trend"]
    assert window[-1] == 8.0  # 12:00 window: 11:46..12:00
    assert snap["tiles"]["mean_today"]["trend"][-12] is None  # no data yet: undefined, not 0


async def test_foreign_origin_is_refused_at_the_handshake(live):
    """Cross-site WebSocket hijacking: a page on another site cannot open the wall's socket."""
    host = live.ws_url.removeprefix("ws://")
    with pytest.raises(Exception) as info:
        async with wsconnect(live, live.ws_url + WALL, origin="https://evil.example") as ws:
            await recv_json(ws, 5)
    assert "403" in str(info.value)
    async with wsconnect(live, live.ws_url + WALL, origin=f"http://{host}") as ws:  # same origin: fine
        assert (await recv_json(ws))["type"] == "snapshot"


async def test_inbound_frame_limit_and_shutdown_grace_are_settings(make_settings, start_server):
    """PULSEBOARD_WS_MAX_INBOUND_BYTES bounds what a screen may send (1009 past it);
    PULSEBOARD_SHUTDOWN_GRACE_S is what the server gives requests in flight on SIGTERM."""
    from app.main import uvicorn_options

    settings = make_settings(packs_dir=PACKS_DIR, ws_max_inbound_bytes=2048, shutdown_grace_s=12.5)
    assert uvicorn_options(settings)["timeout_graceful_shutdown"] == 12.5
    srv = await start_server(settings, clock=ManualClock(NOW))
    async with wsconnect(srv, srv.ws_url + WALL) as ws:
        assert (await recv_json(ws))["type"] == "snapshot"
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 1500}))  # under 2 KiB: answered, still open
        assert (await recv_json(ws, 5))["type"] in ("pong", "error", "heartbeat")
        await ws.send("x" * 3000)
        with pytest.raises(ConnectionClosedError):
            for _ in range(5):
                await recv_json(ws, 5)
        assert ws.close_code == 1009


async def test_inbound_limits_size_and_rate(live):
    async with wsconnect(live, live.ws_url + WALL) as ws:
        await recv_json(ws)
        await ws.send("x" * (65 * 1024))
        with pytest.raises(ConnectionClosedError):
            for _ in range(5):
                await recv_json(ws, 5)
        assert ws.close_code == 1009
    async with wsconnect(live, live.ws_url + WALL) as ws:
        await recv_json(ws)
        for _ in range(30):
            await ws.send('{"type":"ping"}')
        with pytest.raises(ConnectionClosedError):
            for _ in range(60):
                await recv_json(ws, 5)
        assert ws.close_code == 1008
    async with wsconnect(live, live.ws_url + WALL) as ws:  # unknown message: an error frame, no data
        await recv_json(ws)
        await ws.send('{"type":"subscribe","dashboard":"other"}')
        reply = await recv_json(ws)
        while reply["type"] == "heartbeat":
            reply = await recv_json(ws)
        assert reply["type"] == "error"


async def test_connection_cap(make_settings, start_server):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, ws_max_connections=2))
    async with wsconnect(srv, srv.ws_url + WALL) as a, wsconnect(srv, srv.ws_url + WALL) as b:
        await recv_json(a)
        await recv_json(b)
        with pytest.raises(InvalidStatus) as refused:
            async with wsconnect(srv, srv.ws_url + WALL) as c:
                await recv_json(c, 5)
        assert refused.value.response.status_code == 403  # closed before the handshake completed


async def test_connection_cap_per_key(make_settings, start_server, caplog):
    """A key holds at most PULSEBOARD_WS_MAX_CONNECTIONS_PER_KEY screens: the next one is refused
    at the handshake with 429 + Retry-After (logged); another key is not affected; a closed
    screen frees its place."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, ws_max_connections_per_key=2))
    async with wsconnect(srv, srv.ws_url + WALL) as a, wsconnect(srv, srv.ws_url + WALL) as b:
        await recv_json(a)
        await recv_json(b)
        with pytest.raises(InvalidStatus) as info:
            async with wsconnect(srv, srv.ws_url + WALL) as c:
                await recv_json(c, 5)
        assert info.value.response.status_code == 429 and info.value.response.headers["Retry-After"]
        assert "WebSocket cap per key (2) reached" in caplog.text
        async with wsconnect(srv, srv.ws_url + WALL, scope="admin") as other:  # another key: its own count
            assert (await recv_json(other))["type"] == "snapshot"

    async def opens_again() -> bool:  # both closed: once the server has seen it, the key may open screens again
        async with wsconnect(srv, srv.ws_url + WALL) as again:
            return (await recv_json(again))["type"] == "snapshot"

    await wait_until(opens_again, 5, what="the key's places to be freed", interval_s=0.05, ignore=(InvalidStatus,))


async def test_tiles_merge_sketches_only_for_percentile_kpis(live, client_for, monkeypatch):
    """Sketch merging is the costly part of a read: a dashboard without percentile tiles asks for none."""
    from app.store import reads

    asked: list[list[str]] = []
    real_grid = reads.aggregate_grid  # every tile read goes through it

    async def spy_grid(conn, keys, dim_keys, windows, sketch_keys=(), *rest, **kw):
        asked.append(list(sketch_keys))
        return await real_grid(conn, keys, dim_keys, windows, sketch_keys, *rest, **kw)

    real_series = reads.aggregate_series  # a series' periods in one grouped read

    async def spy_series(conn, keys, dim_key, windows, sketch_keys=(), *rest, **kw):
        asked.append(list(sketch_keys))
        return await real_series(conn, keys, dim_key, windows, sketch_keys, *rest, **kw)

    monkeypatch.setattr(reads, "aggregate_grid", spy_grid)
    monkeypatch.setattr(reads, "aggregate_series", spy_series)
    async with client_for(live) as client:
        assert (await client.get("/api/v1/dashboards/generic-wall")).status_code == 200
        assert asked and all(k == [] for k in asked)
        asked.clear()
        p95 = await client.get(
            "/api/v1/kpis/sample_p95/series",
            params={"grain": "day", "start": "2024-06-10T00:00:00Z", "end": "2024-06-11T00:00:00Z"},
        )
        assert p95.status_code == 200 and asked == [["generic/sample"]]


async def test_screen_whose_socket_stays_full_is_closed_4008_and_freed(make_settings, start_server):
    """A screen that stops reading while big updates flow: once its socket is over
    ``ws_write_buffer_bytes`` its updates merge into one pending update; blocked for
    ``ws_send_timeout_s`` it is closed with 4008 and its outbox dropped, while the
    other screen gets every update."""
    from app.ws.broker import SubscriptionState, TileUpdate

    settings = make_settings(
        packs_dir=PACKS_DIR,
        ws_write_buffer_bytes=1024,
        ws_send_timeout_s=0.5,
        heartbeat_interval_s=60,
        ws_ping_interval_s=60,
        ws_ping_timeout_s=60,
    )
    srv = await start_server(settings, clock=ManualClock(NOW))
    broker, channel = srv.runtime.broker, srv.runtime.hub.channels["generic-wall"]
    big = {"big": {"kpi": "x", "value": "x" * 256 * 1024}}  # 256 KiB a frame: kernel buffers fill fast
    async with wsconnect(srv, srv.ws_url + WALL, max_size=None) as fast:
        stuck = await wsconnect(srv, srv.ws_url + WALL, max_size=None, max_queue=1)
        for ws in (fast, stuck):
            assert (await recv_json(ws))["type"] == "snapshot"
        subs = broker.subscriptions("generic-wall")
        assert len(subs) == 2
        stuck.transport.pause_reading()
        base, sent = channel.seq + 1000, 0
        while broker.subscriber_count("generic-wall") == 2:
            assert sent < 2000, "the stuck screen was never closed"
            sent += 1
            await broker.publish(
                "generic-wall", TileUpdate(channel.epoch, base + sent, big, "2024-06-10T12:00:00+00:00")
            )
            got = await next_update(fast)
            assert got["seq"] == base + sent  # the reading screen is never held back
        closed = [s for s in subs if s.state == SubscriptionState.CLOSED]
        assert len(closed) == 1
        assert closed[0].merged_updates >= 1  # it was held to one merged update ...
        assert closed[0].pending is None and closed[0].sink is None  # ... and that is freed
        stuck.transport.resume_reading()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(stuck.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4008


async def test_fan_out_in_chunks_keeps_every_screen_in_seq_order(live):
    """Past ``chunk`` screens the fan-out goes on in a task; back-to-back publishes must still
    reach every screen complete and in ``seq`` order (here one screen per chunk)."""
    from app.ws.broker import TileUpdate

    broker, channel = live.runtime.broker, live.runtime.hub.channels["generic-wall"]
    broker._chunk = 1
    async with (
        wsconnect(live, live.ws_url + WALL) as a,
        wsconnect(live, live.ws_url + WALL) as b,
        wsconnect(live, live.ws_url + WALL) as c,
    ):
        for ws in (a, b, c):
            assert (await recv_json(ws))["type"] == "snapshot"
        base = channel.seq + 1000
        for i in range(1, 21):
            await broker.publish(
                "generic-wall", TileUpdate(channel.epoch, base + i, {"n": {"value": i}}, "2024-06-10T12:00:00+00:00")
            )
        for ws in (a, b, c):
            assert [(await next_update(ws))["seq"] for _ in range(20)] == [base + i for i in range(1, 21)]
