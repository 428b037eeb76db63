"""Wall-screen pairing kept in the store (issue 4, Access): a code shown by one instance is
approved through another and collected from the first; a restart keeps waiting pairings;
expired and used codes are refused (404 / 409); limits (TTL, waiting pairings in total and per
client address, code length) hold; the display key never shows in a URL or a log line.

Real servers (``start_server``) on both stores; two instances share one store (the same
PostgreSQL schema, or the same SQLite file).  Only the clock is faked (``ManualClock``) where
expiry is tested.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, inspect, select
from websockets.asyncio.client import connect

from app.auth.pairing import CODE_ALPHABET
from app.clock import ManualClock
from app.config import Settings
from app.store.schema import pairing
from tests.helpers import PACKS_DIR, wait_closed

LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "app",
    "sqlalchemy",
    "aiosqlite",
    "psycopg",
    "fastapi",
    "starlette",
    "websockets.server",
)  # the servers' loggers (not the test clients')


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every log line of the servers in this process while inside, at DEBUG (access log and SQL
    statements with their parameters included; uvicorn's access logger does not propagate, so
    the handler sits on each logger)."""
    handler = _Collect()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.disabled))
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        for logger, level, disabled in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.disabled = disabled


def _recording_client(base_url: str, urls: list[str], **kw) -> httpx.AsyncClient:
    async def note(request: httpx.Request) -> None:
        urls.append(str(request.url))

    return httpx.AsyncClient(base_url=base_url, timeout=30, event_hooks={"request": [note]}, **kw)


async def _stop(srv) -> None:
    """Stop a server and wait until its port refuses connections."""
    await srv.stop()
    await wait_closed(srv.url)


async def test_code_shown_by_one_instance_is_approved_through_another(make_settings, start_server):
    """Two instances on one store: the screen asks A, an admin approves through B, the screen
    polling A gets its display key as an HttpOnly cookie; the key opens A's WebSocket; the key
    appears in no URL and in no log line (access log and SQL parameters included)."""
    settings = make_settings(packs_dir=PACKS_DIR)
    first = await start_server(settings)
    second = await start_server(settings)
    urls: list[str] = []
    with captured_logs() as log_lines:
        async with (
            _recording_client(first.url, urls) as screen,
            _recording_client(second.url, urls, headers=second.auth("admin")) as admin,
        ):
            started = await screen.post("/api/v1/pairings", json={"dashboard": "generic-wall"})
            assert started.status_code == 201 and started.headers["cache-control"] == "no-store"
            shown = started.json()
            assert (await screen.post("/api/v1/pairings/claim", json={"secret": shown["secret"]})).json() == {
                "status": "pending",
                "code": shown["code"],
            }
            waiting = (await admin.get("/api/v1/pairings")).json()  # B lists what A shows
            assert [(w["code"], w["dashboard"]) for w in waiting] == [(shown["code"], "generic-wall")]
            # The admin types the code as read (lower case, spaced): the requested dashboard is used.
            typed = f" {shown['code'][:4].lower()} {shown['code'][4:].lower()} "
            approved = await admin.post(f"/api/v1/pairings/{typed}/approve", json={})
            assert approved.status_code == 200, approved.text
            assert approved.json()["dashboard"] == "generic-wall"
            key_id = approved.json()["key_id"]
            assert (await admin.get("/api/v1/pairings")).json() == []

            claim = await screen.post("/api/v1/pairings/claim", json={"secret": shown["secret"]})
            assert claim.status_code == 200 and claim.json() == {"status": "approved", "dashboard": "generic-wall"}
            set_cookie = claim.headers["set-cookie"]
            assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
            token = screen.cookies.get("pb_key")
            assert token is not None and token.startswith("pbd_") and token not in claim.text
            assert (await screen.get("/api/v1/dashboards/generic-wall")).status_code == 200
            assert (await screen.get("/api/v1/dashboards/contact-centre")).status_code == 404  # BAD_INPUTS 28

            # Consumed once, whichever instance is asked.
            async with _recording_client(second.url, urls) as other:
                again = await other.post("/api/v1/pairings/claim", json={"secret": shown["secret"]})
            assert again.status_code == 404 and again.headers["content-type"].startswith("application/problem+json")
            reused = await admin.post(f"/api/v1/pairings/{shown['code']}/approve", json={"dashboard": "generic-wall"})
            assert reused.status_code == 409

            listed = {k["id"]: k for k in (await admin.get("/api/v1/keys")).json()}
            assert listed[key_id]["scope"] == "display" and listed[key_id]["dashboard"] == "generic-wall"
            assert listed[key_id]["hint"].endswith(token[-4:])
        async with connect(
            first.ws_url + "/ws/dashboards/generic-wall",
            additional_headers={"Cookie": f"pb_key={token}", "Origin": first.url},
        ) as ws:
            assert '"snapshot"' in await asyncio.wait_for(ws.recv(), 10)
    assert len(urls) >= 10 and not [u for u in urls if token in u or shown["secret"] in u]
    assert any("POST /api/v1/pairings/claim" in line for line in log_lines)  # the access log was captured
    assert any("INSERT INTO api_key" in line for line in log_lines)  # and the SQL with its parameters
    assert [line for line in log_lines if token in line] == []
    assert [line for line in log_lines if shown["secret"] in line] == []
    # A database dump holds neither the key nor the poll secret.
    async with first.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(pairing))).all()
    assert len(rows) == 1 and rows[0].key_id == key_id and rows[0].claimed_us is not None
    assert rows[0].approved_by == (await second.runtime.keys.find(second.keys.admin)).id
    dumped = repr(rows)
    assert token not in dumped and shown["secret"] not in dumped


