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



@main.group()
def snapshot() -> None:
    """End-of-day and month-end snapshots."""


@snapshot.command("cut")
@click.option("--grain", type=click.Choice(["day", "month"]), required=True)
@click.option("--period", required=True, help="YYYY-MM-DD for a day, YYYY-MM for a month (local, business zone)")
@click.option("--dashboard", default=None, help="one dashboard (default: every dashboard)")
def snapshot_cut(grain: str, period: str, dashboard: str | None) -> None:
    """Cut (or re-cut) a period now: the scheduled job's code path, on the configured store."""
    import asyncio

    asyncio.run(_snapshot_cut(_settings(), grain, period, dashboard))


async def _snapshot_cut(settings: Settings, grain: str, period: str, dashboard: str | None) -> None:
    from app.clock import SystemClock
    from app.metrics.pack import load_packs
    from app.snapshots import NotCut, PeriodNotClosed
    from app.snapshots.service import SnapshotService
    from app.store.db import create_engine_for, migrate_async

    await migrate_async(settings)
    engine = create_engine_for(settings)
    try:
        service = SnapshotService(engine, load_packs(settings.packs_dir), settings, SystemClock())
        slugs = [dashboard] if dashboard else list(service.targets)
        for slug in slugs:
            try:
                row, created = await service.cut_period(slug, grain, period)
            except (NotCut, PeriodNotClosed, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            verdict = "cut" if created else "unchanged"
            click.echo(f"{slug} {grain} {period}: version {row.version} {row.status} ({verdict})"
                       + (f"; {row.cause}" if created and row.cause else ""))
    finally:
        await engine.dispose()


from app.replay.cli import demo, replay  # noqa: E402

main.add_command(replay)
main.add_command(demo)

if __name__ == "__main__":
    sys.exit(main())
