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


class StoreError(Exception):
    """Base of storage errors."""


class StoreUnavailable(StoreError):
    """The database is unreachable or failed the transaction; retry later."""


class MigrationError(StoreError):
    """Migrations failed; the message says which and why."""
