"""Access: every route declares its scope; the scope x route matrix; keys, sessions, pairing,
revocation closing sockets; no usable key in a database dump (issue 4, BAD_INPUTS 23-25, 30)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from app.auth.deps import SCOPE_KEY
from app.auth.keys import CACHE_TTL_S, KeyStore
from app.cli import main as cli
from app.cli.common import store_url
from app.clock import ManualClock
from app.metrics.calendar import to_us
from tests.conftest import settings_to_env
from tests.helpers import PACKS_DIR, sample

WS_ROUTES = {"/ws/dashboards/{slug}", "/ws/screens"}  # WebSocket routes check their scope in the handler


@pytest.fixture
async def srv(make_settings, start_server):
    return await start_server(make_settings(packs_dir=PACKS_DIR))


def _all_routes(routes):
    """Routes, with included routers flattened (FastAPI may keep them as lazy wrappers)."""
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from _all_routes(inner.routes)
        else:
            yield r


def test_every_route_declares_its_scope(make_settings):
    from app.main import create_app

    app = create_app(make_settings(packs_dir=PACKS_DIR))
    routes = list(_all_routes(app.routes))
    api = [r for r in routes if isinstance(r, APIRoute)]
    assert len(api) >= 30
    undeclared = [r.path for r in api if SCOPE_KEY not in (r.openapi_extra or {})]
    assert undeclared == []
    assert {r.path for r in routes if isinstance(r, (APIWebSocketRoute, WebSocketRoute))} == WS_ROUTES


# (method, path, body, allowed scopes); display means the display key of generic-wall.
MATRIX = [
    ("POST", "/api/v1/events", {"type": "sample", "ts": "2024-01-01T00:00:00Z"}, {"ingest"}),
    ("GET", "/api/v1/kpis", None, {"read", "admin", "comment"}),
    (
        "GET",
        "/api/v1/kpis/sample_count/series?grain=day&start=2024-01-01T00:00:00Z&end=2024-01-02T00:00:00Z",
        None,
        {"read", "admin", "comment"},
    ),
    ("GET", "/api/v1/dashboards", None, {"read", "admin"}),
    ("GET", "/api/v1/dashboards/generic-wall", None, {"read", "admin", "display"}),
    ("GET", "/api/v1/dashboards/contact-centre", None, {"read", "admin"}),
    ("GET", "/api/v1/snapshots/generic-wall/day/2024-01-01", None, {"read", "admin", "comment"}),
    ("GET", "/api/v1/snapshots/generic-wall/day/2024-01-01/versions", None, {"read", "admin", "comment"}),
    ("GET", "/api/v1/snapshots/generic-wall/day/2024-01-01/export.csv", None, {"read", "admin", "comment"}),
    ("GET", "/api/v1/reconciliation/generic-wall/day/2024-01-01", None, {"read", "admin", "comment"}),
    ("GET", "/api/v1/scorecards/generic-wall/2024-01", None, {"read", "admin", "comment"}),
    ("GET", "/api/v1/scorecards/generic-wall/2024-01/export.csv", None, {"read", "admin", "comment"}),
    ("POST", "/api/v1/snapshots/generic-wall/cut", {"grain": "day", "period": "2024-01-01"}, {"admin"}),
    (
        "POST",
        "/api/v1/scorecards/generic-wall/2024-01/commentary",
        {"kpi": "sample_count", "text": "x"},
        {"admin", "comment"},
    ),
    ("POST", "/api/v1/scorecards/generic-wall/2024-01/publish", {"by": "x"}, {"admin"}),
    ("GET", "/api/v1/keys", None, {"admin"}),
    ("POST", "/api/v1/keys", {"scope": "read"}, {"admin"}),
    ("POST", "/api/v1/pairings/NOPE/approve", {"dashboard": "generic-wall"}, {"admin"}),
    ("GET", "/api/v1/pairings", None, {"admin"}),
    (
        "GET",
        "/api/v1/kpis/sample_count/events?start=2024-01-01T00:00:00Z&end=2024-01-02T00:00:00Z",
        None,
        {"read", "admin", "comment"},
    ),
    ("GET", "/api/v1/days/generic-wall/2024-01-01", None, {"read", "admin", "comment"}),
    (
        "POST",
        "/api/v1/days/generic-wall/2024-01-01/commentary",
        {"kpi": "sample_count", "text": "x"},
        {"admin", "comment"},
    ),
    ("POST", "/api/v1/days/generic-wall/2024-01-01/signoff", None, {"admin"}),
    ("GET", "/api/v1/breaches/generic-wall?day=2024-01-01", None, {"read", "admin", "comment"}),
    ("GET", "/api/v1/scorecards/generic-wall/2024-01/publications", None, {"read", "admin", "comment"}),
]
KINDS = ["none", "malformed", "unknown", "revoked", "ingest", "read", "display", "admin", "comment"]


async def _key_of(srv, kind: str) -> str | None:
    keys = srv.keys
    if kind == "none":
        return None
    if kind == "malformed":
        return "not a key at all"
    if kind == "unknown":
        return "pba_" + "A" * 40
    if kind == "revoked":
        key, info = await srv.runtime.keys.create("read", "to revoke", 0)
        await srv.runtime.keys.revoke(info["id"], 1)
        return key
    if kind == "comment":
        return (await srv.runtime.keys.create("comment", "a commenter", 0, holder="Cora"))[0]
    return {
        "ingest": keys.ingest["default"],
        "read": keys.read,
        "display": keys.display["generic-wall"],
        "admin": keys.admin,
    }[kind]


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_scope_by_route_matrix(srv, client_for):
    bodies_401 = set()
    async with client_for(srv, auth=False) as client:
        for kind in KINDS:
            key = await _key_of(srv, kind)
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            for method, path, body, allowed in MATRIX:
                resp = await client.request(method, path, json=body, headers=headers)
                where = f"{kind} {method} {path}"
                if kind in ("none", "malformed", "unknown", "revoked"):
                    assert resp.status_code == 401, (where, resp.status_code, resp.text)
                    assert resp.headers["www-authenticate"] == 'Bearer realm="pulseboard"'
                    bodies_401.add(resp.text)
                elif kind in allowed:
                    assert resp.status_code not in (401, 403), (where, resp.status_code, resp.text)
                elif kind == "display" and path == "/api/v1/dashboards/contact-centre":
                    # another dashboard's id is not confirmed to a display key (BAD_INPUTS 28)
                    assert resp.status_code == 404, (where, resp.status_code, resp.text)
                else:
                    assert resp.status_code == 403, (where, resp.status_code, resp.text)
    assert len(bodies_401) == 1  # the same answer whatever was wrong with the key


async def test_key_in_the_url_is_refused(srv, client_for):
    async with client_for(srv, auth=False) as client:
        resp = await client.get("/api/v1/kpis", params={"api_key": srv.keys.read})
        assert resp.status_code == 401
        resp = await client.get("/api/v1/kpis", params={"key": srv.keys.read}, headers=srv.auth("read"))
        assert resp.status_code == 401


async def test_every_failure_does_the_same_work(srv, client_for, monkeypatch):
    """No key, a malformed key and an unknown key each cost one hash and one lookup, so the
    answer's timing does not tell them apart (checked by counting, not by timing)."""
    lookups: list[str] = []
    real_find = srv.runtime.keys.find

    async def counting_find(key: str):
        lookups.append(key)
        return await real_find(key)

    monkeypatch.setattr(srv.runtime.keys, "find", counting_find)
    async with client_for(srv, auth=False) as client:
        for headers in (
            {},
            {"Authorization": "Bearer x"},
            {"Authorization": "Bearer pbr_" + "B" * 40},
            {"Authorization": "Basic abc"},
        ):
            lookups.clear()
            assert (await client.get("/api/v1/kpis", headers=headers)).status_code == 401
            assert len(lookups) == 1, headers