async def test_waiting_pairing_survives_a_restart(make_settings, start_server):
    """A code shown before a restart is approved and collected after it (same store)."""
    settings = make_settings(packs_dir=PACKS_DIR)
    before = await start_server(settings)
    async with httpx.AsyncClient(base_url=before.url, timeout=30) as screen:
        shown = (await screen.post("/api/v1/pairings")).json()
    await _stop(before)
    after = await start_server(settings)
    async with (
        httpx.AsyncClient(base_url=after.url, timeout=30) as screen,
        httpx.AsyncClient(base_url=after.url, timeout=30, headers=after.auth("admin")) as admin,
    ):
        assert (await screen.post("/api/v1/pairings/claim", json={"secret": shown["secret"]})).json() == {
            "status": "pending",
            "code": shown["code"],
        }
        no_dashboard = await admin.post(f"/api/v1/pairings/{shown['code']}/approve", json={})
        assert no_dashboard.status_code == 422 and no_dashboard.json()["errors"][0]["field"] == "dashboard"
        approved = await admin.post(f"/api/v1/pairings/{shown['code']}/approve", json={"dashboard": "generic-wall"})
        assert approved.status_code == 200, approved.text
        claim = await screen.post("/api/v1/pairings/claim", json={"secret": shown["secret"]})
        assert claim.json() == {"status": "approved", "dashboard": "generic-wall"}
        assert (await screen.get("/api/v1/dashboards/generic-wall")).status_code == 200


async def test_expired_and_used_codes_are_refused(make_settings, start_server):
    """PULSEBOARD_PAIRING_TTL_S: a code past it is 404 to approve and to claim; an approved code
    is 409 to approve again; a claimed pairing is 404 to claim again; an approved pairing not
    collected within a fresh TTL is gone (404); expired pairings are purged from the store."""
    clock = ManualClock(datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, pairing_ttl_s=60), clock=clock)
    async with (
        httpx.AsyncClient(base_url=srv.url, timeout=30) as screen,
        httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("admin")) as admin,
    ):

        async def ask() -> dict:
            made = await screen.post("/api/v1/pairings")
            assert made.status_code == 201, made.text
            return made.json()

        def approve(code: str) -> Awaitable[httpx.Response]:
            return admin.post(f"/api/v1/pairings/{code}/approve", json={"dashboard": "generic-wall"})

        def claim(secret: str) -> Awaitable[httpx.Response]:
            return screen.post("/api/v1/pairings/claim", json={"secret": secret})

        late = await ask()
        assert late["expires_in_s"] == 60 and late["expires_at"] == "2026-11-29T12:01:00+00:00"
        clock.advance(59.9)
        assert (await claim(late["secret"])).json()["status"] == "pending"
        clock.advance(0.1)  # exactly the TTL: expired
        assert (await approve(late["code"])).status_code == 404
        assert (await claim(late["secret"])).status_code == 404
        assert (await admin.get("/api/v1/pairings")).json() == []

        used = await ask()
        assert (await approve(used["code"])).status_code == 200
        assert (await approve(used["code"])).status_code == 409
        clock.advance(59)  # approval gave the screen a fresh TTL to collect in
        assert (await claim(used["secret"])).json()["status"] == "approved"
        assert (await claim(used["secret"])).status_code == 404
        assert (await approve(used["code"])).status_code == 409

        uncollected = await ask()
        assert (await approve(uncollected["code"])).status_code == 200
        clock.advance(60)
        assert (await claim(uncollected["secret"])).status_code == 404

        async with srv.runtime.engine.connect() as conn:  # `late` went when `used` was asked for
            assert (await conn.execute(select(func.count()).select_from(pairing))).scalar() == 2
        await ask()  # asking purges every pairing past its expiry
        async with srv.runtime.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(pairing))).scalar() == 1


