"""A database that hangs instead of refusing (issue 4, "Database down: 503 ... never another 5xx").

The whole private PostgreSQL cluster (postmaster and every backend) is frozen with SIGSTOP while
clients ingest: connections are still accepted into the listen backlog and bytes acknowledged by
the kernel, but nothing answers - the case of a hung host or a network black hole, where neither
a refused connection nor a TCP reset ever comes.  Pulseboard (a real ``pulseboard serve``
subprocess, ``PULSEBOARD_DB_CONNECT_TIMEOUT_S=2``, ``PULSEBOARD_DB_STATEMENT_TIMEOUT_S=3``) must:

* answer every ingest request and every ``/readyz`` poll while frozen with ``503`` and
  ``Retry-After`` (``/readyz``: ``{"ready": false}``), each within ``BOUND_S`` = connect timeout
  + statement timeout + answer grace (1 s) + ``MARGIN_S`` of its sending: no hang, no other 5xx,
  no connection error;
* after SIGCONT, take ingest again (a 202) and be ready within ``RESUME_LIMIT_S`` (30 s);
* lose and duplicate nothing acknowledged: raw rows per event id and the 1-minute rollups equal
  what the 202-acknowledged events imply (clients retry every 503 with the same Idempotency-Key
  until a definite answer, as ``tests/crash_client`` does).

The cluster and its helpers are ``tests/pgcluster.py`` (shared with tests/test_db_restart.py).
Figures go to ``test-artifacts/db-hang.json`` and RELIABILITY.md.

The fast tests pin each setting: their validation, ``connect_timeout`` against a black-hole
listener (accepts TCP, never answers), ``statement_timeout`` in every session of both engines
(shared cluster, own schema), and the SQLite busy timeout against a lock held by another process.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import httpx
import pytest

from tests.conftest import ARTIFACTS, IN_CI
from tests.crash_client import IngestLog, ServerProcess, create_key, free_port, start_clients_until
from tests.helpers import PACKS_DIR, wait_until
from tests.pgcluster import (
    Attempt,
    PrivatePostgres,
    Ready,
    expected_partials,
    make_batches,
    make_events,
    poll_ready,
    private_pg_unusable,
    stored_state,
)

CONNECT_TIMEOUT_S = 2
STATEMENT_TIMEOUT_S = 3.0
ANSWER_GRACE_S = 1.0  # app.store.db.ANSWER_GRACE_S
MARGIN_S = 2.0
BOUND_S = CONNECT_TIMEOUT_S + STATEMENT_TIMEOUT_S + ANSWER_GRACE_S + MARGIN_S  # 8 s
FROZEN_S = 10.0  # longer than every timeout: the answers while frozen come from the timeouts
RESUME_LIMIT_S = 30.0  # issue 4
CLIENTS = 4
BATCHES_PER_CLIENT = 30
BATCH_EVENTS = 40
FREEZE_AFTER_SHARE = 0.25
SOURCE = "dbhang"

_WHY_NOT = private_pg_unusable()


@dataclass
class HangFigures:
    """What the run measured; ``*_s`` in seconds since the run's t0, ``*_after_thaw_s`` since SIGCONT."""

    events: int = 0
    acked_at_freeze: int = 0
    frozen_pids: int = 0
    freeze_s: float = 0.0
    thaw_s: float = 0.0
    frozen_answers: int = 0  # ingest answers to requests sent and answered while frozen
    frozen_statuses: dict = field(default_factory=dict)
    frozen_without_retry_after: int = 0
    frozen_latency_max_s: float = 0.0  # slowest answer among requests in flight at any time during the freeze
    frozen_latencies_s: list = field(default_factory=list)
    statuses: dict = field(default_factory=dict)
    other_5xx: int = 0
    without_retry_after: int = 0
    transport_errors: dict = field(default_factory=dict)
    readyz_frozen: int = 0
    readyz_frozen_not_503: int = 0
    readyz_latency_max_s: float = 0.0
    readyz_errors: int = 0
    ready_after_thaw_s: float | None = None
    resume_after_thaw_s: float | None = None
    acked_events: int = 0
    stored_rows: int = 0
    lost: int = 0
    duplicated: int = 0
    missing: int = 0
    rollup_mismatches: list = field(default_factory=list)
    log_errors: list = field(default_factory=list)

    def line(self) -> str:
        return (
            f"[db-hang] {self.events:,} events, {self.frozen_pids} processes frozen {self.thaw_s - self.freeze_s:.1f} s "
            f"after {self.acked_at_freeze:,} acked: {self.frozen_answers} answers while frozen "
            f"{self.frozen_statuses}, slowest {self.frozen_latency_max_s:.2f} s (bound {BOUND_S:g} s); readyz "
            f"while frozen {self.readyz_frozen} (not 503: {self.readyz_frozen_not_503}), slowest "
            f"{self.readyz_latency_max_s:.2f} s; SIGCONT -> ready {_s(self.ready_after_thaw_s)}, -> first 202 "
            f"{_s(self.resume_after_thaw_s)}; statuses {self.statuses}, transport errors {self.transport_errors}; "
            f"lost {self.lost} dup {self.duplicated} missing {self.missing}; rollup mismatches "
            f"{len(self.rollup_mismatches)}"
        )


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(_WHY_NOT is not None and not IN_CI, reason=str(_WHY_NOT))
async def test_frozen_postgres_gets_prompt_503s_then_ingest_resumes_losing_nothing(tmp_path):
    if _WHY_NOT is not None:
        pytest.fail(f"CI needs a private PostgreSQL cluster: {_WHY_NOT}")
    fig = HangFigures()
    pg = PrivatePostgres()
    server: ServerProcess | None = None
    tasks: list[asyncio.Task] = []
    stop_polling = asyncio.Event()
    try:
        await asyncio.to_thread(pg.init)
        await asyncio.to_thread(pg.start)
        data_dir = tmp_path / "var"
        data_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
        env.update(
            {
                "DATABASE_URL": pg.url,
                "PULSEBOARD_DATA_DIR": str(data_dir),
                "PULSEBOARD_TZ": "UTC",
                "PULSEBOARD_PACKS_DIR": str(PACKS_DIR),
                "PULSEBOARD_SNAPSHOTS_ENABLED": "false",
                "PULSEBOARD_DB_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
                "PULSEBOARD_DB_STATEMENT_TIMEOUT_S": str(STATEMENT_TIMEOUT_S),
                "PULSEBOARD_TILE_INTERVAL_MS": "200",
                "PYTHONUNBUFFERED": "1",
            }
        )
        ingest_key = create_key(env, "--scope", "ingest", "--source", SOURCE)
        server = ServerProcess(free_port(), env, tmp_path / "server.log")
        server.start()
        await server.wait_ready(60)

        events = make_events(CLIENTS * BATCHES_PER_CLIENT * BATCH_EVENTS, random.Random(7), SOURCE)
        batches = make_batches(events, BATCH_EVENTS, "hang")
        fig.events = len(events)
        log = IngestLog()
        attempts: list[Attempt] = []
        readies: list[Ready] = []

        def on_attempt(
            index: int, sent_s: float, answered_s: float, resp: httpx.Response | None, error: str | None
        ) -> None:
            attempts.append(
                Attempt(
                    index,
                    sent_s,
                    answered_s,
                    resp.status_code if resp is not None else None,
                    resp.headers.get("retry-after") if resp is not None else None,
                    error,
                    resp is not None and resp.headers.get("idempotent-replayed") == "true",
                )
            )

        tasks.append(asyncio.create_task(poll_ready(server.url, log, readies, stop_polling)))
        deadline = time.monotonic() + 180
        clients = await start_clients_until(
            server.url,
            batches,
            CLIENTS,
            log,
            deadline,
            FREEZE_AFTER_SHARE * fig.events,
            api_key=ingest_key,
            on_attempt=on_attempt,
        )
        tasks += clients

        # The hang.
        fig.acked_at_freeze = log.acked_events
        fig.frozen_pids = len(pg.freeze())
        fig.freeze_s = log.now()
        await asyncio.sleep(FROZEN_S)
        pg.thaw()
        fig.thaw_s = thaw = log.now()
        assert fig.acked_at_freeze < fig.events, "the ingest had finished before the freeze"

        await asyncio.wait_for(asyncio.gather(*clients), 180)
        await wait_until(lambda: any(r.status == 200 and r.sent_s >= thaw for r in readies), RESUME_LIMIT_S, fail=False)
        stop_polling.set()

        # The figures.
        assert server.proc is not None and server.proc.poll() is None, "the server process died"
        during = [a for a in attempts if a.sent_s >= fig.freeze_s and a.answered_s <= fig.thaw_s]
        fig.frozen_answers = len(during)
        fig.frozen_statuses = dict(Counter(str(a.status or a.error) for a in during))
        fig.frozen_without_retry_after = sum(a.status == 503 and not a.retry_after for a in during)
        overlapping = [a for a in attempts if a.answered_s >= fig.freeze_s and a.sent_s <= fig.thaw_s]
        fig.frozen_latencies_s = sorted(round(a.answered_s - a.sent_s, 2) for a in overlapping)
        fig.frozen_latency_max_s = max(fig.frozen_latencies_s, default=0.0)
        fig.statuses = dict(Counter(str(a.status) for a in attempts if a.status is not None))
        fig.other_5xx = sum(a.status is not None and a.status >= 500 and a.status != 503 for a in attempts)
        fig.without_retry_after = sum(a.status == 503 and not a.retry_after for a in attempts)
        fig.transport_errors = dict(Counter(a.error for a in attempts if a.error is not None))
        first_ok = [a.answered_s for a in attempts if a.status == 202 and a.sent_s >= thaw]
        fig.resume_after_thaw_s = min(first_ok) - thaw if first_ok else None
        frozen_polls = [r for r in readies if r.sent_s >= fig.freeze_s and r.answered_s <= fig.thaw_s]
        fig.readyz_frozen = len(frozen_polls)
        fig.readyz_frozen_not_503 = sum(
            not (r.status == 503 and r.ready is False and r.retry_after) for r in frozen_polls
        )
        fig.readyz_latency_max_s = max(
            (r.answered_s - r.sent_s for r in readies if r.answered_s >= fig.freeze_s and r.sent_s <= fig.thaw_s),
            default=0.0,
        )
        fig.readyz_errors = sum(r.status is None for r in readies)
        ready_up = [r.answered_s for r in readies if r.status == 200 and r.sent_s >= thaw]
        fig.ready_after_thaw_s = min(ready_up) - thaw if ready_up else None

        rows, partials = await asyncio.to_thread(stored_state, pg.url, SOURCE)
        acked_ids = {k[1] for b in batches if log.answers[b.index].status == 202 for k in b.keys}
        posted_ids = {e["id"] for e in events}
        fig.acked_events = len(acked_ids)
        fig.stored_rows = sum(rows.values())
        fig.lost = len(acked_ids - rows.keys())
        fig.duplicated = sum(n - 1 for n in rows.values())
        fig.missing = len(posted_ids - rows.keys())
        expected = expected_partials([e for e in events if e["id"] in acked_ids])
        fig.rollup_mismatches = [
            {"key": list(k), "expected": expected.get(k), "stored": partials.get(k)}
            for k in sorted(expected.keys() | partials.keys())
            if expected.get(k) != partials.get(k)
        ]
        text = server.log_path.read_text(errors="replace")
        fig.log_errors = [
            ln
            for ln in text.splitlines()
            if re.search(
                r"Exception in ASGI|Task exception was never retrieved|"
                r"Future exception was never retrieved",
                ln,
            )
        ][:10]
    except BaseException:
        print(
            f"\n{fig.line()}\n[db-hang] FAILED; server log:\n"
            + (server.log_tail(60, skip="202 Accepted") if server else "")
            + f"\npostgres log:\n{pg.log_tail()}"
        )
        raise
    finally:
        stop_polling.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            server.stop()
        await asyncio.to_thread(pg.destroy)

    print("\n" + fig.line())
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "db-hang.json").write_text(json.dumps(asdict(fig), indent=1, default=str))
    assert fig.frozen_answers > 0, "no ingest request was answered while the cluster was frozen"
    assert set(fig.frozen_statuses) == {"503"} and fig.frozen_without_retry_after == 0, fig.frozen_statuses
    assert fig.frozen_latency_max_s <= BOUND_S, (
        f"an ingest request waited {fig.frozen_latency_max_s:.2f} s during the freeze (bound {BOUND_S} s): "
        f"{fig.frozen_latencies_s[-10:]}"
    )
    assert fig.other_5xx == 0 and fig.without_retry_after == 0, fig.statuses
    assert set(fig.statuses) <= {"202", "503"}, f"unexpected answers: {fig.statuses}"
    assert not fig.transport_errors, f"connection errors from Pulseboard: {fig.transport_errors}"
    assert fig.readyz_frozen > 0 and fig.readyz_frozen_not_503 == 0, (fig.readyz_frozen, fig.readyz_frozen_not_503)
    assert fig.readyz_latency_max_s <= BOUND_S, f"/readyz took {fig.readyz_latency_max_s:.2f} s (bound {BOUND_S} s)"
    assert fig.readyz_errors == 0
    assert fig.ready_after_thaw_s is not None and fig.ready_after_thaw_s <= RESUME_LIMIT_S, fig.ready_after_thaw_s
    assert fig.resume_after_thaw_s is not None and fig.resume_after_thaw_s <= RESUME_LIMIT_S, fig.resume_after_thaw_s
    assert fig.lost == 0 and fig.duplicated == 0, f"lost {fig.lost}, duplicated {fig.duplicated}"
    assert fig.missing == 0 and fig.stored_rows == fig.events == fig.acked_events
    assert not fig.rollup_mismatches, f"rollups != acknowledged events: {fig.rollup_mismatches[:5]}"
    assert not fig.log_errors, f"server log: {fig.log_errors}"