async def test_ingest_key_is_bound_to_its_source_and_types(srv, client_for):
    key, _ = await srv.runtime.keys.create("ingest", "orders only", 0, source="shop", event_types=["orders"])
    async with client_for(srv, auth=False) as client:
        h = {"Authorization": f"Bearer {key}"}
        ok = await client.post(
            "/api/v1/events", json={"type": "orders", "ts": "2024-01-01T00:00:00Z", "id": "o1"}, headers=h
        )
        assert ok.status_code == 202
        other = await client.post(
            "/api/v1/events", json={"type": "orders", "ts": "2024-01-01T00:00:00Z", "source": "crm"}, headers=h
        )
        assert other.status_code == 403 and "source 'crm'" in other.json()["detail"]
        wrong_type = await client.post("/api/v1/events", json=sample("2024-01-01T00:00:00Z"), headers=h)
        assert wrong_type.status_code == 403 and "type 'sample'" in wrong_type.json()["detail"]
    async with srv.runtime.engine.connect() as conn:
        from sqlalchemy import text

        rows = (await conn.execute(text("SELECT source, event_id FROM event"))).all()
    assert rows == [("shop", "o1")]  # the event without a source took the key's


async def test_keys_api_shows_a_key_once_and_revokes_it(make_settings, start_server, client_for):
    clock = ManualClock(datetime(2024, 6, 10, 12, tzinfo=UTC))
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=clock)
    async with client_for(srv) as client:
        created = (await client.post("/api/v1/keys", json={"scope": "read", "name": "tv"})).json()
        key = created["key"]
        assert key.startswith("pbr_") and len(key) >= 4 + 40 and created["hint"] == f"pbr_…{key[-4:]}"
        listing = (await client.get("/api/v1/keys", headers=srv.auth("admin"))).json()
        assert key not in str(listing) and any(k["id"] == created["id"] for k in listing)
        bad = await client.post("/api/v1/keys", json={"scope": "ingest"})
        assert bad.status_code == 422 and "source" in bad.json()["detail"]
        as_key = {"Authorization": f"Bearer {key}"}
        assert (await client.get("/api/v1/kpis", headers=as_key)).status_code == 200
        revoked = await client.request("DELETE", f"/api/v1/keys/{created['id']}", headers=srv.auth("admin"))
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert (await client.get("/api/v1/kpis", headers=as_key)).status_code == 401  # revoked here: at once

        # Revoked by another process (the CLI, another instance): this one's lookup cache keeps
        # the key for CACHE_TTL_S of its clock, then refuses it.
        other = (await client.post("/api/v1/keys", json={"scope": "read", "name": "tv 2"})).json()
        as_other = {"Authorization": f"Bearer {other['key']}"}
        assert (await client.get("/api/v1/kpis", headers=as_other)).status_code == 200
        elsewhere = KeyStore(srv.runtime.engine, clock)
        assert (await elsewhere.revoke(other["id"], to_us(clock.now())))["revoked_at"]
        clock.advance(CACHE_TTL_S - 0.001)
        assert (await client.get("/api/v1/kpis", headers=as_other)).status_code == 200
        clock.advance(0.002)
        assert (await client.get("/api/v1/kpis", headers=as_other)).status_code == 401


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_a_database_dump_holds_no_usable_key(srv, make_settings):
    db_file = make_settings().data_dir / "pulseboard.db"
    dump = b"".join(p.read_bytes() for p in db_file.parent.glob("pulseboard.db*"))
    for key in [srv.keys.admin, srv.keys.read, *srv.keys.ingest.values(), *srv.keys.display.values()]:
        assert key.encode() not in dump
        assert key[4:].encode() not in dump


