"""Idempotency-Key: retry blindly, get the same answer; a different body is refused (BAD_INPUTS 21, 22)."""

import asyncio
from datetime import UTC, datetime

import pytest

from app.clock import ManualClock
from app.store.reads import event_count
from tests.helpers import PACKS_DIR, sample

NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
async def srv(make_settings, start_server):
    return await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))


async def count(srv) -> int:
    async with srv.runtime.engine.connect() as conn:
        return await event_count(conn)


async def test_replay_returns_the_same_answer(srv, client_for):
    batch = [sample("2024-06-10T10:00:00Z", 1, id="i1"), sample("2024-06-10T10:01:00Z", 2)]  # one without id
    async with client_for(srv) as client:
        first = await client.post("/api/v1/events", json=batch, headers={"Idempotency-Key": "batch-0001"})
        again = await client.post("/api/v1/events", json=batch, headers={"Idempotency-Key": "batch-0001"})
        assert (first.status_code, again.status_code) == (202, 202)
        assert first.json() == again.json() == {"accepted": 2, "duplicates": 0}
        assert again.headers["idempotent-replayed"] == "true"
        assert await count(srv) == 2  # the id-less event was not stored twice
        other = await client.post("/api/v1/events", json=batch[:1], headers={"Idempotency-Key": "batch-0001"})
        assert other.status_code == 422 and "different request body" in other.json()["detail"]
        conflict = [sample("2024-06-10T10:00:00Z", 99, id="i1")]
        c1 = await client.post("/api/v1/events", json=conflict, headers={"Idempotency-Key": "batch-0002"})
        c2 = await client.post("/api/v1/events", json=conflict, headers={"Idempotency-Key": "batch-0002"})
        assert (c1.status_code, c2.status_code) == (409, 409) and c1.json()["detail"] == c2.json()["detail"]


async def test_keys_expire_after_the_ttl(srv, client_for):
    async with client_for(srv) as client:
        h = {"Idempotency-Key": "k-exp"}
        assert (
            await client.post("/api/v1/events", json=sample("2024-06-10T10:00:00Z", 1), headers=h)
        ).status_code == 202
        srv.runtime.clock.advance(srv.settings.idempotency_ttl_s + 1)
        again = await client.post("/api/v1/events", json=sample("2024-06-10T10:00:00Z", 2), headers=h)
        assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    assert await count(srv) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\tchar", "ünicode"])
async def test_malformed_keys_are_400(srv, client_for, key):
    async with client_for(srv) as client:
        resp = await client.post(
            "/api/v1/events", json=sample("2024-06-10T10:00:00Z"), headers={"Idempotency-Key": key.encode("utf-8")}
        )
        assert resp.status_code == 400 and "Idempotency-Key" in resp.json()["detail"]
    assert await count(srv) == 0


async def test_in_flight_duplicate_gets_409(srv, client_for):
    owner = (await srv.runtime.keys.find(srv.keys.ingest["default"])).id  # keys are scoped to their owner
    srv.runtime.idempotency.in_flight.add((owner, "busy-key"))
    async with client_for(srv) as client:
        resp = await client.post(
            "/api/v1/events", json=sample("2024-06-10T10:00:00Z"), headers={"Idempotency-Key": "busy-key"}
        )
        assert resp.status_code == 409 and resp.headers["retry-after"] == "1"
    srv.runtime.idempotency.in_flight.discard((owner, "busy-key"))


async def test_concurrent_retries_store_once(srv, client_for):
    body = [sample(f"2024-06-10T10:{i:02d}:00Z", i) for i in range(50)]  # no ids: only the key protects them
    async with client_for(srv) as client:
        answers = await asyncio.gather(
            *(client.post("/api/v1/events", json=body, headers={"Idempotency-Key": "same"}) for _ in range(8))
        )
    assert {a.status_code for a in answers} <= {202, 409}
    assert any(a.status_code == 202 for a in answers)
    assert await count(srv) == 50


async def test_a_retry_racing_its_committed_first_gets_the_first_answer(srv):
    """The retry passed the route's check before the first committed: the writer answers it from
    the stored key instead of storing its events again (or failing the group on the key)."""
    import msgspec

    from app.ingest.parse import Limits, parse_events
    from app.store.writes import IdempotencyRecord

    body = msgspec.json.encode([sample("2024-06-10T10:00:00Z", 1), sample("2024-06-10T10:01:00Z", 2)])  # no ids
    limits = Limits(
        now_us=2**62, max_future_skew_s=0, max_lateness_s=None, max_string_chars=100, max_dims=20, max_batch_events=10
    )
    record = IdempotencyRecord("owner-1", "race-key", b"h" * 32)
    first = await srv.runtime.writer.submit(parse_events(body, "application/json", limits), record)
    second = await srv.runtime.writer.submit(parse_events(body, "application/json", limits), record)
    assert (first.accepted, first.remembered) == (2, None)
    assert second.remembered is not None and second.remembered[0] == 202
    assert msgspec.json.decode(second.remembered[1]) == {"accepted": 2, "duplicates": 0}
    assert await count(srv) == 2