async def test_waiting_pairings_are_capped_in_total_and_per_client_address(make_settings, start_server):
    """PULSEBOARD_PAIRING_MAX_PENDING_PER_IP and PULSEBOARD_PAIRING_MAX_PENDING: past either,
    429 with Retry-After (seconds until the oldest waiting one expires, at most 30); a claimed
    pairing no longer counts; an expired one frees its place.  Client addresses come from
    X-Forwarded-For, which uvicorn trusts from 127.0.0.1 (FORWARDED_ALLOW_IPS)."""
    clock = ManualClock(datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
    srv = await start_server(
        make_settings(packs_dir=PACKS_DIR, pairing_ttl_s=20, pairing_max_pending=3, pairing_max_pending_per_ip=2),
        clock=clock,
    )

    async def ask(ip: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers={"X-Forwarded-For": ip}) as c:
            return await c.post("/api/v1/pairings")

    a1, a2, a3 = [await ask("10.0.0.1") for _ in range(3)]
    assert [a1.status_code, a2.status_code, a3.status_code] == [201, 201, 429]
    assert a3.headers["retry-after"] == "20" and "address" in a3.json()["detail"]
    assert a3.headers["content-type"].startswith("application/problem+json")
    b1, b2 = await ask("10.0.0.2"), await ask("10.0.0.3")
    assert [b1.status_code, b2.status_code] == [201, 429]  # three waiting in total
    assert "too many screens" in b2.json()["detail"]
    async with keyed_admin(srv) as admin:
        waiting = sorted(w["client_ip"] for w in (await admin.get("/api/v1/pairings")).json())
    assert waiting == ["10.0.0.1", "10.0.0.1", "10.0.0.2"]

    # A collected pairing frees its place.
    async with keyed_admin(srv) as admin:
        assert (
            await admin.post(f"/api/v1/pairings/{a1.json()['code']}/approve", json={"dashboard": "generic-wall"})
        ).status_code == 200
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as screen:
        assert (await screen.post("/api/v1/pairings/claim", json={"secret": a1.json()["secret"]})).status_code == 200
    assert (await ask("10.0.0.1")).status_code == 201
    clock.advance(5)
    late = await ask("10.0.0.4")
    assert late.status_code == 429 and late.headers["retry-after"] == "15"
    clock.advance(15)  # the first ones expire
    assert (await ask("10.0.0.4")).status_code == 201


async def test_caps_are_exact_under_concurrent_requests_to_two_instances(make_settings, start_server):
    """40 screens ask at once, half through each of two instances on one store, with room for 5:
    exactly 5 get a code (the count and the insert are serialised across instances)."""
    settings = make_settings(packs_dir=PACKS_DIR, pairing_max_pending=5)
    first, second = await start_server(settings), await start_server(settings)

    async def ask(url: str, ip: str) -> int:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers={"X-Forwarded-For": ip}) as c:
            return (await c.post("/api/v1/pairings")).status_code

    answers = await asyncio.gather(*(ask((first, second)[i % 2].url, f"10.1.0.{i}") for i in range(40)))
    assert sorted(answers) == [201] * 5 + [429] * 35
    async with first.runtime.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(pairing))).scalar() == 5


def keyed_admin(srv) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("admin"))


