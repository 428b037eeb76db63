"""Engine creation and migrations for the embedded SQLite store and PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from psycopg.abc import PQGen
from sqlalchemy import create_engine, text
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_fixed

from app import resources
from app.config import Settings
from app.store import MigrationError, StoreUnavailable

log = logging.getLogger(__name__)
_RV = TypeVar("_RV")

MIGRATIONS_DIR = resources.migrations_dir()


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry, busy_timeout_ms: int = 10_000) -> None:
    """WAL, ``synchronous=FULL``, the busy timeout (``PULSEBOARD_SQLITE_BUSY_TIMEOUT_MS``), foreign keys."""
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sync_url(settings: Settings) -> str:
    return settings.sqlalchemy_url.replace("+aiosqlite", "")


def create_engine_for(settings: Settings) -> AsyncEngine:
    """The async engine of the configured store.

    SQLite: the data dir is created; every connection gets WAL,
    ``synchronous=FULL`` (a commit is on disk before it returns) and the busy
    timeout ``sqlite_busy_timeout_ms``.  PostgreSQL: psycopg 3, ``synchronous_commit=on``,
    ``connect_timeout`` = ``db_connect_timeout_s`` and ``statement_timeout`` =
    ``db_statement_timeout_s``, and every wait for the server bounded by ``answer_deadline_s``
    (see ``_deadline_connections``).  Either way a request waits at most ``store_wait_s`` for a
    pooled connection (``pool_timeout``).
    """
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=4, max_overflow=4, pool_timeout=settings.store_wait_s)
        sa_event.listen(engine.sync_engine, "connect", _sqlite_hook(settings))
        return engine
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=settings.store_wait_s,
        connect_args={
            **_pg_connect_args(settings),
            "async_creator_fn": _deadline_connections(answer_deadline_s(settings))[1].connect,
        },
    )


def store_name(engine: AsyncEngine | Engine) -> str:
    """The engine's URL with its password masked (``***``), for messages and logs."""
    return engine.url.render_as_string(hide_password=True)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of the driver's error under a SQLAlchemy one, on one line."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return f"{type(cause).__name__}: {' '.join(str(cause).split())}"


async def connect_at_start(engine: AsyncEngine, settings: Settings) -> None:
    """Open the store's first connection (``SELECT 1``), retrying while it cannot be reached.

    PostgreSQL is tried up to ``db_start_attempts`` times, ``db_start_retry_wait_s`` apart (each
    attempt bounded by ``db_connect_timeout_s`` and the statement deadline), so a server still
    starting next to us is waited for and used as soon as it answers; each failed attempt is
    logged at WARNING.  SQLite is tried once: a file has no server to wait for.  Only connection
    errors (``OperationalError``, ``InterfaceError``) are retried; any other error is raised at once.

    Raises:
        StoreUnavailable: every attempt failed; the message names the store (URL without its
            password), the attempts made and the last error.
    """
    name = store_name(engine)
    attempts = 1 if engine.dialect.name == "sqlite" else settings.db_start_attempts
    wait_s = settings.db_start_retry_wait_s

    def log_retry(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "store %s not reachable (attempt %d of %d: %s); retrying in %g s",
            name,
            state.attempt_number,
            attempts,
            _one_line(failure) if failure is not None else "no error",
            wait_s,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_fixed(wait_s),
        retry=retry_if_exception_type((OperationalError, InterfaceError)),
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError) as exc:
        tried = f"{attempts} attempts, {wait_s:g} s apart, all failed" if attempts > 1 else "the one attempt failed"
        raise StoreUnavailable(
            f"cannot connect to the store {name}: {tried} (PULSEBOARD_DB_START_ATTEMPTS, "
            f"PULSEBOARD_DB_START_RETRY_WAIT_S); last error: {_one_line(exc)}"
        ) from exc


def _sqlite_hook(settings: Settings) -> Callable[[DBAPIConnection, ConnectionPoolEntry], None]:
    return functools.partial(_sqlite_pragmas, busy_timeout_ms=settings.sqlite_busy_timeout_ms)


ANSWER_GRACE_S = 1.0  # past the statement timeout, the client gives up on a silent server


def answer_deadline_s(settings: Settings) -> float:
    """Seconds the client waits for any answer of the server on an open connection: the
    statement timeout (the server cancels first when it is alive) plus ``ANSWER_GRACE_S``."""
    return settings.db_statement_timeout_s + ANSWER_GRACE_S


