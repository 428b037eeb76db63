"""Issue 10 ("what an outside attack found"), the HTTP-edge items beyond the connection limits of
``tests/test_edge.py``: key creation (14), the per-key WebSocket cap under concurrent handshakes
(8), the open redirect after sign-in (7), ``?since=`` (15), spoofed client addresses and the
pairing cap per network (16), CSV formulas after separators (13), ``/docs`` (19) and the smaller
items (20).  Each test runs the attack and asserts the answer, what is stored, and that other
clients are unaffected; on both stores where a store is involved.

Rows for ``shared/BAD_INPUTS.md`` (``tests/test_bad_inputs.py`` style; issue 10 item numbers):

====  =================================================================================================
item  tests
====  =================================================================================================
 3    test_edge.py::test_a_300_mb_content_length_on_a_control_route_is_413_before_the_body (413 at once),
      ::test_chunked_bodies_past_the_control_limit_are_413_and_rss_stays_flat,
      ::test_the_control_limit_is_configurable_and_the_ingest_limit_separate,
      ::test_oversize_headers_and_targets_are_431_and_414, ::test_public_routes_are_rate_limited_per_address
 4    test_edge.py::test_a_ping_flood_is_closed_with_1008_and_others_are_served,
      ::test_inbound_bytes_are_limited_per_connection
 5    test_edge.py::test_slow_headers_are_408_and_closed, ::test_a_trickled_body_is_408_and_closed,
      ::test_connections_per_address_are_capped_and_others_served, ::test_the_process_connection_cap_answers_503,
      ::test_oversize_headers_and_targets_are_431_and_414 (WebSocket handshake: 414)
 7    test_next_after_sign_in_never_leaves_the_origin (Chromium)
 8    test_concurrent_handshakes_of_one_key_respect_its_cap
 9    test_a_series_with_too_many_periods_is_refused_before_any_query, test_raw_scans_are_bounded_and_answer_when_within,
      test_read_keys_are_rate_limited_and_others_unaffected
13    test_csv_formulas_after_separators_are_neutralised_in_every_locale
14    test_key_bindings_that_do_not_fit_are_422_and_nothing_is_stored, test_expiry_over_http_is_enforced,
      test_cli_refuses_misfit_bindings_and_sets_expiry
15    test_odd_since_values_get_a_snapshot_not_a_crash
16    test_a_spoofed_forwarded_for_that_is_no_address_is_422, test_pairings_are_capped_per_network
19    test_interactive_docs_are_off_by_default_and_opt_in
20    test_duplicate_json_keys_on_control_routes_are_422_and_nothing_is_stored, test_the_origin_check_compares_the_scheme,
      test_authenticated_reads_are_cache_control_private, test_stale_after_is_bounded,
      test_a_note_cannot_land_after_the_scorecard_is_published
====  =================================================================================================
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.clock import ManualClock
from app.store.schema import api_key, pairing
from tests.helpers import PACKS_DIR, wait_until

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WALL = "/ws/dashboards/generic-wall"
EXE = Path(sys.executable).parent / "pulseboard"


@pytest.fixture
async def srv(make_settings, start_server):
    return await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))


async def key_rows(srv) -> int:
    async with srv.runtime.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(api_key))).scalar_one()


def admin(srv) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("admin"))


# --- 14: key creation forbids unknown fields and misfit bindings; expiry works ---------------------


MISFITS = [
    ({"scope": "read", "dashboard": "generic-wall"}, "dashboard"),  # was: an unrestricted read key
    ({"scope": "admin", "source": "x"}, "source"),
    ({"scope": "read", "event_types": ["sample"]}, "event_types"),
    ({"scope": "ingest", "source": "s", "event_types": ["no such type"]}, "event_types.0"),
    ({"scope": "ingest", "source": "s", "event_types": ["nosuchtype"]}, "event_types.0"),
    ({"scope": "ingest", "source": "s", "event_types": []}, "event_types"),
    ({"scope": "ingest", "source": "s", "event_types": ["sample", "sample"]}, "event_types"),
    ({"scope": "display", "dashboard": "nope"}, "dashboard"),
    ({"scope": "read", "expires_at": "2026-11-30T11:00:00Z"}, "expires_at"),  # the past
    ({"scope": "read", "expires_at": "2026-12-30T11:00:00"}, "expires_at"),  # no offset
    ({"scope": "read", "expires_at": "9999-12-31T23:00:00+00:00"}, "expires_at"),  # too far
    ({"scope": "read", "expiry": "2027-01-01T00:00:00Z"}, "expiry"),  # unknown field
    ({"scope": "read", "is_admin": True}, "is_admin"),
]


async def test_key_bindings_that_do_not_fit_are_422_and_nothing_is_stored(srv):
    before = await key_rows(srv)
    async with admin(srv) as c:
        for body, field in MISFITS:
            answer = await c.post("/api/v1/keys", json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert field in [e["field"] for e in answer.json()["errors"]], (body, answer.json())
        assert await key_rows(srv) == before
        fits = await c.post("/api/v1/keys", json={"scope": "ingest", "source": "s", "event_types": ["sample"]})
        assert fits.status_code == 201 and fits.json()["event_types"] == ["sample"]
    assert await key_rows(srv) == before + 1


async def test_expiry_over_http_is_enforced(make_settings, start_server):
    clock = ManualClock(NOW)
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=clock)
    async with admin(srv) as c:
        made = await c.post(
            "/api/v1/keys", json={"scope": "read", "name": "temp", "expires_at": "2026-11-30T14:00:00+01:00"}
        )
        assert made.status_code == 201, made.text
        assert made.json()["expires_at"] == "2026-11-30T13:00:00+00:00"
        key = made.json()["key"]
        listed = {k["id"]: k for k in (await c.get("/api/v1/keys")).json()}
        assert listed[made.json()["id"]]["expires_at"] == "2026-11-30T13:00:00+00:00"
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as r:
        assert (await r.get("/api/v1/dashboards/generic-wall")).status_code == 200
        clock.advance(3601)  # past the expiry (and the 2 s lookup cache)
        assert (await r.get("/api/v1/dashboards/generic-wall")).status_code == 401
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("read")) as other:
        assert (await other.get("/api/v1/dashboards/generic-wall")).status_code == 200  # others unaffected


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    return subprocess.run([str(EXE), *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=120)


def test_cli_refuses_misfit_bindings_and_sets_expiry(tmp_path: Path):
    bad = _cli(tmp_path, "keys", "create", "--scope", "display", "--dashboard", "nope")
    assert bad.returncode == 1 and "no dashboard 'nope'" in bad.stderr
    misfit = _cli(tmp_path, "keys", "create", "--scope", "read", "--dashboard", "itsm")
    assert misfit.returncode == 1 and "not bound to a dashboard" in misfit.stderr
    types = _cli(tmp_path, "keys", "create", "--scope", "ingest", "--source", "s", "--event-type", "nope")
    assert types.returncode == 1 and "no loaded pack reads event type 'nope'" in types.stderr
    past = _cli(tmp_path, "keys", "create", "--scope", "read", "--expires-at", "2020-01-01T00:00:00+00:00")
    assert past.returncode == 1 and "not in the future" in past.stderr
    naive = _cli(tmp_path, "keys", "create", "--scope", "read", "--expires-at", "2030-01-01T00:00:00")
    assert naive.returncode == 2 and "naive" in naive.stderr
    listed = _cli(tmp_path, "keys", "list")
    assert listed.stdout.startswith("no keys"), listed.stdout  # nothing was created
    made = _cli(tmp_path, "keys", "create", "--scope", "read", "--expires-in-days", "2")
    assert made.returncode == 0, made.stderr
    assert ", expires 20" in made.stdout.splitlines()[0]


# --- 8: the per-key WebSocket cap holds under concurrent handshakes --------------------------------


async def test_concurrent_handshakes_of_one_key_respect_its_cap(make_settings, start_server):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, ws_max_connections_per_key=5), clock=ManualClock(NOW))
    headers = srv.auth("read")
    opened: list = []

    async def one() -> int:
        try:
            ws = await connect(srv.ws_url + WALL, additional_headers=headers, open_timeout=30)
        except InvalidStatus as exc:
            return exc.response.status_code
        opened.append(ws)
        return 101

    try:
        answers = await asyncio.gather(*(one() for _ in range(60)))
        assert sorted(answers) == [101] * 5 + [429] * 55
        assert srv.runtime.sockets.total() == 5
        async with connect(srv.ws_url + WALL, additional_headers=srv.auth("admin")) as other:  # another key
            await other.recv()
    finally:
        for ws in opened:
            await ws.close()
    await wait_until(lambda: srv.runtime.sockets.total() == 0 or None, 10, what="every slot to be freed")


# --- 15: ?since= takes 1-18 ASCII digits only ------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_odd_since_values_get_a_snapshot_not_a_crash(srv):
    """A superscript digit or 5,000 digits passed str.isdigit() and crashed int() after the accept
    (1006, traceback); now anything but 1-18 ASCII digits is ignored: the screen gets a snapshot."""
    headers = srv.auth("read")
    async with connect(srv.ws_url + WALL, additional_headers=headers) as first:
        epoch = json.loads(await first.recv())["epoch"]
    for since in ("\u00b9", "\u0663", "9" * 5000, "1" * 19, "-1", "+1", " 1"):
        query = httpx.QueryParams({"epoch": epoch, "since": since})
        async with connect(f"{srv.ws_url}{WALL}?{query}", additional_headers=headers) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "snapshot", since[:10]
            await ws.ping()
    async with connect(f"{srv.ws_url}{WALL}?epoch={epoch}&since=0", additional_headers=headers) as ok:
        assert json.loads(await asyncio.wait_for(ok.recv(), 10))["type"] in ("update", "heartbeat")


# --- 16: client addresses are validated; pairings capped per network -------------------------------


async def test_a_spoofed_forwarded_for_that_is_no_address_is_422(srv):
    for forwarded in ("not-an-address", "10.0.0.1 OR 1=1", "<script>", "10.0.0.256", "x" * 200):
        async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers={"X-Forwarded-For": forwarded}) as c:
            answer = await c.post("/api/v1/pairings")
        assert answer.status_code == 422, (forwarded, answer.text)
        assert answer.json()["errors"] == [{"field": "X-Forwarded-For", "message": "not an IP address"}]
    async with srv.runtime.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(pairing))).scalar_one() == 0


async def test_pairings_are_capped_per_network(make_settings, start_server):
    """Spoofed X-Forwarded-For through the trusted proxy: 990 codes in 5 s before.  Now each /24
    holds at most PULSEBOARD_PAIRING_MAX_PENDING_PER_NETWORK; another network is served."""
    srv = await start_server(
        make_settings(packs_dir=PACKS_DIR, pairing_max_pending_per_network=4), clock=ManualClock(NOW)
    )

    async def ask(ip: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers={"X-Forwarded-For": ip}) as c:
            return await c.post("/api/v1/pairings")

    answers = [await ask(f"198.51.100.{i}") for i in range(1, 8)]
    assert [a.status_code for a in answers] == [201] * 4 + [429] * 3
    assert "network" in answers[-1].json()["detail"] and answers[-1].headers["retry-after"]
    v6 = [await ask(f"2001:db8:0:1::{i}") for i in range(1, 7)]
    assert [a.status_code for a in v6] == [201] * 4 + [429] * 2  # one /64
    assert (await ask("203.0.113.7")).status_code == 201  # another network
    async with srv.runtime.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(pairing))).scalar_one() == 9


# --- 7: no open redirect after sign-in -------------------------------------------------------------

NEXT_ATTACKS = [
    "//evil.example/x",
    "/\\evil.example",  # /%5Cevil.example once decoded
    "/\tevil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "\t//evil.example",
    "/.//evil.example",  # normalises to the path //evil.example: protocol-relative if used as a path
    "/%2F/evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "/@evil.example",
]


@pytest.mark.browser
@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_next_after_sign_in_never_leaves_the_origin(srv):
    from tests.test_wall_browser import _launch, _playwright

    async with _playwright()() as pw:
        browser = await _launch(pw)
        try:
            page = await (await browser.new_context()).new_page()
            await page.goto(f"{srv.url}/login")
            targets = await page.evaluate(
                "async (raws) => { const m = await import('/static/common/common.js');"
                " return raws.map((r) => m.safeNext(r)); }",
                NEXT_ATTACKS + ["/day/x?y=1#z"],
            )
            for raw, target in zip(NEXT_ATTACKS, targets, strict=False):
                assert httpx.URL(target).host == "127.0.0.1" and target.startswith(srv.url + "/"), (raw, target)
                assert "evil" not in httpx.URL(target).host, (raw, target)
            assert targets[-1] == f"{srv.url}/day/x?y=1#z"  # a same-site path is kept
            for raw in ("/%5Cevil.example", "/.//evil.example", "/%09/evil.example", "/%0A/evil.example"):
                fresh = await (await browser.new_context()).new_page()
                await fresh.goto(f"{srv.url}/login?next={raw}")
                await fresh.fill("#key", srv.keys.admin)
                await fresh.click("button[type=submit]")
                await fresh.wait_for_url(lambda url: "/login" not in url, timeout=10_000)
                await fresh.wait_for_load_state()
                assert fresh.url.startswith(srv.url + "/"), (raw, fresh.url)
        finally:
            await browser.close()


# --- 9: reads that would be refused are refused first; raw scans bounded; read keys rate limited ---


async def test_a_series_with_too_many_periods_is_refused_before_any_query(srv, monkeypatch):
    from app.query import kpis

    computed: list[int] = []
    real = kpis.kpi_value

    async def counting(*args, **kwargs):
        computed.append(1)
        return await real(*args, **kwargs)

    real_grouped = kpis.reads.aggregate_series

    async def counting_grouped(conn, keys, dim_key, windows, *args, **kwargs):  # a series' grouped read
        computed.extend(1 for _ in windows)
        return await real_grouped(conn, keys, dim_key, windows, *args, **kwargs)

    monkeypatch.setattr(kpis, "kpi_value", counting)
    monkeypatch.setattr(kpis.reads, "aggregate_series", counting_grouped)
    params = {"grain": "minute", "start": "2016-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    async with httpx.AsyncClient(base_url=srv.url, timeout=60, headers=srv.auth("read")) as c:
        answer = await c.get("/api/v1/kpis/sample_count/series", params=params)
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "end"
        assert computed == []  # the attack computed 5,000 points (13.7 s) before this 422
        ok = await c.get(
            "/api/v1/kpis/sample_count/series", params={**params, "grain": "month", "end": "2016-03-01T00:00:00Z"}
        )
        assert ok.status_code == 200 and len(ok.json()["points"]) == 2 and len(computed) == 2


async def test_raw_scans_are_bounded_and_answer_when_within(make_settings, start_server):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, raw_scan_max_events=50), clock=ManualClock(NOW))
    events = [
        {
            "type": "sample",
            "ts": f"2026-11-30T10:{i // 60:02d}:{i % 60:02d}Z",
            "value": 1,
            "dims": {"site": f"s{i % 2}"},
        }
        for i in range(120)
    ]
    async with httpx.AsyncClient(base_url=srv.url, timeout=60, headers=srv.auth("ingest")) as ingest:
        assert (await ingest.post("/api/v1/events", json=events)).status_code == 202
    params = {"grain": "day", "start": "2026-11-30T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
    async with httpx.AsyncClient(base_url=srv.url, timeout=60, headers=srv.auth("read")) as c:
        over = await c.get("/api/v1/kpis/sample_count/series", params={**params, "dims.site": "s1"})
        assert over.status_code == 422, over.text
        assert over.json()["errors"][0]["field"] == "dims" and "PULSEBOARD_RAW_SCAN_MAX_EVENTS" in over.json()["detail"]
        rolled = await c.get("/api/v1/kpis/sample_count/series", params=params)  # no raw scan: answered
        assert rolled.status_code == 200 and rolled.json()["points"][0]["value"] == 120
    roomy = await start_server(
        make_settings(packs_dir=PACKS_DIR, raw_scan_max_events=10_000), clock=ManualClock(NOW)
    )  # same store, a wider budget: the same filter answers
    async with httpx.AsyncClient(base_url=roomy.url, timeout=60, headers=roomy.auth("read")) as c:
        within = await c.get("/api/v1/kpis/sample_count/series", params={**params, "dims.site": "s1"})
        assert within.status_code == 200 and within.json()["points"][0]["value"] == 60


async def test_read_keys_are_rate_limited_and_others_unaffected(make_settings, start_server):
    srv = await start_server(
        make_settings(packs_dir=PACKS_DIR, read_burst_per_key=3, read_rate_per_key_per_s=0.1), clock=ManualClock(NOW)
    )
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("read")) as c:
        answers = [(await c.get("/api/v1/dashboards/generic-wall")).status_code for _ in range(5)]
        assert answers == [200, 200, 200, 429, 429]
        limited = await c.get("/api/v1/dashboards/generic-wall")
        assert int(limited.headers["retry-after"]) >= 1 and "PULSEBOARD_READ_RATE" in limited.json()["detail"]
    async with admin(srv) as other:
        assert (await other.get("/api/v1/dashboards/generic-wall")).status_code == 200


# --- 13: CSV formulas after separators (semicolon locales) -----------------------------------------

SEPARATOR_FORMULAS = [
    "ok;=cmd|' /C calc'!A0",
    "fine,+SUM(1,2)",
    'line one\n=HYPERLINK("http://evil.example")',
    "tab\t@cmd",
    "pipe|-2+3",
]


async def test_csv_formulas_after_separators_are_neutralised_in_every_locale(make_settings, start_server):
    from tests.conftest import keyed_client
    from tests.test_bad_inputs import _june_with_a_note

    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(datetime(2024, 7, 1, 1, tzinfo=UTC)))
    async with keyed_client(srv, timeout=60) as client:
        await _june_with_a_note(srv, client)
        for text in SEPARATOR_FORMULAS:
            note = await client.post(
                "/api/v1/scorecards/generic-wall/2024-06/commentary",
                json={"kpi": "sample_count", "text": text, "author": "x;=evil()"},
            )
            assert note.status_code == 201 and note.json()["text"] == text  # stored as given
        exported = (await client.get("/api/v1/scorecards/generic-wall/2024-06/export.csv")).text
    for delimiter in (",", ";", "\t", "|"):  # however a spreadsheet splits the line
        for row in csv.reader(io.StringIO(exported), delimiter=delimiter):
            for cell in row:
                for piece in re.split(r"[\r\n]+", cell):
                    assert not piece.startswith(("=", "+", "@", "\t")), (delimiter, cell)
                    assert not piece.startswith("-") or re.fullmatch(r"-\d+(\.\d+)?(e-?\d+)?", piece), cell
    rows = list(csv.reader(io.StringIO(exported)))
    assert any("ok;'=cmd|' /C calc'!A0" in c for r in rows for c in r)  # the text is kept, neutralised
    assert exported.startswith('"agenda_rank","kpi",')  # text cells are quoted


# --- 19: /docs is off by default; every page keeps the CSP -----------------------------------------


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_interactive_docs_are_off_by_default_and_opt_in(make_settings, start_server):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            answer = await c.get(path)
            assert answer.status_code == 404, path
            assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert (await c.get("/openapi.json")).status_code == 200  # the machine-readable API stays
        assert (await c.get("/docs/contract")).status_code == 200
    opted = await start_server(make_settings(packs_dir=PACKS_DIR, docs_enabled=True))
    async with httpx.AsyncClient(base_url=opted.url, timeout=30) as c:
        assert (await c.get("/docs")).status_code == 200


# --- 20: the smaller items -------------------------------------------------------------------------


async def test_duplicate_json_keys_on_control_routes_are_422_and_nothing_is_stored(srv):
    before = await key_rows(srv)
    async with admin(srv) as c:
        answer = await c.post(
            "/api/v1/keys",
            content=b'{"scope": "read", "name": "x", "scope": "admin"}',
            headers={"content-type": "application/json"},
        )
        assert answer.status_code == 422 and answer.json()["errors"] == [{"field": "scope", "message": "duplicate key"}]
        nested = await c.post(
            "/api/v1/pairings/XXXX/approve",
            content=b'{"dashboard": "generic-wall", "dashboard": "other"}',
            headers={"content-type": "application/json"},
        )
        assert nested.status_code == 422
    assert await key_rows(srv) == before


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_the_origin_check_compares_the_scheme(srv):
    """A cookie-authenticated change from https://host to the http://host server (or back) is not
    same-origin (RFC 6454): 403; from http://host it passes."""
    host = srv.url.removeprefix("http://")
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, cookies={"pb_key": srv.keys.admin}) as c:
        for origin, status in ((f"https://{host}", 403), (f"http://{host}", 201)):
            answer = await c.post("/api/v1/keys", json={"scope": "read"}, headers={"Origin": origin})
            assert answer.status_code == status, (origin, answer.text)
    wall = srv.keys.display["generic-wall"]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            srv.ws_url + WALL, additional_headers={"Authorization": f"Bearer {wall}"}, origin=f"https://{host}"
        ):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_authenticated_reads_are_cache_control_private(srv):
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("read")) as c:
        for path in ("/api/v1/dashboards/generic-wall", "/api/v1/dashboards"):
            answer = await c.get(path)
            assert answer.status_code == 200 and "private" in answer.headers["cache-control"], path
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as anonymous:
        assert "cache-control" not in (await anonymous.get("/healthz")).headers


