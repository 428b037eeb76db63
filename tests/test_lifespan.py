"""The lifespan (app/main.py): every part opened on an ``AsyncExitStack`` and closed in reverse,
also when a part fails to start; the first connection to the store retried a bounded number of
times (app/store/db.py ``connect_at_start``).

"Nothing leaked" is checked on real resources: every DBAPI connection any pool opened is closed
(SQLAlchemy pool events), no asyncio task and no thread started by the lifespan is left.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy
from pydantic import ValidationError
from sqlalchemy import event as sa_event
from sqlalchemy.pool import Pool

from app.clock import ManualClock
from app.config import Settings
from app.main import create_app
from app.runtime import Runtime
from app.snapshots.service import SnapshotService
from app.store import MigrationError, StoreUnavailable
from tests.conftest import IN_CI
from tests.helpers import PACKS_DIR, wait_until
from tests.pgcluster import PrivatePostgres, private_pg_unusable

AFTER_JUNE = datetime(2024, 7, 1, 1, 0, tzinfo=UTC)
DEADLINE_S = 60.0  # polls give up after this (a bound, not a speed goal)


@dataclass
class Leaks:
    """What a test started: DBAPI connections opened and closed by every pool, and the asyncio
    tasks and threads that existed before it."""

    tasks_before: set[asyncio.Task[Any]]
    threads_before: set[threading.Thread]
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)

    def open_connections(self) -> int:
        return len(self.opened) - len(self.closed)

    def new_tasks(self) -> list[str]:
        others = asyncio.all_tasks() - self.tasks_before - {asyncio.current_task()}
        return [t.get_name() for t in others if not t.done()]

    def new_threads(self) -> list[str]:
        """Threads started since, except the event loop's default executor (``asyncio_N``, which
        ``asyncio.to_thread`` uses and the loop shuts down when it closes)."""
        new = set(threading.enumerate()) - self.threads_before
        return [t.name for t in new if t.is_alive() and not t.name.startswith("asyncio_")]

    async def assert_none(self) -> None:
        """Every connection opened was closed, and no task or thread started is left (threads
        such as aiosqlite's end just after their connection closes: polled)."""
        assert self.open_connections() == 0, f"{self.open_connections()} DBAPI connection(s) left open"
        assert self.new_tasks() == [], f"tasks left running: {self.new_tasks()}"
        await wait_until(lambda: not self.new_threads(), DEADLINE_S, what="the test's threads to end")


@pytest.fixture
async def leaks() -> AsyncIterator[Leaks]:
    """Counts DBAPI connections of every pool (``connect`` / ``close`` pool events) during the test."""
    found = Leaks(set(asyncio.all_tasks()), set(threading.enumerate()))

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        found.opened.append(id(dbapi_conn))

    def on_close(dbapi_conn: Any, _record: Any) -> None:
        found.closed.append(id(dbapi_conn))

    sa_event.listen(Pool, "connect", on_connect)
    sa_event.listen(Pool, "close", on_close)
    yield found
    sa_event.remove(Pool, "connect", on_connect)
    sa_event.remove(Pool, "close", on_close)


@asynccontextmanager
async def lifespan(settings: Settings) -> AsyncIterator[Runtime]:
    """The app's real lifespan, as uvicorn runs it; yields the running ``Runtime``."""
    app = create_app(settings, clock=ManualClock(AFTER_JUNE))
    async with app.router.lifespan_context(app):
        yield app.state.runtime


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A local TCP port bound but not listening: every connection to it is refused, and no
    other process can take it while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "app.store.db" and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------------------------------
# The first connection: bounded retries, a clear message, a server that comes up is used.


async def test_unreachable_postgres_fails_after_the_configured_attempts_naming_the_store(
    tmp_path, refused_port, caplog, leaks
):
    caplog.set_level(logging.WARNING, logger="app.store.db")
    settings = Settings(
        database_url=f"postgresql://bob:s3cret-pw@127.0.0.1:{refused_port}/test",
        data_dir=tmp_path / "var",
        db_start_attempts=3,
        db_start_retry_wait_s=0.05,
    )
    with pytest.raises(StoreUnavailable) as failed:
        async with lifespan(settings):
            pytest.fail("the lifespan started without its store")
    message = str(failed.value)
    assert f"cannot connect to the store postgresql+psycopg://bob:***@127.0.0.1:{refused_port}/test: " in message
    assert "3 attempts, 0.05 s apart, all failed" in message
    assert "PULSEBOARD_DB_START_ATTEMPTS" in message and "PULSEBOARD_DB_START_RETRY_WAIT_S" in message
    assert "last error: OperationalError: " in message and "Connection refused" in message
    assert "s3cret-pw" not in message
    warnings = retry_warnings(caplog)
    assert [w.split(" (attempt ")[1].split(":")[0] for w in warnings] == ["1 of 3", "2 of 3"]
    assert all("bob:***@" in w and "s3cret-pw" not in w and "retrying in 0.05 s" in w for w in warnings)
    await leaks.assert_none()


async def test_unreachable_sqlite_file_is_tried_once(tmp_path, caplog, leaks):
    caplog.set_level(logging.WARNING, logger="app.store.db")
    settings = Settings(data_dir=tmp_path / "var", db_start_attempts=5)
    (tmp_path / "var" / "pulseboard.db").mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(StoreUnavailable) as failed:
        async with lifespan(settings):
            pytest.fail("the lifespan started without its store")
    message = str(failed.value)
    assert f"cannot connect to the store sqlite+aiosqlite:///{tmp_path / 'var' / 'pulseboard.db'}: " in message
    assert "the one attempt failed" in message and "unable to open database file" in message
    assert retry_warnings(caplog) == []  # no retry: a file has no server to wait for
    await leaks.assert_none()


_WHY_NO_PRIVATE_PG = private_pg_unusable()


@pytest.mark.skipif(_WHY_NO_PRIVATE_PG is not None and not IN_CI, reason=str(_WHY_NO_PRIVATE_PG))
async def test_a_postgres_server_that_comes_up_during_the_retries_is_used(tmp_path, caplog, leaks):
    if _WHY_NO_PRIVATE_PG is not None:
        pytest.fail(f"CI needs a private PostgreSQL cluster: {_WHY_NO_PRIVATE_PG}")
    caplog.set_level(logging.WARNING, logger="app.store.db")
    pg = PrivatePostgres()
    try:
        await asyncio.to_thread(pg.init)  # initialised, not started: nothing listens on its port yet
        settings = Settings(
            database_url=pg.url,
            data_dir=tmp_path / "var",
            packs_dir=PACKS_DIR,
            snapshots_enabled=False,
            db_start_attempts=200,
            db_start_retry_wait_s=0.1,
        )
        up = asyncio.Event()
        done = asyncio.Event()
        runtimes: list[Runtime] = []

        async def serve() -> None:
            async with lifespan(settings) as runtime:
                runtimes.append(runtime)
                up.set()
                await done.wait()

        serving = asyncio.create_task(serve())
        await wait_until(
            lambda: len(retry_warnings(caplog)) >= 2 or serving.done(), DEADLINE_S, what="two refused attempts"
        )
        assert not up.is_set() and not serving.done()
        await asyncio.to_thread(pg.start)
        await wait_until(
            lambda: up.is_set() or serving.done(), DEADLINE_S, what="the lifespan to start on the new server"
        )
        if serving.done():
            serving.result()  # raises why it did not start
        tries = len(retry_warnings(caplog))
        assert 2 <= tries < 199, f"{tries} refused attempts before the server came up"
        runtime = runtimes[0]
        assert await runtime.ready_probe.check(10.0) is None
        async with runtime.engine.connect() as conn:  # migrated on the server that came up
            assert (await conn.execute(sqlalchemy.text("SELECT count(*) FROM event"))).scalar_one() == 0
        done.set()
        await serving
        await leaks.assert_none()
    finally:
        await asyncio.to_thread(pg.destroy)


# ---------------------------------------------------------------------------------------------
# Exception-safe from the first resource; shutdown closes everything.


async def test_a_failing_migration_closes_the_connection_opened_before_it(tmp_path, leaks):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    engine = sqlalchemy.create_engine(f"sqlite:///{data_dir / 'pulseboard.db'}")
    with engine.begin() as conn:  # a foreign table where the first migration creates its own
        conn.exec_driver_sql("CREATE TABLE event (something_else TEXT)")
    engine.dispose()
    opened_before = leaks.open_connections()
    with pytest.raises(MigrationError, match="event"):
        async with lifespan(Settings(data_dir=data_dir, snapshots_enabled=False)):
            pytest.fail("the lifespan started on a store it could not migrate")
    assert len(leaks.opened) > opened_before  # the first connection was made before the migration
    await leaks.assert_none()


@pytest.mark.parametrize("failing_part", [None, "snapshot scheduler"])
async def test_every_part_started_is_closed_at_shutdown_or_when_a_later_part_fails(
    make_settings, monkeypatch, leaks, failing_part
):
    settings = make_settings(packs_dir=PACKS_DIR, snapshots_enabled=True)
    if failing_part is not None:

        def start_fails(self: SnapshotService) -> None:
            raise RuntimeError(f"{failing_part} could not start")

        monkeypatch.setattr(SnapshotService, "start", start_fails)
    seen: dict[str, Any] = {}
    try:
        async with lifespan(settings) as runtime:
            seen["tasks"] = [t.get_name() for t in asyncio.all_tasks()]
            async with runtime.engine.connect() as conn:  # the store answers while running
                assert (await conn.execute(sqlalchemy.text("SELECT 1"))).scalar_one() == 1
    except RuntimeError as exc:
        assert failing_part is not None and str(exc) == f"{failing_part} could not start"
    else:
        assert failing_part is None, "the lifespan started although a part failed"
        # what shutdown must close was running: the writer's, the hub's and the watcher's tasks
        assert {"group-commit-writer", "tile-hub", "tile-hub-heartbeats", "revocations"} <= set(seen["tasks"])
    assert leaks.opened, "no connection was ever made"
    await leaks.assert_none()


# ---------------------------------------------------------------------------------------------
# The limits are settings, validated at start.


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("db_start_attempts", 0),
        ("db_start_attempts", 1001),
        ("db_start_retry_wait_s", 0),
        ("db_start_retry_wait_s", 301),
    ],
)
def test_start_retry_bounds_are_validated(name, value, monkeypatch):
    monkeypatch.setenv(f"PULSEBOARD_{name.upper()}", str(value))
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_start_retry_bounds_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("PULSEBOARD_DB_START_ATTEMPTS", "7")
    monkeypatch.setenv("PULSEBOARD_DB_START_RETRY_WAIT_S", "2.5")
    settings = Settings()
    assert (settings.db_start_attempts, settings.db_start_retry_wait_s) == (7, 2.5)
    defaults = Settings.model_fields
    assert (defaults["db_start_attempts"].default, defaults["db_start_retry_wait_s"].default) == (10, 1.0)