@functools.cache
def _deadline_connections(
    deadline_s: float,
) -> tuple[type[psycopg.Connection[Any]], type[psycopg.AsyncConnection[Any]]]:
    """psycopg ``Connection`` / ``AsyncConnection`` subclasses whose every wait for the server
    (a query, its results, commit, rollback) gives up after ``deadline_s``.

    libpq has no client-side statement timeout, and a server that hangs instead of refusing (a
    stopped postmaster and backends, a network black hole) still has its kernel acknowledge our
    bytes, so neither ``statement_timeout`` nor TCP timeouts end the wait.  Past the deadline the
    connection is closed (its state is unknown) and ``psycopg.OperationalError`` raised:
    SQLAlchemy sees a closed connection, invalidates it, and the request answers 503.
    """
    # psycopg's own "no answer within timeout" error (private; OperationalError where it is missing)
    timed_out: type[Exception] = getattr(psycopg.errors, "_WaitTimeout", psycopg.errors.OperationalError)

    def give_up(conn: psycopg.BaseConnection[Any]) -> psycopg.OperationalError:
        conn.pgconn.finish()
        return psycopg.OperationalError(f"the database gave no answer within {deadline_s:g} s; connection closed")

    class DeadlineConnection(psycopg.Connection[Any]):
        def wait(self, gen: PQGen[_RV], interval: float | None = None, timeout: float | None = None) -> _RV:
            kw = {} if interval is None else {"interval": interval}
            try:
                return super().wait(gen, timeout=deadline_s if timeout is None else timeout, **kw)
            except timed_out as exc:
                if type(exc) is not timed_out or timeout is not None:
                    raise
                raise give_up(self) from None

    class DeadlineAsyncConnection(psycopg.AsyncConnection[Any]):
        async def wait(
            self,
            gen: PQGen[_RV],
            interval: float | None = None,
            timeout: float | None = None,  # noqa: ASYNC109 - psycopg's own signature
        ) -> _RV:
            kw = {} if interval is None else {"interval": interval}
            try:
                return await super().wait(gen, timeout=deadline_s if timeout is None else timeout, **kw)
            except timed_out as exc:
                if type(exc) is not timed_out or timeout is not None:
                    raise
                raise give_up(self) from None

    return DeadlineConnection, DeadlineAsyncConnection


def _pg_connect_args(settings: Settings) -> dict[str, object]:
    """psycopg connection arguments: ``options``, ``connect_timeout`` (whole seconds), no
    server-side prepared statements."""
    return {
        "options": _pg_options(settings),
        "connect_timeout": settings.db_connect_timeout_s,
        "prepare_threshold": None,
    }


def _pg_options(settings: Settings) -> str:
    """libpq ``options``: durable commits, the statement timeout (ms), and the configured schema
    first on the search path."""
    options = f"-c synchronous_commit=on -c statement_timeout={max(1, round(settings.db_statement_timeout_s * 1000))}"
    if settings.db_schema:
        options += f" -c search_path={settings.db_schema}"
    return options


def _sync_engine(settings: Settings, client_deadline: bool = True, **pool: int) -> Engine:
    url = _sync_url(settings)
    if url.startswith("postgresql"):
        engine = create_engine(
            url, pool_pre_ping=True, pool_timeout=settings.store_wait_s, **pool, connect_args=_pg_connect_args(settings)
        )
        if not client_deadline:
            return engine
        connection_class = _deadline_connections(answer_deadline_s(settings))[0]
        sa_event.listen(
            engine, "do_connect", lambda _dialect, _record, cargs, cparams: connection_class.connect(*cargs, **cparams)
        )
        return engine
    engine = create_engine(url, pool_timeout=settings.store_wait_s, **pool)
    if engine.dialect.name == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        sa_event.listen(engine, "connect", _sqlite_hook(settings))
    return engine


def create_writer_engine(settings: Settings) -> Engine:
    """A synchronous engine for the group-commit writer, which runs each whole transaction on
    its own thread (one hand-off from the event loop per group instead of one per statement).
    Same durability settings as ``create_engine_for``; at most 2 connections."""
    return _sync_engine(settings, pool_size=1, max_overflow=1)


def migrate(settings: Settings) -> tuple[str | None, str | None]:
    """Apply every pending Alembic migration to the configured store (blocking).

    Returns:
        ``(revision before, revision after)``; ``None`` before is a new store.

    Raises:
        MigrationError: naming the store and the cause when a migration fails.
    """
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per plugin at every start is noise
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = _sync_engine(settings, client_deadline=False)  # a migration may take long
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")  # a migration may take long
                if settings.db_schema:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{settings.db_schema}"')
                # One migrator at a time when several instances start together.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7253001)")
            cfg.attributes["connection"] = conn
            before = MigrationContext.configure(conn).get_current_revision()
            command.upgrade(cfg, "head")
            after = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise MigrationError(f"migrating {engine.url.render_as_string(hide_password=True)} failed: {exc}") from exc
    finally:
        engine.dispose()
    return before, after


async def migrate_async(settings: Settings) -> None:
    """``migrate`` run in a worker thread (for use inside the event loop)."""
    await asyncio.to_thread(migrate, settings)
