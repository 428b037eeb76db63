"""The scratch PostgreSQL database of the suite (``bench``), created if absent and dropped at the end."""

from __future__ import annotations

import psycopg

from bench.paths import PG_ADMIN_URL, PG_BENCH_DB, PG_BENCH_URL


def available() -> bool:
    """Whether the PostgreSQL server answers."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def version() -> str | None:
    """``server_version`` of the PostgreSQL server, or None."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error:
        return None


def create_bench_db() -> str:
    """Create the scratch database ``bench`` (dropping a leftover one first); returns its URL."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{PG_BENCH_DB}"')
    return PG_BENCH_URL


def drop_bench_db() -> None:
    """Drop the scratch database (and everything the suite stored in it)."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_BENCH_DB}" WITH (FORCE)')
