"""``pulseboard snapshot cut``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from app.cli.common import announce_store, load_settings
from app.clock import EventClock
from app.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


@click.group()
def snapshot() -> None:
    """End-of-day and month-end snapshots."""


@snapshot.command("cut")
@click.option("--grain", type=click.Choice(["day", "month"]), required=True)
@click.option("--period", required=True, help="YYYY-MM-DD for a day, YYYY-MM for a month (local, business zone)")
@click.option("--dashboard", default=None, help="one dashboard (default: every dashboard)")
@click.option(
    "--allow-empty",
    is_flag=True,
    help="cut a period that holds no events of the dashboard (by default it is refused: wrong store or zone?)",
)
def snapshot_cut(grain: str, period: str, dashboard: str | None, allow_empty: bool) -> None:
    """Cut (or re-cut) a period now: the scheduled job's code path, on the configured store.

    Acts on the store and zone printed first (see the README to point it at the demo's).
    With PULSEBOARD_CLOCK=event, "now" is the newest stored event's time, as for the server.
    A period with no events of a dashboard is not cut unless --allow-empty, nor (without
    --dashboard) one that has not ended in that dashboard's zone; the command fails when nothing
    was cut at all.
    """
    settings = load_settings()
    announce_store(settings)
    handled = asyncio.run(_snapshot_cut(settings, grain, period, dashboard, allow_empty))
    if not handled:
        raise click.ClickException(
            f"nothing cut: no dashboard has events in {grain} {period} on this store "
            "(check the store and zone above; --allow-empty cuts empty periods)"
        )


async def _event_clock(engine: AsyncEngine) -> EventClock:
    """An ``EventClock`` at the newest stored event, as the server builds it in event-time mode."""
    from sqlalchemy import func, select

    from app.store.schema import event

    clock = EventClock()
    async with engine.connect() as conn:
        newest = (await conn.execute(select(func.max(event.c.ts_us)))).scalar()
    if newest is not None:
        clock.observe(int(newest))
    return clock


async def _events_in(engine: AsyncEngine, event_types: frozenset[str] | set[str], start_us: int, end_us: int) -> int:
    """How many stored events of ``event_types`` fall in ``[start_us, end_us)``."""
    from sqlalchemy import func, select

    from app.store.schema import event

    e = event.c
    query = select(func.count()).where(e.type.in_(sorted(event_types)), e.ts_us >= start_us, e.ts_us < end_us)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _snapshot_cut(settings: Settings, grain: str, label: str, dashboard: str | None, allow_empty: bool) -> int:
    """Cut ``label`` for ``dashboard`` (or every one); print one line per dashboard.

    Returns:
        How many dashboards were cut or found already cut (0: every one was skipped as empty or,
        without ``dashboard``, as not ended yet in its zone).

    Raises:
        click.ClickException: unknown dashboard, bad period, or (with ``dashboard``) a period
            that has not ended.
    """
    from app.clock import SystemClock
    from app.metrics.pack import load_packs
    from app.snapshots import NotCut, PeriodNotClosed
    from app.snapshots.service import SnapshotService
    from app.store.db import create_engine_for, migrate_async

    await migrate_async(settings)
    engine = create_engine_for(settings)
    try:
        clock = await _event_clock(engine) if settings.clock == "event" else SystemClock()
        service = SnapshotService(engine, load_packs(settings.packs_dir), settings, clock)
        slugs = [dashboard] if dashboard else list(service.targets)
        handled = 0
        for slug in slugs:
            try:
                target = service.target(slug)
                period = service.period(slug, grain, label)
                where = f"{slug} {grain} {label} ({period.zone})"
                now_us = service.now_us()
                if now_us is None or period.end_us > now_us:
                    clock_note = " (event clock: the newest stored event)" if settings.clock == "event" else ""
                    why = f"{grain} {label} ends at {period.end.isoformat()}; it cannot be cut before{clock_note}"
                    if dashboard:
                        raise PeriodNotClosed(why)
                    click.echo(f"{where}: {why}; not cut", err=True)  # another dashboard's zone may be ahead
                    continue
                if not allow_empty and not await _events_in(
                    engine, target.pack.event_types, period.start_us, period.end_us
                ):
                    click.echo(
                        f"{where}: no events from {period.start.isoformat()} to {period.end.isoformat()}; "
                        "not cut (--allow-empty cuts it anyway)",
                        err=True,
                    )
                    continue
                row, created = await service.cut_period(slug, grain, label)
            except (NotCut, PeriodNotClosed, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            handled += 1
            verdict = "cut" if created else "unchanged"
            click.echo(
                f"{where}: version {row.version} {row.status} ({verdict})"
                + (f"; {row.cause}" if created and row.cause else "")
            )
        return handled
    finally:
        await engine.dispose()