# --- the settings, one by one (fast) ------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("db_connect_timeout_s", 1),
        ("db_connect_timeout_s", 0),
        ("db_statement_timeout_s", 0),
        ("db_statement_timeout_s", -1),
        ("sqlite_busy_timeout_ms", -1),
    ],
)
def test_timeouts_are_validated(tmp_path, field, value):
    from pydantic import ValidationError

    from app.config import Settings

    with pytest.raises(ValidationError, match=field):
        Settings(data_dir=tmp_path, **{field: value})


def test_timeouts_come_from_the_environment(tmp_path, monkeypatch):
    from app.config import Settings

    monkeypatch.setenv("PULSEBOARD_DB_CONNECT_TIMEOUT_S", "3")
    monkeypatch.setenv("PULSEBOARD_DB_STATEMENT_TIMEOUT_S", "1.5")
    monkeypatch.setenv("PULSEBOARD_SQLITE_BUSY_TIMEOUT_MS", "250")
    settings = Settings(data_dir=tmp_path)
    assert (settings.db_connect_timeout_s, settings.db_statement_timeout_s, settings.sqlite_busy_timeout_ms) == (
        3,
        1.5,
        250,
    )
    assert settings.store_wait_s == 4.5


@pytest.mark.parametrize("engine_kind", ["async", "writer"])
async def test_connect_timeout_ends_a_connection_to_a_black_hole(tmp_path, engine_kind):
    """A listener that accepts TCP but never answers (what a SIGSTOP'd postmaster or a black-holed
    route looks like): the connection attempt fails after PULSEBOARD_DB_CONNECT_TIMEOUT_S."""
    import socket

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from app.config import Settings
    from app.store.db import create_engine_for, create_writer_engine

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # never accepted, never answered
    try:
        settings = Settings(
            data_dir=tmp_path,
            database_url=f"postgresql://postgres@127.0.0.1:{hole.getsockname()[1]}/x",
            db_connect_timeout_s=2,
        )
        t0 = time.monotonic()
        with pytest.raises(OperationalError):
            if engine_kind == "async":
                engine = create_engine_for(settings)
                try:
                    async with engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
                finally:
                    await engine.dispose()
            else:
                engine = create_writer_engine(settings)
                try:
                    await asyncio.to_thread(lambda: engine.connect().close())
                finally:
                    engine.dispose()
        waited_s = time.monotonic() - t0
    finally:
        hole.close()
    assert 1.5 <= waited_s <= 2 + MARGIN_S, f"gave up after {waited_s:.2f} s, connect timeout 2 s"


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
async def test_statement_timeout_is_set_on_every_session_of_both_engines(make_settings):
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from app.store.db import create_engine_for, create_writer_engine, migrate_async

    settings = make_settings(db_statement_timeout_s=0.75)
    await migrate_async(settings)
    engine = create_engine_for(settings)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW statement_timeout"))).scalar() == "750ms"
            with pytest.raises(OperationalError, match="statement timeout"):
                await conn.execute(text("SELECT pg_sleep(2)"))
    finally:
        await engine.dispose()
    writer = create_writer_engine(settings)
    try:

        def check() -> str:
            with writer.connect() as conn:
                return conn.exec_driver_sql("SHOW statement_timeout").scalar()

        assert await asyncio.to_thread(check) == "750ms"
    finally:
        writer.dispose()