async def test_guessing_is_infeasible(make_settings, start_server):
    """Codes: PULSEBOARD_PAIRING_CODE_LENGTH symbols of a 32-symbol alphabet, drawn afresh (no
    repeats in 300); with at most PULSEBOARD_PAIRING_MAX_PENDING waiting, one guessed code hits
    one with p = max_pending / 32**length (9.1e-10 by default), and settings above 1e-6 are
    refused at start.  Only admins may approve (a guess needs an admin key; others get 401/403);
    a wrong code approves nothing.  The poll secret is 256 random bits: random ones are 404."""
    defaults = Settings()
    assert len(set(CODE_ALPHABET)) == 32 and defaults.pairing_code_length == 8
    assert defaults.pairing_max_pending / 32**defaults.pairing_code_length < 1e-9
    with pytest.raises(ValidationError, match="pairing_code_length"):
        Settings(pairing_code_length=6, pairing_max_pending=2000)  # 1.9e-6 per guess
    assert Settings(pairing_code_length=6, pairing_max_pending=1000).pairing_code_length == 6  # 9.3e-7
    with pytest.raises(ValidationError, match="pairing_code_length"):
        Settings(pairing_code_length=5)

    srv = await start_server(
        make_settings(
            packs_dir=PACKS_DIR,
            pairing_code_length=10,
            pairing_max_pending_per_ip=400,
            pairing_max_pending_per_network=400,
            public_burst_per_ip=1000,
        )
    )
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as screen:
        made = [(await screen.post("/api/v1/pairings")).json() for _ in range(300)]
        codes = [m["code"] for m in made]
        assert len(set(codes)) == 300 and all(len(c) == 10 and set(c) <= set(CODE_ALPHABET) for c in codes)
        secrets_ = {m["secret"] for m in made}
        assert len(secrets_) == 300
        assert all(len(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))) == 32 for s in secrets_)
        for guess in ("A" * 43, "pb" * 20, made[0]["secret"][:-1] + ("A" if made[0]["secret"][-1] != "A" else "B")):
            assert (await screen.post("/api/v1/pairings/claim", json={"secret": guess})).status_code == 404
        target = made[0]
        wrong = target["code"][:-1] + next(c for c in CODE_ALPHABET if c != target["code"][-1])
        if wrong in codes:  # astronomically unlikely; keep the assertion meaningful anyway
            wrong = target["code"][:-2] + "ZZ"
        for headers, status in ((None, 401), (srv.auth("read"), 403), (srv.auth("display", "generic-wall"), 403)):
            answer = await screen.post(
                f"/api/v1/pairings/{target['code']}/approve", json={"dashboard": "generic-wall"}, headers=headers or {}
            )
            assert answer.status_code == status
        async with keyed_admin(srv) as admin:
            assert (
                await admin.post(f"/api/v1/pairings/{wrong}/approve", json={"dashboard": "generic-wall"})
            ).status_code == 404
            assert (
                await admin.post(f"/api/v1/pairings/{'X' * 65}/approve", json={"dashboard": "generic-wall"})
            ).status_code == 422
            assert len((await admin.get("/api/v1/pairings")).json()) == 300  # nothing approved
        assert (await screen.post("/api/v1/pairings/claim", json={"secret": target["secret"]})).json()[
            "status"
        ] == "pending"


async def test_unknown_requested_dashboard_is_422(make_settings, start_server):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as screen:
        answer = await screen.post("/api/v1/pairings", json={"dashboard": "no-such-wall"})
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "dashboard"
        assert (await screen.post("/api/v1/pairings", json={"dashboard": "generic-wall"})).status_code == 201


def test_migration_matches_the_schema(make_settings):
    """Migration 0008 creates ``pairing`` with the columns and indexes ``app.store.schema`` declares."""
    from app.store.db import _sync_engine, migrate

    settings = make_settings()
    migrate(settings)
    engine = _sync_engine(settings)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            columns = {c["name"]: c["nullable"] for c in found.get_columns("pairing")}
            indexes = {i["name"] for i in found.get_indexes("pairing")}
    finally:
        engine.dispose()
    assert columns == {c.name: c.nullable for c in pairing.columns}
    assert {"ix_pairing_expires", "ix_pairing_client_ip"} <= indexes


