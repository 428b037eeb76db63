"""``pulseboard serve`` and ``pulseboard migrate``."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path
from types import FrameType

import click

from app.cli.common import announce_store, load_settings, store_url
from app.config import Settings


@click.command()
@click.option("--host", default=None, help="bind address (default PULSEBOARD_HOST or 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (default PULSEBOARD_PORT or 8000)")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="worker processes (default PULSEBOARD_WORKERS or 1); more than 1 needs PostgreSQL and Redis",
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the server (embedded SQLite under the data dir unless DATABASE_URL is set).

    With ``--workers N`` (N > 1) uvicorn runs N worker processes on one socket; they share
    PostgreSQL (DATABASE_URL) and Redis (PULSEBOARD_REDIS_URL), one of them leads (app.cluster),
    and /metrics merges them all (PROMETHEUS_MULTIPROC_DIR, a fresh temp dir unless set).
    """
    settings = load_settings(host=host, port=port, workers=workers)
    if settings.workers > 1:
        refusal = workers_refusal(settings.database_url, settings.redis_url)
        if refusal:
            raise click.UsageError(refusal)
        _serve_workers(settings)
        return
    import uvicorn

    from app.main import create_app, uvicorn_options
    from app.metrics import PackError
    from app.notify import NotifyConfigError

    announce_store(settings)
    # uvicorn handles SIGTERM itself (stop accepting, close WebSockets with 1012, finish in-flight
    # requests, run the lifespan shutdown, which drains the ingest writer), then re-raises the
    # signal to the handler found at start: ours, so a graceful stop exits 0 instead of -15.
    signal.signal(signal.SIGTERM, _stopped)
    try:
        app = create_app(settings)
    except (PackError, NotifyConfigError) as exc:  # every problem of the file, one line each; no traceback
        raise click.ClickException(str(exc)) from None
    uvicorn.run(app, **uvicorn_options(settings))


def workers_refusal(database_url: str | None, redis_url: str | None) -> str | None:
    """Why ``--workers > 1`` cannot run with this configuration, or ``None``."""
    if not database_url:
        return (
            "--workers > 1 needs PostgreSQL (set DATABASE_URL): the embedded SQLite store runs as one "
            "process (see README, 'Run it for many screens')"
        )
    if not redis_url:
        return (
            "--workers > 1 needs Redis (set PULSEBOARD_REDIS_URL): it carries tile updates between the "
            "processes and elects the one leader"
        )
    return None


def _serve_workers(settings: Settings) -> None:
    """uvicorn with ``settings.workers`` processes importing ``app.main:create_app`` each."""
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not metrics_dir:  # before any worker imports prometheus_client
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="pulseboard-metrics-")
    else:  # prometheus_client: the directory must exist and be wiped between runs
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()
    os.environ["PULSEBOARD_WORKERS"] = "1"  # each worker is one process of the cluster
    import uvicorn

    from app.api.worker_edge import IMPORT_PATH as HTTP_IMPORT_PATH
    from app.main import uvicorn_options
    from app.store.db import migrate as run_migrations
    from app.ws.worker_protocol import IMPORT_PATH

    announce_store(settings)
    run_migrations(settings)  # once, before the workers start
    # Workers are spawned: protocol classes built for the settings go by import path, not pickled.
    options = {**uvicorn_options(settings), "http": HTTP_IMPORT_PATH, "ws": IMPORT_PATH}
    logging.getLogger("app.cli").info(
        "starting %d workers (metrics in %s)", settings.workers, os.environ["PROMETHEUS_MULTIPROC_DIR"]
    )
    uvicorn.run("app.main:create_app", factory=True, workers=settings.workers, **options)


def _stopped(signum: int, frame: FrameType | None) -> None:
    logging.getLogger("app.cli").info("stopped on signal %d after a graceful shutdown", signum)


@click.command()
def migrate() -> None:
    """Apply migrations to the configured store."""
    from app.store.db import migrate as run_migrations

    settings = load_settings()
    announce_store(settings)
    before, after = run_migrations(settings)
    if before == after:
        click.echo(f"store {store_url(settings)} is up to date (revision {after})")
    elif before is None:
        click.echo(f"store {store_url(settings)} created (migrated to revision {after})")
    else:
        click.echo(f"store {store_url(settings)} migrated from revision {before} to {after}")
