"""Issue 10 item 18 (second half): ingest keys bound to packs, on SQLite and PostgreSQL.

A key created with ``packs`` (API ``"packs": [...]``, CLI ``--pack``) feeds only events whose type
one of those packs reads; a request with any other event is refused 403 naming the event index and
the packs, and nothing of it is stored.  Unknown packs, empty lists and packs on a non-ingest key
are 422 (the CLI: an error exit)."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner
from sqlalchemy import text

from app.cli import main as cli
from tests.conftest import settings_to_env
from tests.helpers import PACKS_DIR, strict_json


def ev(i: int, kind: str) -> dict:
    return {"type": kind, "ts": "2024-01-01T00:00:00Z", "id": f"k{i}", "source": "pbx", "value": 1.0}


async def stored_ids(srv) -> list[str]:
    async with srv.runtime.engine.connect() as conn:
        return sorted(r[0] for r in await conn.execute(text("SELECT event_id FROM event")))


async def test_an_ingest_key_bound_to_packs_feeds_only_their_event_types(make_settings, start_server, client_for):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    admin = srv.auth("admin")
    async with client_for(srv, auth=False) as client:
        resp = await client.post(
            "/api/v1/keys",
            json={"scope": "ingest", "source": "pbx", "packs": ["contact-centre", "generic"]},
            headers=admin,
        )
        assert resp.status_code == 201, resp.text
        made = resp.json()
        assert made["packs"] == ["contact-centre", "generic"]
        listing = (await client.get("/api/v1/keys", headers=admin)).json()
        assert [k["packs"] for k in listing if k["id"] == made["id"]] == [["contact-centre", "generic"]]
        unbound = [k for k in listing if k["id"] != made["id"]]
        assert unbound and all(k["packs"] is None for k in unbound)  # NULL: any pack
        h = {"Authorization": f"Bearer {made['key']}"}
        # event 2 is an alarm: no bound pack reads it -> the whole request is refused
        body = [ev(0, "call.queued"), ev(1, "orders"), ev(2, "alarm.raised"), ev(3, "incident.opened")]
        refused = await client.post("/api/v1/events", json=body, headers=h)
        assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
        detail = strict_json(refused.text)["detail"]
        assert "2 event(s)" in detail and "event 2 has type 'alarm.raised'" in detail, detail
        assert "['contact-centre', 'generic']" in detail, detail
        assert await stored_ids(srv) == []  # nothing of that request stored
        ok = await client.post("/api/v1/events", json=[ev(0, "call.queued"), ev(1, "orders")], headers=h)
        assert ok.status_code == 202 and ok.json()["accepted"] == 2, ok.text
        assert await stored_ids(srv) == ["k0", "k1"]
        # an unbound ingest key still feeds any pack
        other = await client.post("/api/v1/keys", json={"scope": "ingest", "source": "pbx"}, headers=admin)
        free = {"Authorization": f"Bearer {other.json()['key']}"}
        assert (await client.post("/api/v1/events", json=ev(2, "alarm.raised"), headers=free)).status_code == 202
        for payload, field in (
            ({"scope": "ingest", "source": "pbx", "packs": ["no-such-pack"]}, "packs.0"),
            ({"scope": "ingest", "source": "pbx", "packs": []}, "packs"),
            ({"scope": "ingest", "source": "pbx", "packs": ["noc", "noc"]}, "packs"),
            ({"scope": "read", "packs": ["noc"]}, "packs"),
        ):
            bad = await client.post("/api/v1/keys", json=payload, headers=admin)
            assert bad.status_code == 422, (payload, bad.text)
            problem = strict_json(bad.text)
            assert problem["errors"][0]["field"] == field, (payload, problem)
    assert await stored_ids(srv) == ["k0", "k1", "k2"]


async def test_keys_cli_binds_an_ingest_key_to_packs(make_settings, monkeypatch):
    settings = make_settings(packs_dir=PACKS_DIR)
    settings_to_env(settings, monkeypatch)
    runner = CliRunner()
    args = ["keys", "create", "--scope", "ingest", "--source", "pbx", "--pack", "noc", "--pack", "generic"]
    made = await asyncio.to_thread(runner.invoke, cli, args)
    assert made.exit_code == 0, made.output
    listed = await asyncio.to_thread(runner.invoke, cli, ["keys", "list"])
    assert listed.exit_code == 0 and "packs=noc,generic" in listed.stdout, listed.stdout
    unknown = await asyncio.to_thread(
        runner.invoke, cli, ["keys", "create", "--scope", "ingest", "--source", "pbx", "--pack", "nope"]
    )
    assert unknown.exit_code != 0 and "no loaded pack 'nope'" in unknown.output
    read = await asyncio.to_thread(runner.invoke, cli, ["keys", "create", "--scope", "read", "--pack", "noc"])
    assert read.exit_code != 0 and "only ingest keys" in read.output
    listed = await asyncio.to_thread(runner.invoke, cli, ["keys", "list"])
    assert listed.stdout.count("pbi_") == 1  # the refused ones were not created
