"""``pulseboard serve`` and ``pulseboard migrate``."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import click

from app.cli.common import announce_store, load_settings, store_url


@click.command()
@click.option("--host", default=None, help="bind address (default PULSEBOARD_HOST or 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (default PULSEBOARD_PORT or 8000)")
def serve(host: str | None, port: int | None) -> None:
    """Run the server (embedded SQLite under the data dir unless DATABASE_URL is set)."""
    import uvicorn

    from app.main import create_app, uvicorn_options

    settings = load_settings(host=host, port=port)
    announce_store(settings)
    # uvicorn handles SIGTERM itself (stop accepting, close WebSockets with 1012, finish in-flight
    # requests, run the lifespan shutdown, which drains the ingest writer), then re-raises the
    # signal to the handler found at start: ours, so a graceful stop exits 0 instead of -15.
    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(create_app(settings), **uvicorn_options(settings))


def _stopped(signum: int, frame: FrameType | None) -> None:
    logging.getLogger("app.cli").info("stopped on signal %d after a graceful shutdown", signum)


@click.command()
def migrate() -> None:
    """Apply migrations to the configured store."""
    from app.store.db import migrate as run_migrations

    settings = load_settings()
    announce_store(settings)
    run_migrations(settings)
    click.echo(f"store {store_url(settings)} is up to date")
