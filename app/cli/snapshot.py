"""``pulseboard snapshot cut``."""

from __future__ import annotations

import asyncio

import click

from app.cli.common import load_settings
from app.config import Settings


@click.group()
def snapshot() -> None:
    """End-of-day and month-end snapshots."""


@snapshot.command("cut")
@click.option("--grain", type=click.Choice(["day", "month"]), required=True)
@click.option("--period", required=True, help="YYYY-MM-DD for a day, YYYY-MM for a month (local, business zone)")
@click.option("--dashboard", default=None, help="one dashboard (default: every dashboard)")
def snapshot_cut(grain: str, period: str, dashboard: str | None) -> None:
    """Cut (or re-cut) a period now: the scheduled job's code path, on the configured store."""
    asyncio.run(_snapshot_cut(load_settings(), grain, period, dashboard))


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
            click.echo(
                f"{slug} {grain} {period}: version {row.version} {row.status} ({verdict})"
                + (f"; {row.cause}" if created and row.cause else "")
            )
    finally:
        await engine.dispose()
