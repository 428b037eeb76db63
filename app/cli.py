"""The ``pulseboard`` command line (CONTRACT §1)."""

from __future__ import annotations

import logging
import sys

import click

from app.config import Settings


def _settings(**overrides) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise click.ClickException(f"invalid configuration: {exc}") from None


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log at DEBUG level")
def main(verbose: bool) -> None:
    """Pulseboard: real-time operations dashboards."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--host", default=None, help="bind address (default PULSEBOARD_HOST or 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (default PULSEBOARD_PORT or 8000)")
def serve(host: str | None, port: int | None) -> None:
    """Run the server (embedded SQLite under the data dir unless DATABASE_URL is set)."""
    import uvicorn

    from app.main import create_app

    settings = _settings(host=host, port=port)
    uvicorn.run(create_app(settings), **uvicorn_options(settings))


def uvicorn_options(settings: Settings) -> dict:
    """uvicorn settings derived from ours (bind, WebSocket limits and pings)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "ws_max_size": 64 * 1024,
        "ws_ping_interval": settings.ws_ping_interval_s,
        "ws_ping_timeout": settings.ws_ping_timeout_s,
        "ws_per_message_deflate": False,
        "log_level": "info",
        "timeout_graceful_shutdown": 5,
    }


@main.command()
def migrate() -> None:
    """Apply migrations to the configured store."""
    from app.store.db import migrate as run_migrations

    settings = _settings()
    run_migrations(settings)
    click.echo(f"store at {settings.sqlalchemy_url.split('@')[-1]} is up to date")


if __name__ == "__main__":
    sys.exit(main())

from app.replay.cli import demo, replay  # noqa: E402

main.add_command(replay)
main.add_command(demo)
