"""Alembic environment: runs migrations on the URL handed in by ``app.store.db``."""

from alembic import context

from app.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    raise RuntimeError("run migrations through `pulseboard migrate` (app.store.db.migrate)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