@pytest.mark.browser
@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_pair_and_approve_pages_in_a_browser_across_two_instances(make_settings, start_server):
    """A screen opens /pair on instance A (asking for the dashboard in its URL) and shows a code;
    an admin signs in at /login on instance B, finds the code on /pairings (refreshed every 3 s)
    and clicks Approve; the screen lands on its wall with an HttpOnly display cookie scripts
    cannot read, and no URL either browser requested holds it.  A waiting screen whose address
    is markup is refused (422, nothing stored: issue 10 item 16); a valid one is shown as text."""
    from tests.test_wall_browser import _launch, _playwright

    async_playwright = _playwright()
    settings = make_settings(packs_dir=PACKS_DIR)
    first, second = await start_server(settings), await start_server(settings)
    xss = "<img src=x onerror=alert(1)>"
    async with httpx.AsyncClient(base_url=second.url, timeout=30, headers={"X-Forwarded-For": xss}) as odd:
        refused = await odd.post("/api/v1/pairings")
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "X-Forwarded-For"
    async with httpx.AsyncClient(base_url=second.url, timeout=30, headers={"X-Forwarded-For": "2001:DB8::1"}) as v6:
        assert (await v6.post("/api/v1/pairings")).status_code == 201
    async with async_playwright() as pw:
        browser = await _launch(pw)
        try:
            requested: list[str] = []
            dialogs: list[str] = []
            screen = await (await browser.new_context()).new_page()
            admin = await (await browser.new_context()).new_page()
            for page in (screen, admin):
                page.on("request", lambda request: requested.append(request.url))
                page.on("dialog", lambda dialog: dialogs.append(dialog.message))
            await screen.goto(f"{first.url}/pair?dashboard=generic-wall")
            await screen.wait_for_function("() => document.getElementById('code').textContent.length === 8")
            code = await screen.text_content("#code")

            await admin.goto(f"{second.url}/pairings")
            await admin.wait_for_url("**/login?next=/pairings")  # signed out: sent to sign in first
            await admin.fill("#key", second.keys.admin)
            await admin.click("button[type=submit]")
            await admin.wait_for_url("**/pairings")
            row = admin.locator(f"tr[data-code='{code}']")
            await row.wait_for(timeout=10_000)
            assert await row.locator("select").input_value() == "generic-wall"  # what the screen asked for
            assert await admin.locator("#rows").get_by_text("2001:db8::1", exact=True).count() == 1
            await row.get_by_role("button", name="Approve").click()
            await admin.wait_for_function("() => document.getElementById('status').textContent.startsWith('Approved')")

            await screen.wait_for_url("**/wall/generic-wall", timeout=10_000)
            cookies = {c["name"]: c for c in await screen.context.cookies()}
            token = cookies["pb_key"]["value"]
            assert cookies["pb_key"]["httpOnly"] and token.startswith("pbd_")
            assert await screen.evaluate("() => document.cookie") == ""
            await screen.wait_for_function("() => document.body.dataset.epoch", timeout=10_000)  # the wall is live
            # A mistyped code is explained, and approves nothing.
            await admin.fill("#code", "zzzz-zzzz")
            await admin.click("#form button[type=submit]")
            await admin.wait_for_function("() => document.getElementById('status').textContent.startsWith('No screen')")
        finally:
            await browser.close()
    assert any("/api/v1/pairings/claim" in u for u in requested)
    assert [u for u in requested if token in u] == []
    assert dialogs == []


def test_key_redaction_filter():
    """Every key shape (any scope) in a log record's message is blanked; other text is kept."""
    from app.auth.redact import RedactKeys

    record = logging.LogRecord(
        "uvicorn.error",
        logging.DEBUG,
        __file__,
        1,
        "< cookie: pb_key=%s; x=%s",
        ("pbd_gEgSdNgMdg9F3G3nfSA5cx5GsGsD6HZ1pPd7-AH8", "pb_keep"),
        None,
    )
    assert RedactKeys().filter(record) is True
    assert record.getMessage() == "< cookie: pb_key=pbd_[redacted]; x=pb_keep"
    header = logging.LogRecord("app", logging.INFO, __file__, 1, "authorization: Bearer pba_abcdefghijkl", None, None)
    RedactKeys().filter(header)
    assert header.getMessage() == "authorization: Bearer pba_[redacted]"
