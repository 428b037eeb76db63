"""The snapshot scheduler stops with a bounded wait (app/snapshots/service.py ``stop``): a cut
already running gets ``snapshot_stop_wait_s`` to finish, then it is cancelled and rolled back.

PostgreSQL: a cut waits on its period's advisory lock, held here by another session, so the cut
is "running" for as long as the test likes.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy
from pydantic import ValidationError

from app.clock import ManualClock
from app.config import Settings
from app.runtime import Runtime
from app.snapshots.service import SnapshotService
from tests.conftest import PG_URL
from tests.helpers import PACKS_DIR, sample, wait_until

AFTER_JUNE = datetime(2024, 7, 1, 1, 0, tzinfo=UTC)
DEADLINE_S = 60.0  # polls give up after this (a bound, not a speed goal)


def _lock_sql(period: str) -> str:
    return f"SELECT pg_advisory_xact_lock(hashtext('snapshot:generic-wall:day:{period}'))"


_WAITERS_SQL = (  # sessions waiting for an advisory lock this session holds
    "SELECT count(*) FROM pg_locks w JOIN pg_locks h ON h.locktype = 'advisory' AND h.classid = w.classid "
    "AND h.objid = w.objid AND h.objsubid = w.objsubid AND h.granted AND h.pid = pg_backend_pid() "
    "WHERE w.locktype = 'advisory' AND NOT w.granted"
)


@pytest.fixture
async def pg_with_events(make_settings, start_server, client_for):
    """A running server on PostgreSQL holding events of 2024-06-10 (snapshots not scheduled)."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(AFTER_JUNE))
    async with client_for(srv) as client:
        resp = await client.post("/api/v1/events", json=[sample("2024-06-10T10:00:00Z", 5, id="s1")])
        assert resp.status_code == 202, resp.text
    return srv


async def _day_versions(runtime: Runtime, period: str) -> int:
    async with runtime.engine.connect() as conn:
        return (
            await conn.execute(
                sqlalchemy.text("SELECT count(*) FROM snapshot WHERE grain = 'day' AND period = :p"), {"p": period}
            )
        ).scalar_one()


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
async def test_scheduler_stop_waits_for_a_running_cut_to_finish(pg_with_events, caplog):
    runtime = pg_with_events.runtime
    settings = runtime.settings.model_copy(update={"snapshot_stop_wait_s": 120.0})
    holder = await psycopg.AsyncConnection.connect(PG_URL)
    try:
        await holder.execute(_lock_sql("2024-06-10"))  # in the holder's open transaction
        service = SnapshotService(runtime.engine, runtime.packs, settings, ManualClock(AFTER_JUNE))
        service.start()  # its catch-up job starts at once and waits on the lock

        async def waiters() -> int:
            return (await (await holder.execute(_WAITERS_SQL)).fetchone())[0]

        async def one_waiter() -> bool:
            return await waiters() == 1

        await wait_until(one_waiter, DEADLINE_S, what="the catch-up cut to reach the period lock")
        stopping = asyncio.create_task(service.stop())
        done, _ = await asyncio.wait({stopping}, timeout=1.0)
        assert not done, "stop() returned while a cut was still running"
        await holder.commit()  # the cut goes on and finishes within the wait
        await stopping
    finally:
        await holder.close()
    assert await _day_versions(runtime, "2024-06-10") == 1  # the running cut completed
    assert not any("cancelling" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
async def test_scheduler_stop_cancels_a_cut_that_outlives_the_wait(pg_with_events, caplog):
    caplog.set_level(logging.WARNING, logger="app.snapshots.service")
    runtime = pg_with_events.runtime
    settings = runtime.settings.model_copy(update={"snapshot_stop_wait_s": 0.5})
    holder = await psycopg.AsyncConnection.connect(PG_URL)
    try:
        await holder.execute(_lock_sql("2024-06-10"))

        async def waiters() -> int:
            return (await (await holder.execute(_WAITERS_SQL)).fetchone())[0]

        service = SnapshotService(runtime.engine, runtime.packs, settings, ManualClock(AFTER_JUNE))
        tasks_before = set(asyncio.all_tasks())
        service.start()

        async def one_waiter() -> bool:
            return await waiters() == 1

        await wait_until(one_waiter, DEADLINE_S, what="the catch-up cut to reach the period lock")
        jobs = [t for t in asyncio.all_tasks() - tasks_before if not t.done()]
        assert len(jobs) == 1  # the catch-up job, blocked on the lock
        await service.stop()  # the lock is still held: the cut is cancelled
        assert jobs[0].done()
        assert await waiters() == 0  # its session no longer waits on the lock (query cancelled)
        warnings = [r.getMessage() for r in caplog.records if r.name == "app.snapshots.service"]
        assert warnings == ["cancelling 1 snapshot job(s) still running after 0.5 s at shutdown"]
    finally:
        await holder.close()
    assert await _day_versions(runtime, "2024-06-10") == 0  # rolled back; the next start catches up


@pytest.mark.parametrize("value", [0, -1, 601])
def test_stop_wait_is_validated(value, monkeypatch):
    monkeypatch.setenv("PULSEBOARD_SNAPSHOT_STOP_WAIT_S", str(value))
    with pytest.raises(ValidationError, match="snapshot_stop_wait_s"):
        Settings()


def test_stop_wait_is_read_from_the_environment(monkeypatch):
    assert Settings.model_fields["snapshot_stop_wait_s"].default == 5.0
    monkeypatch.setenv("PULSEBOARD_SNAPSHOT_STOP_WAIT_S", "12")
    assert Settings().snapshot_stop_wait_s == 12