async def test_sockets_need_a_key_of_the_right_dashboard_and_close_on_revocation(srv):
    url = srv.ws_url + "/ws/dashboards/generic-wall"
    with pytest.raises(InvalidStatus) as info:
        async with connect(url) as ws:
            await ws.recv()
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            srv.ws_url + "/ws/dashboards/contact-centre", additional_headers=srv.auth("display", "generic-wall")
        ) as ws:
            await ws.recv()
    assert info.value.response.status_code == 403
    key, meta = await srv.runtime.keys.create("display", "tv", 0, dashboard="generic-wall")
    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        assert '"snapshot"' in await ws.recv()
        began = time.monotonic()
        await srv.runtime.keys.revoke(meta["id"], 1)
        with pytest.raises(ConnectionClosedError):
            while True:
                await asyncio.wait_for(ws.recv(), 6)
        assert ws.close_code == 4401 and time.monotonic() - began <= 5


async def test_browser_session_cookie_and_csrf(srv, client_for):
    async with client_for(srv, auth=False) as client:
        refused = await client.post("/api/v1/session", json={"key": srv.keys.ingest["default"]})
        assert refused.status_code == 401
        signed = await client.post("/api/v1/session", json={"key": srv.keys.admin})
        assert signed.status_code == 200
        cookie = signed.headers["set-cookie"].lower()
        assert (
            "httponly" in cookie and "samesite=strict" in cookie and srv.keys.admin.lower() not in signed.text.lower()
        )
        assert (await client.get("/api/v1/kpis")).status_code == 200  # the cookie authenticates reads
        note = {"grain": "day", "period": "2999-01-01"}
        no_origin = await client.post("/api/v1/snapshots/generic-wall/cut", json=note)
        assert no_origin.status_code == 403  # a cookie alone never changes anything
        same = await client.post("/api/v1/snapshots/generic-wall/cut", json=note, headers={"Origin": srv.url})
        assert same.status_code == 409  # allowed through (the period is in the future)
        foreign = await client.post(
            "/api/v1/snapshots/generic-wall/cut", json=note, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        assert (await client.request("DELETE", "/api/v1/session")).status_code == 200


async def test_pairing_a_screen_without_typing_secrets(srv, client_for):
    async with client_for(srv, auth=False) as screen, client_for(srv) as admin:
        started = (await screen.post("/api/v1/pairings")).json()
        assert len(started["code"]) == 8
        pending = (await screen.post("/api/v1/pairings/claim", json={"secret": started["secret"]})).json()
        assert pending["status"] == "pending"
        approved = await admin.post(f"/api/v1/pairings/{started['code']}/approve", json={"dashboard": "generic-wall"})
        assert approved.status_code == 200
        claim = await screen.post("/api/v1/pairings/claim", json={"secret": started["secret"]})
        assert claim.json() == {"status": "approved", "dashboard": "generic-wall"}
        assert "pbd_" not in claim.text  # the key travels only in the HttpOnly cookie
        assert (await screen.get("/api/v1/dashboards/generic-wall")).status_code == 200
        assert (await screen.get("/api/v1/dashboards/contact-centre")).status_code == 404  # BAD_INPUTS 28
        again = await screen.post("/api/v1/pairings/claim", json={"secret": started["secret"]})
        assert again.status_code == 404  # one claim only
        cookie = screen.cookies.get("pb_key")
    async with connect(
        srv.ws_url + "/ws/dashboards/generic-wall", additional_headers={"Cookie": f"pb_key={cookie}", "Origin": srv.url}
    ) as ws:
        assert '"snapshot"' in await ws.recv()


async def test_cross_site_websocket_hijacking_is_refused(srv):
    """A foreign page cannot use the screen's cookie: its Origin is refused at the handshake."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            srv.ws_url + "/ws/dashboards/generic-wall",
            additional_headers={"Cookie": f"pb_key={srv.keys.read}"},
            origin="https://evil.example",
        ) as ws:
            await ws.recv()
    assert info.value.response.status_code == 403


async def test_keys_cli(make_settings, monkeypatch):
    settings = make_settings(packs_dir=PACKS_DIR)
    settings_to_env(settings, monkeypatch)
    runner = CliRunner()
    store = f"store: {store_url(settings)}, zone: UTC"
    empty = await asyncio.to_thread(runner.invoke, cli, ["keys", "list"])
    assert empty.exit_code == 0 and empty.stdout.startswith("no keys")
    assert empty.stderr.splitlines() == [store]  # which store and zone (tests/test_cli.py: as a real process)
    made = await asyncio.to_thread(runner.invoke, cli, ["keys", "create", "--scope", "ingest", "--source", "pbx"])
    assert made.exit_code == 0, made.output
    assert made.stderr.splitlines() == [store]
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("pbi_")
    listed = await asyncio.to_thread(runner.invoke, cli, ["keys", "list"])
    assert "ingest" in listed.stdout and key not in listed.stdout and key[-4:] in listed.stdout
    key_id = listed.stdout.split()[0]
    revoked = await asyncio.to_thread(runner.invoke, cli, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    bad = await asyncio.to_thread(runner.invoke, cli, ["keys", "create", "--scope", "display"])
    assert bad.exit_code != 0 and "dashboard" in bad.output


async def test_over_the_per_key_rate_is_429_with_retry_after(make_settings, start_server, client_for):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, ingest_rate_per_key_per_s=1, ingest_burst_per_key=3))
    async with client_for(srv) as client:
        answers = [
            await client.post("/api/v1/events", json=sample("2024-01-01T00:00:00Z", id=f"r{i}")) for i in range(5)
        ]
        assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
        assert answers[3].headers["retry-after"] == "1" and answers[3].json()["status"] == 429
        other, _ = await srv.runtime.keys.create("ingest", "other", 0, source="default")
        own_bucket = await client.post(
            "/api/v1/events", json=sample("2024-01-01T00:00:00Z", id="r9"), headers={"Authorization": f"Bearer {other}"}
        )
        assert own_bucket.status_code == 202  # one key's excess never limits another key


def test_token_bucket_refills():
    from app.auth.ratelimit import RateLimiter

    limiter = RateLimiter(rate_per_s=2, burst=2)
    assert [limiter.try_acquire("k", now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.try_acquire("k", now=0.0) == pytest.approx(0.5)
    assert limiter.try_acquire("k", now=0.5) == 0.0


async def test_auth_disabled_opens_every_route(make_settings, start_server, client_for):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, auth_disabled=True))
    async with client_for(srv, auth=False) as client:
        assert (await client.post("/api/v1/events", json=sample("2024-01-01T00:00:00Z"))).status_code == 202
        assert (await client.get("/api/v1/kpis")).status_code == 200
        assert (await client.get("/api/v1/keys")).status_code == 200
    async with connect(srv.ws_url + "/ws/dashboards/generic-wall") as ws:
        assert '"snapshot"' in await ws.recv()
