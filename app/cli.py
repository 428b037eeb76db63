"""The ``pulseboard`` command line (CONTRACT §1)."""

from __future__ import annotations

import logging
import signal
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
    # uvicorn handles SIGTERM itself (stop accepting, close WebSockets with 1012, finish in-flight
    # requests, run the lifespan shutdown, which drains the ingest writer), then re-raises the
    # signal to the handler found at start: ours, so a graceful stop exits 0 instead of -15.
    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(create_app(settings), **uvicorn_options(settings))


def _stopped(signum: int, frame) -> None:
    logging.getLogger("app.cli").info("stopped on signal %d after a graceful shutdown", signum)


def uvicorn_options(settings: Settings) -> dict:
    """uvicorn settings derived from ours (bind, WebSocket implementation, limits and pings)."""
    from app.ws.transport import direct_protocol

    return {
        "host": settings.host,
        "port": settings.port,
        "ws_max_size": settings.ws_max_inbound_bytes,
        "ws_ping_interval": settings.ws_ping_interval_s,
        "ws_ping_timeout": settings.ws_ping_timeout_s,
        "ws_per_message_deflate": False,
        "ws": direct_protocol(settings.ws_write_buffer_bytes),  # websockets sans-I/O + direct frame writes
        "log_level": "info",
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
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


@main.group()
def keys() -> None:
    """API keys: create (shown once), list, revoke."""


async def _with_keys(settings: Settings, action):
    from app.auth.keys import KeyStore
    from app.store.db import create_engine_for, migrate_async

    await migrate_async(settings)
    engine = create_engine_for(settings)
    try:
        return await action(KeyStore(engine))
    finally:
        await engine.dispose()


def _now_us() -> int:
    from app.clock import SystemClock
    from app.metrics.calendar import to_us

    return to_us(SystemClock().now())


@keys.command("create")
@click.option("--scope", type=click.Choice(["ingest", "read", "display", "admin"]), required=True)
@click.option("--source", default=None, help="ingest: the one source this key may post")
@click.option("--event-type", "event_types", multiple=True, help="ingest: restrict to these event types (repeatable)")
@click.option("--dashboard", default=None, help="display: the one dashboard this key may show")
@click.option("--name", default="", help="a label for lists")
def keys_create(scope: str, source: str | None, event_types: tuple[str, ...], dashboard: str | None, name: str) -> None:
    """Create a key and print it alone on the last line (only its hash is kept)."""
    import asyncio

    async def action(store):
        return await store.create(scope, name, _now_us(), source, list(event_types) or None, dashboard)

    try:
        key, info = asyncio.run(_with_keys(_settings(), action))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {info['scope']} key {info['id']} ({info['hint']}); it is shown only now:")
    click.echo(key)


@keys.command("list")
def keys_list() -> None:
    """List keys (id, scope, binding, hint, created, last used, revoked)."""
    import asyncio

    rows = asyncio.run(_with_keys(_settings(), lambda store: store.list()))
    for r in rows:
        binding = r["source"] or r["dashboard"] or "-"
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
        click.echo(f"{r['id']}  {r['scope']:<7} {binding:<20} {r['hint']:<12} {r['name']:<20} "
                   f"created {r['created_at']}  last used {r['last_used_at'] or 'never'}  {state}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id (open screens using it close within seconds)."""
    import asyncio

    info = asyncio.run(_with_keys(_settings(), lambda store: store.revoke(key_id, _now_us())))
    if info is None:
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"revoked {info['scope']} key {info['id']} ({info['hint']})")


from app.replay.cli import demo, replay  # noqa: E402

main.add_command(replay)
main.add_command(demo)

if __name__ == "__main__":
    sys.exit(main())
