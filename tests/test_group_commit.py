"""Concurrent requests share transactions (group commit), and each still gets its own answer."""

import asyncio

from app.store.reads import event_count
from tests.helpers import PACKS_DIR, sample


async def test_concurrent_posts_share_transactions(make_settings, start_server, client_for):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    writer = srv.runtime.writer
    async with client_for(srv) as client:

        async def post(i: int):
            return await client.post("/api/v1/events", json=sample(f"2024-01-01T00:{i % 60:02d}:00Z", i, id=f"g{i}"))

        first = await asyncio.gather(*(post(i) for i in range(200)))
        again = await asyncio.gather(*(post(i) for i in range(100)))
    assert [r.status_code for r in first + again] == [202] * 300
    assert [r.json() for r in first] == [{"accepted": 1, "duplicates": 0}] * 200
    assert [r.json() for r in again] == [{"accepted": 0, "duplicates": 1}] * 100
    assert writer.stats.requests == 300
    assert writer.stats.events_inserted == 200
    assert writer.stats.groups < writer.stats.requests  # several requests per transaction
    async with srv.runtime.engine.connect() as conn:
        assert await event_count(conn) == 200
