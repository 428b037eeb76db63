"""Error mapping: one handler per exception tree (``app.api.problems``) answers HTTP requests and
WebSocket handshakes alike; every class of a tree has its answer; status constants and the one
token bucket."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app import auth, snapshots
from app.api.codes import retry_after
from app.api.problems import AUTH_ANSWERS, SNAPSHOT_ANSWERS, UNAUTHENTICATED_DETAIL, _find
from app.auth.ratelimit import TokenBucket
from app.clock import ManualClock
from app.config import Settings
from tests.helpers import PACKS_DIR

WALL = "/ws/dashboards/generic-wall"


@pytest.fixture
def settings(tmp_path):
    def factory(**overrides) -> Settings:
        return Settings(data_dir=tmp_path / "var", tz="UTC", packs_dir=PACKS_DIR, snapshots_enabled=False, **overrides)

    return factory


def _descendants(base: type) -> list[type]:
    return [cls for sub in base.__subclasses__() for cls in (sub, *_descendants(sub))]


@pytest.mark.parametrize("base, table", [(auth.AuthError, AUTH_ANSWERS), (snapshots.SnapshotError, SNAPSHOT_ANSWERS)])
def test_every_class_of_a_tree_has_an_answer(base, table):
    classes = _descendants(base)
    assert len(classes) >= 4
    for cls in classes:
        assert _find(table, cls.__new__(cls)) is not None, cls


def _refusal(exc: InvalidStatus) -> tuple[int, dict, str | None, str | None]:
    response = exc.response
    return (
        response.status_code,
        json.loads(response.body),
        response.headers.get("content-type"),
        response.headers.get("www-authenticate") or response.headers.get("retry-after"),
    )


async def test_websocket_handshakes_are_refused_with_the_http_problem_bodies(settings, start_server):
    srv = await start_server(settings(ws_max_connections_per_key=1))
    with pytest.raises(InvalidStatus) as no_key:
        async with connect(srv.ws_url + WALL):
            pass
    status, body, media, challenge = _refusal(no_key.value)
    assert (status, media, challenge) == (401, "application/problem+json", 'Bearer realm="pulseboard"')
    assert (body["title"], body["detail"]) == ("Unauthorized", UNAUTHENTICATED_DETAIL)
    async with httpx.AsyncClient(base_url=srv.url) as client:  # the same body over HTTP
        assert (await client.get("/api/v1/kpis")).json() == body

    other = srv.auth("display", "generic-wall")
    with pytest.raises(InvalidStatus) as foreign:  # a display key of another dashboard: 403 here, 404 on HTTP
        async with connect(srv.ws_url + "/ws/dashboards/contact-centre", additional_headers=other):
            pass
    status, body, media, _ = _refusal(foreign.value)
    assert (status, body["title"], body["detail"]) == (403, "Forbidden", "no dashboard 'contact-centre' for this key")
    async with httpx.AsyncClient(base_url=srv.url, headers=other) as client:
        assert (await client.get("/api/v1/dashboards/contact-centre")).status_code == 404

    async with connect(srv.ws_url + WALL, additional_headers=srv.auth("read")) as first:
        assert json.loads(await first.recv())["type"] == "snapshot"
        with pytest.raises(InvalidStatus) as capped:
            async with connect(srv.ws_url + WALL, additional_headers=srv.auth("read")):
                pass
    status, body, media, wait = _refusal(capped.value)
    assert (status, body["title"], media, wait) == (429, "Too many requests", "application/problem+json", "30")
    assert body["detail"] == "this key already holds 1 open screens (PULSEBOARD_WS_MAX_CONNECTIONS_PER_KEY)"


async def test_keys_refused_name_the_field_at_fault(settings, start_server):
    srv = await start_server(settings())
    async with httpx.AsyncClient(base_url=srv.url, headers=srv.auth("admin")) as client:
        for body, field, message in (
            ({"scope": "ingest"}, "source", "an ingest key is bound to one source: give --source"),
            ({"scope": "display"}, "dashboard", "a display key is bound to one dashboard: give --dashboard"),
            ({"scope": "display", "dashboard": "nope"}, "dashboard", "unknown"),
        ):
            resp = await client.post("/api/v1/keys", json=body)
            assert resp.status_code == 422 and resp.json()["title"] == "Invalid key", resp.text
            assert resp.json()["errors"] == [{"field": field, "message": message}]


async def test_snapshot_errors_are_answered_by_their_tree(settings, start_server):
    srv = await start_server(settings(), clock=ManualClock(datetime(2024, 2, 10, 12, tzinfo=UTC)))
    async with httpx.AsyncClient(base_url=srv.url, headers=srv.auth("admin")) as client:
        open_day = await client.post(
            "/api/v1/snapshots/generic-wall/cut", json={"grain": "day", "period": "2024-02-10"}
        )
        assert open_day.status_code == 409 and open_day.json()["title"] == "Period not closed"
        assert open_day.json()["detail"].startswith("day 2024-02-10 ends at 2024-02-11T00:00:00+00:00")
        cut = await client.post("/api/v1/snapshots/generic-wall/cut", json={"grain": "month", "period": "2024-01"})
        assert cut.status_code == 201, cut.text
        path = "/api/v1/scorecards/generic-wall/2024-01/commentary"
        blank = await client.post(path, json={"kpi": "sample_mean", "text": "   "})
        assert blank.status_code == 422 and blank.json()["title"] == "Invalid note"
        assert blank.json()["errors"] == [{"field": "text", "message": "text must be 1-4000 characters"}]
        unknown = await client.post(path, json={"kpi": "nope", "text": "why"})
        assert unknown.status_code == 404
        assert unknown.json()["detail"] == "generic-wall: no KPI 'nope' in a snapshot of 2024-01"
        not_cut = await client.get("/api/v1/reconciliation/nope/day/2024-01-01")
        assert (not_cut.status_code, not_cut.json()["detail"]) == (404, "no dashboard 'nope'")


def test_one_token_bucket():
    bucket = TokenBucket(rate_per_s=2, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]  # the burst, then wait 1/rate
    assert bucket.take(0.25) == pytest.approx(0.25)  # half a token came back, nothing taken
    assert bucket.take(0.5) == 0.0
    assert [bucket.take(10.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]  # refilled to the burst, no more
    assert TokenBucket(rate_per_s=0.5, burst=0.5, now=0.0).take(0.0) == 0.0  # a burst is at least 1


@pytest.mark.parametrize("wait_s, header", [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (29.5, "30")])
def test_retry_after_is_whole_seconds_rounded_up_at_least_one(wait_s, header):
    assert retry_after(wait_s) == header
