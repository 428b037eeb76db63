"""First end-to-end checks on both stores: C8 (retried event counted once)."""


async def test_retried_event_counted_once_c8(client):
    ev = {"id": "7f3c-0001", "type": "orders", "ts": "2024-05-02T09:15:20Z", "value": 3}
    first = await client.post("/api/v1/events", json=ev)
    assert first.status_code == 202
    assert first.json() == {"accepted": 1, "duplicates": 0}
    second = await client.post("/api/v1/events", json=ev)
    assert second.json() == {"accepted": 0, "duplicates": 1}
    both = await client.post("/api/v1/events", json=[{**ev, "id": "x-1"}, {**ev, "id": "x-1"}])
    assert both.json() == {"accepted": 1, "duplicates": 1}
    conflict = await client.post("/api/v1/events", json={**ev, "value": 4})
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