async def test_sqlite_busy_timeout_is_the_setting(tmp_path, start_server):
    """PULSEBOARD_SQLITE_BUSY_TIMEOUT_MS=1000: a write blocked by another process's lock answers 503
    + Retry-After after about 1 s (not the 10 s default); the retry is accepted once it is released."""
    import sqlite3

    from app.config import Settings
    from tests.conftest import keyed_client
    from tests.helpers import sample

    srv = await start_server(
        Settings(
            data_dir=tmp_path / "var",
            tz="UTC",
            packs_dir=PACKS_DIR,
            snapshots_enabled=False,
            sqlite_busy_timeout_ms=1000,
        )
    )
    lock = sqlite3.connect(tmp_path / "var" / "pulseboard.db", isolation_level=None)
    body, headers = [sample("2024-06-10T11:00:00Z", 3, id="busy-1")], {"Idempotency-Key": "busy-batch"}
    try:
        async with keyed_client(srv, timeout=30) as client:
            lock.execute("BEGIN EXCLUSIVE")
            t0 = time.monotonic()
            resp = await client.post("/api/v1/events", json=body, headers=headers)
            waited_s = time.monotonic() - t0
            assert resp.status_code == 503 and resp.headers.get("retry-after"), resp.text
            assert 0.9 <= waited_s <= 1 + MARGIN_S, f"answered after {waited_s:.2f} s (busy timeout 1 s)"
            lock.execute("ROLLBACK")
            resp = await client.post("/api/v1/events", json=body, headers=headers)
            assert resp.status_code == 202 and resp.json() == {"accepted": 1, "duplicates": 0}, resp.text
    finally:
        lock.close()
