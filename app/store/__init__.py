"""Storage: raw events and 1-minute rollup partials, written in one transaction.

SQLAlchemy 2 (async) over the embedded SQLite file (WAL, ``synchronous=FULL``)
or PostgreSQL (``DATABASE_URL``); one code path for both.  Schema changes are
Alembic migrations in ``migrations/``.

Exception tree (``StoreUnavailable`` is answered by ``app.api.problems``, as are the driver's
lost connections and pool timeouts)::

    StoreError
     ├── StoreUnavailable   503 + Retry-After: the database cannot be reached or refused the write
     └── MigrationError     the schema could not be brought up to date (at start: the process stops)
"""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class StoreError(Exception):
    """Base of storage errors."""


class StoreUnavailable(StoreError):
    """The database is unreachable or failed the transaction; retry later."""


class MigrationError(StoreError):
    """Migrations failed; the message says which and why."""


def store_down(exc: BaseException) -> bool:
    """Whether ``exc`` says the store itself failed (lost connection, timeout, pool exhausted,
    locked file, server shut down) rather than refusing one request's data: retrying the other
    requests or dashboards one by one would fail the same way, so callers give up the pass."""
    if isinstance(exc, (StoreUnavailable, OSError, TimeoutError, OperationalError, PoolTimeout)):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, (psycopg.OperationalError, OSError))
    return False
