"""Storage: raw events and 1-minute rollup partials, written in one transaction.

SQLAlchemy 2 (async) over the embedded SQLite file (WAL, ``synchronous=FULL``)
or PostgreSQL (``DATABASE_URL``); one code path for both.  Schema changes are
Alembic migrations in ``migrations/``.

Exception tree::

    StoreError
     ├── StoreUnavailable   the database cannot be reached or refused the write (-> 503)
     └── MigrationError     the schema could not be brought up to date
"""


class StoreError(Exception):
    """Base of storage errors."""


class StoreUnavailable(StoreError):
    """The database is unreachable or failed the transaction; retry later."""


class MigrationError(StoreError):
    """Migrations failed; the message says which and why."""