@pytest.mark.browser
@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_stale_after_is_bounded(srv):
    """``?stale_after_s=1e308`` disabled STALE on the wall: past 86,400 s it is ignored (the
    server's 15 s applies); the setting refuses it at start."""
    from pydantic import ValidationError

    from app.config import Settings
    from tests.test_wall_browser import _launch, _playwright

    with pytest.raises(ValidationError, match="stale_after_s"):
        Settings(stale_after_s=1e308)
    async with _playwright()() as pw:
        browser = await _launch(pw)
        try:
            context = await browser.new_context()
            await context.add_cookies([{"name": "pb_key", "value": srv.keys.display["generic-wall"], "url": srv.url}])
            page = await context.new_page()
            for query, want_ms in (("1e308", 15_000), ("86401", 15_000), ("30", 30_000)):
                await page.goto(f"{srv.url}/wall/generic-wall?stale_after_s={query}")
                await page.wait_for_function("() => document.body.dataset.epoch", timeout=10_000)
                assert await page.evaluate("() => window.pulseboardWall.staleAfterMs()") == want_ms, query
        finally:
            await browser.close()


async def test_a_note_cannot_land_after_the_scorecard_is_published(make_settings, start_server, monkeypatch):
    """add_note checked the publication, then inserted: a publish committing in between left a note
    on a locked scorecard.  Here add_note is held for 0.5 s after its check while publish runs: the
    publish waits for it (the scorecard lock), so its card shows the note; a note after it is 409."""
    import sys

    from app.snapshots import scorecard
    from tests.conftest import keyed_client
    from tests.test_bad_inputs import _june_with_a_note

    real = scorecard.pinned  # add_note's read of what is published, after the scorecard lock
    checked = asyncio.Event()
    armed: list[bool] = []

    async def held(conn, dashboard, grain, period):
        found = await real(conn, dashboard, grain, period)
        if armed and sys._getframe(1).f_code.co_name == "add_note" and not checked.is_set():
            checked.set()
            await asyncio.sleep(0.5)
        return found

    monkeypatch.setattr(scorecard, "pinned", held)
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(datetime(2024, 7, 1, 1, tzinfo=UTC)))
    base = "/api/v1/scorecards/generic-wall/2024-06"
    async with keyed_client(srv, timeout=60) as client:
        await _june_with_a_note(srv, client)
        armed.append(True)

        async def publish_soon() -> httpx.Response:
            await asyncio.wait_for(checked.wait(), 30)  # add_note is past its check
            return await client.post(f"{base}/publish", json={"by": "Ana"})

        note, published = await asyncio.gather(
            client.post(f"{base}/commentary", json={"kpi": "sample_count", "text": "late", "author": "Bo"}),
            publish_soon(),
        )
        assert note.status_code == 201, note.text
        assert published.status_code == 200, published.text
        card = published.json()
        texts = [n["text"] for r in card["kpis"] for n in r["commentary"]]
        assert "late" in texts  # published after the note, so the note is part of it
        after = await client.post(
            f"{base}/commentary", json={"kpi": "sample_count", "text": "too late", "author": "Bo"}
        )
        assert after.status_code == 409
