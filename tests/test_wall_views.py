"""Dashboard parameters, the multiplexed screen socket, feed silence and playlists over real
connections (issue 13, items 5 and 6; CONTRACT §4 "Dashboard views", "Multiplexed socket",
"Feed silence"), on the built-in ``noc`` and ``contact-centre`` dashboards, both stores."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from app.clock import ManualClock
from app.metrics import PackError
from app.metrics.pack import load_packs
from tests.conftest import keyed_client

NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


def alarm(key: str, site: str, severity: str, minute: int, kind: str = "raised") -> dict:
    return {
        "id": f"{key}:{kind}",
        "source": "pcic2021",
        "type": f"alarm.{kind}",
        "ts": (NOW - timedelta(minutes=minute)).isoformat(),
        "dims": {"alarm": key, "device": f"d-{key}", "type": "link", "site": site, "severity": severity},
    }


@pytest.fixture
async def noc(make_settings, start_server):
    clock = ManualClock(NOW)
    srv = await start_server(
        make_settings(
            tile_interval_ms=50, heartbeat_interval_s=0.5, ws_max_views_per_socket=3, ws_max_inbound_per_s=50
        ),
        clock=clock,
    )
    srv.clock = clock
    async with keyed_client(srv) as client:
        resp = await client.post(
            "/api/v1/events",
            json=[alarm("a1", "A", "critical", 30), alarm("a2", "A", "minor", 20), alarm("b1", "B", "critical", 10)],
        )
        assert resp.status_code == 202, resp.text
    return srv


async def recv_json(ws, timeout_s: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


_UNREAD: dict[int, list[dict]] = {}  # per socket: frames read while looking for another view's


async def frame_of(ws, view: str | None, kind: str, timeout_s: float = 10) -> dict:
    """The first frame of ``kind`` for ``view`` not taken yet (frames of other views stay for
    their own calls; heartbeats are dropped), within ``timeout_s``."""
    unread = _UNREAD.setdefault(id(ws), [])
    for i, msg in enumerate(unread):
        if msg.get("dashboard") == view and msg["type"] == kind:
            return unread.pop(i)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await recv_json(ws, timeout_s)
                if msg.get("dashboard") == view and msg["type"] == kind:
                    return msg
                if msg["type"] != "heartbeat":
                    unread.append(msg)
    except TimeoutError:
        raise AssertionError(f"no {kind} of {view!r}; unread {unread[-5:]}") from None


async def test_params_narrow_every_tile(noc):
    async with keyed_client(noc) as client:
        whole = (await client.get("/api/v1/dashboards/noc")).json()
        site_a = (await client.get("/api/v1/dashboards/noc", params={"site": "A"})).json()
        site_b = (await client.get("/api/v1/dashboards/noc", params={"site": "B"})).json()
        bad = await client.get("/api/v1/dashboards/noc", params={"queue": "PS"})
        amp = await client.get("/api/v1/dashboards/noc", params={"site": "A&B"})
    assert whole["view"] == "noc" and whole["tiles"]["open_now"]["value"] == 3
    assert site_a["view"] == "noc?site=A" and site_a["title"] == "Network operations · site A"
    assert site_a["tiles"]["open_now"]["value"] == 2
    assert site_a["tiles"]["open_critical_now"]["value"] == 1  # severity and site: read from the open items
    assert site_a["tiles"]["affecting_now"]["value"] == 1  # minor is not service-affecting
    assert site_a["tiles"]["longest_open_now"]["value"] == 30 * 60
    assert [a["alarm"] for a in site_a["tiles"]["alarm_list"]["alarms"]] == ["a1", "a2"]
    assert site_a["tiles"]["open_now"]["dims"] == {"site": "A"}
    assert site_b["tiles"]["open_now"]["value"] == 1 and site_b["tiles"]["longest_open_now"]["value"] == 10 * 60
    assert bad.status_code == 422 and "takes no parameter 'queue'" in bad.json()["detail"]
    assert amp.status_code == 422 and "without '&'" in amp.json()["detail"]

    # The single-dashboard socket takes the same parameters.
    async with connect(noc.ws_url + "/ws/dashboards/noc?site=B", additional_headers=noc.auth("read")) as ws:
        snap = await recv_json(ws)
        assert snap["type"] == "snapshot" and snap["dashboard"] == "noc?site=B"
        assert snap["tiles"]["open_now"]["value"] == 1


async def test_one_socket_carries_several_dashboards(noc):
    async with connect(noc.ws_url + "/ws/screens", additional_headers=noc.auth("read")) as ws:
        await ws.send(json.dumps({"type": "subscribe", "dashboard": "noc", "params": {"site": "A"}}))
        assert await recv_json(ws) == {"type": "subscribed", "dashboard": "noc?site=A"}
        snap_a = await recv_json(ws)
        assert snap_a["type"] == "snapshot" and snap_a["dashboard"] == "noc?site=A"
        assert snap_a["tiles"]["open_now"]["value"] == 2
        await ws.send(json.dumps({"type": "subscribe", "dashboard": "noc"}))
        snap = await frame_of(ws, "noc", "snapshot")
        assert snap["tiles"]["open_now"]["value"] == 3

        # An event of site A updates both views, each with its own epoch/seq.
        async with keyed_client(noc) as client:
            resp = await client.post("/api/v1/events", json=[alarm("a1", "A", "critical", 5, "cleared")])
            assert resp.status_code == 202
        upd_a = await frame_of(ws, "noc?site=A", "update")
        assert upd_a["seq"] == snap_a["seq"] + 1 and upd_a["tiles"]["open_now"]["value"] == 1
        upd = await frame_of(ws, "noc", "update")
        assert upd["tiles"]["open_now"]["value"] == 2

        # Unsubscribed: nothing more of that view, while the other goes on (its heartbeats).
        await ws.send(json.dumps({"type": "unsubscribe", "dashboard": "noc?site=A"}))
        await frame_of(ws, "noc?site=A", "unsubscribed")
        async with keyed_client(noc) as client:
            resp = await client.post("/api/v1/events", json=[alarm("a3", "A", "major", 1)])
            assert resp.status_code == 202
        upd = await frame_of(ws, "noc", "update")
        assert upd["tiles"]["open_now"]["value"] == 3
        seen = [await recv_json(ws) for _ in range(3)]  # the other view's heartbeats go on
        assert all(m.get("dashboard") == "noc" for m in seen + _UNREAD[id(ws)]), seen

        # Resume a view from its epoch/seq: the missed updates and a heartbeat, no snapshot.
        await ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "dashboard": "noc",
                    "params": {"site": "A"},
                    "epoch": upd_a["epoch"],
                    "since": upd_a["seq"],
                }
            )
        )
        await frame_of(ws, "noc?site=A", "subscribed")
        missed = await frame_of(ws, "noc?site=A", "update")
        assert missed["seq"] == upd_a["seq"] + 1
        assert missed["tiles"]["open_now"]["value"] == 2
        beat = await frame_of(ws, "noc?site=A", "heartbeat")
        assert beat["seq"] == missed["seq"]

        # Refusals answer that subscription only.
        await ws.send(json.dumps({"type": "subscribe", "dashboard": "nope"}))
        err = await frame_of(ws, "nope", "error")
        assert err["status"] == 404
        await ws.send(json.dumps({"type": "subscribe", "dashboard": "noc", "params": {"queue": "PS"}}))
        err = await frame_of(ws, "noc?queue=PS", "error")
        assert err["status"] == 422
        await ws.send(json.dumps({"type": "subscribe", "dashboard": "contact-centre"}))
        await frame_of(ws, "contact-centre", "snapshot")
        await ws.send(json.dumps({"type": "subscribe", "dashboard": "noc", "params": {"site": "B"}}))
        err = await frame_of(ws, "noc?site=B", "error")  # ws_max_views_per_socket = 3
        assert err["status"] == 429 and "PULSEBOARD_WS_MAX_VIEWS_PER_SOCKET" in err["message"]
        await ws.send("hello")
        err = await frame_of(ws, None, "error")
        assert err["status"] == 422
        await ws.send('{"type":"ping"}')
        await frame_of(ws, None, "pong")

    # A display key watches its own dashboard only.
    async with connect(noc.ws_url + "/ws/screens", additional_headers=noc.auth("display", "noc")) as ws:
        await ws.send(json.dumps({"type": "subscribe", "dashboard": "contact-centre"}))
        err = await frame_of(ws, "contact-centre", "error")
        assert err["status"] == 403
        await ws.send(json.dumps({"type": "subscribe", "dashboard": "noc"}))
        await frame_of(ws, "noc", "snapshot")


async def test_feed_silence_after_every_s_of_wall_time(noc):
    async def tiles(**params: str) -> dict:
        async with keyed_client(noc) as client:
            return (await client.get("/api/v1/dashboards/noc", params=params)).json()["tiles"]

    arrived = NOW  # the fixture's events arrived at NOW (wall clock = view clock here)
    assert all(t["feed"] is None for t in (await tiles()).values())
    noc.clock.set(arrived + timedelta(seconds=300))
    assert all(t["feed"] is None for t in (await tiles()).values())  # not longer than every_s yet
    async with connect(noc.ws_url + "/ws/dashboards/noc", additional_headers=noc.auth("read")) as ws:
        snap = await recv_json(ws)
        assert snap["tiles"]["open_now"]["feed"] is None
        noc.clock.set(arrived + timedelta(seconds=301))
        want = {"source": None, "every_s": 300.0, "since": arrived.isoformat(), "seen": True}
        while True:  # the hub's next time refresh sends the change (the socket itself is fine)
            msg = await recv_json(ws)
            if msg["type"] == "update" and "open_now" in msg["tiles"]:
                break
        assert msg["tiles"]["open_now"]["feed"] == want
        assert {tid for tid, t in msg["tiles"].items() if t["feed"] == want} == set(snap["tiles"])
        narrowed = await tiles(site="A")
        assert all(t["feed"] == want for t in narrowed.values())  # a narrowed view: the same feeds
        # Contact centre's feed is its own source (anonymous-bank), never seen since the start.
        async with keyed_client(noc) as client:
            cc = (await client.get("/api/v1/dashboards/contact-centre")).json()["tiles"]
        assert cc["offered_today"]["feed"] == {
            "source": "anonymous-bank",
            "every_s": 300.0,
            "since": NOW.isoformat(),
            "seen": False,
        }
        # Events again: fine at once.
        async with keyed_client(noc) as client:
            resp = await client.post("/api/v1/events", json=[alarm("c1", "C", "major", 0)])
            assert resp.status_code == 202
        while True:
            msg = await recv_json(ws)
            if msg["type"] == "update" and "open_now" in msg["tiles"]:
                break
        assert all(t["feed"] is None for t in msg["tiles"].values())


async def test_playlists(noc, tmp_path: Path):
    async with keyed_client(noc) as client:
        got = (await client.get("/api/v1/playlists/noc-rotation")).json()
        missing = await client.get("/api/v1/playlists/nope")
        page = await client.get("/wall/playlist/noc-rotation")
    assert got["interval_s"] == 30 and got["title"] == "NOC rotation"
    assert [e["view"] for e in got["dashboards"]] == ["noc", "noc?service=Git Operations", "contact-centre"]
    assert got["dashboards"][1]["params"] == {"service": "Git Operations"}
    assert missing.status_code == 404
    assert page.status_code == 200 and "wall.js" in page.text


@pytest.mark.parametrize(
    ("yaml_text", "says"),
    [
        ("playlists: {p1: {dashboards: [nope]}}", "unknown dashboard 'nope'"),
        (
            "playlists: {p1: {dashboards: [{dashboard: noc, params: {queue: PS}}]}}",
            "declares no parameter(s) ['queue']",
        ),
        ("playlists: {p1: {interval_s: 1, dashboards: [noc]}}", "interval_s"),
        ("playlists: {noc-rotation: {dashboards: [noc]}}", "defined by another pack too"),
        (
            "kpis: {n: {unit: x, formula: {count: m}}}\nmeasures: {m: {event: t}}\n"
            "dashboards: {d1: {tiles: [{kpi: n}], feeds: [{every_s: 5, tiles: [zz]}]}}",
            "unknown tile id(s) ['zz']",
        ),
        (
            "kpis: {n: {unit: x, formula: {count: m}}}\nmeasures: {m: {event: t}}\n"
            "dashboards: {d1: {tiles: [{kpi: n}], params: [site]}}",
            "a parameter narrows tiles by a rolled-up dimension",
        ),
    ],
)
def test_bad_playlists_feeds_and_params_are_refused(tmp_path: Path, yaml_text: str, says: str):
    (tmp_path / "extra.yaml").write_text("pack: extra\n" + yaml_text + "\n", encoding="utf-8")
    with pytest.raises(PackError) as exc:
        load_packs(tmp_path)
    assert says in str(exc.value)


async def test_narrowed_views_are_capped(make_settings, start_server):
    srv = await start_server(make_settings(max_dashboard_views=1), clock=ManualClock(NOW))
    async with keyed_client(srv) as client:
        assert (await client.get("/api/v1/dashboards/noc", params={"site": "A"})).status_code == 200
        # Full, but nobody watches site A: it is forgotten to make room.
        assert (await client.get("/api/v1/dashboards/noc", params={"site": "B"})).status_code == 200
        async with connect(srv.ws_url + "/ws/dashboards/noc?site=B", additional_headers=srv.auth("read")) as ws:
            assert (await recv_json(ws))["dashboard"] == "noc?site=B"
            refused = await client.get("/api/v1/dashboards/noc", params={"site": "C"})
            assert refused.status_code == 422
            assert "PULSEBOARD_MAX_DASHBOARD_VIEWS" in refused.json()["detail"]
            assert (await client.get("/api/v1/dashboards/noc")).status_code == 200  # the whole dashboard always
