"""Engine creation and migrations for the embedded SQLite store and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.config import Settings
from app.store import MigrationError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI hook
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sync_url(settings: Settings) -> str:
    return settings.sqlalchemy_url.replace("+aiosqlite", "")


def create_engine_for(settings: Settings) -> AsyncEngine:
    """The async engine of the configured store.

    SQLite: the data dir is created; every connection gets WAL,
    ``synchronous=FULL`` (a commit is on disk before it returns) and a busy
    timeout.  PostgreSQL: psycopg 3, ``synchronous_commit=on``.
    """
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=4, max_overflow=4)
        sa_event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        connect_args={"options": _pg_options(settings), "prepare_threshold": None},
    )


def _pg_options(settings: Settings) -> str:
    """libpq ``options``: durable commits, and the configured schema first on the search path."""
    options = "-c synchronous_commit=on"
    if settings.db_schema:
        options += f" -c search_path={settings.db_schema}"
    return options


def _sync_engine(settings: Settings, **pool: int) -> Engine:
    url = _sync_url(settings)
    if url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True, **pool,
                             connect_args={"options": _pg_options(settings), "prepare_threshold": None})
    engine = create_engine(url, **pool)
    if engine.dialect.name == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        sa_event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_writer_engine(settings: Settings) -> Engine:
    """A synchronous engine for the group-commit writer, which runs each whole transaction on
    its own thread (one hand-off from the event loop per group instead of one per statement).
    Same durability settings as ``create_engine_for``; at most 2 connections."""
    return _sync_engine(settings, pool_size=1, max_overflow=1)


def migrate(settings: Settings) -> None:
    """Apply every pending Alembic migration to the configured store (blocking).

    Raises:
        MigrationError: naming the store and the cause when a migration fails.
    """
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per plugin at every start is noise
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = _sync_engine(settings)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                if settings.db_schema:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{settings.db_schema}"')
                # One migrator at a time when several instances start together.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7253001)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise MigrationError(f"migrating {engine.url.render_as_string(hide_password=True)} failed: {exc}") from exc
    finally:
        engine.dispose()


async def migrate_async(settings: Settings) -> None:
    """``migrate`` run in a worker thread (for use inside the event loop)."""
    await asyncio.to_thread(migrate, settings)
