"""``pulseboard rollups rebuild`` and ``pulseboard packs reload``: derived state from the raw log."""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime

import click
from tqdm import tqdm

from app.cli.common import announce_store, load_settings, parse_start


@click.group()
def rollups() -> None:
    """The rollups: derived, rebuildable views of the raw event log."""


def _instant(text: str | None, zone: str, option: str) -> int | None:
    if text is None:
        return None
    try:
        when = parse_start(text, zone)
    except click.BadParameter as exc:
        raise click.BadParameter(str(exc.message).replace("--start", option), param_hint=option) from None
    assert isinstance(when, datetime)
    return int(when.timestamp() * 1_000_000)


@rollups.command("rebuild")
@click.option("--pack", default=None, help="only this pack's measures (default: every pack)")
@click.option("--measure", default=None, help="only this measure (NAME, or PACK/NAME)")
@click.option("--since", default=None, help="ISO date-time (default: the oldest stored event, or the horizon)")
@click.option("--until", default=None, help="ISO date-time, exclusive (default: after the newest stored event)")
@click.option("--chunk-hours", type=click.IntRange(1, 744), default=None, help="hours per transaction")
@click.option("--pause-s", type=click.FloatRange(0, 60), default=0.0, help="pause between chunks (a busy store)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def rollups_rebuild(
    pack: str | None,
    measure: str | None,
    since: str | None,
    until: str | None,
    chunk_hours: int | None,
    pause_s: float,
    quiet: bool,
) -> None:
    """Recompute the rollups (minute and hour partials, sketch bins, distinct-count registers) of
    the chosen measures from raw events, online: ingest and live tiles go on, and every read sees
    each chunk either before or after it.  Idempotent; a run that was killed is resumed where it
    stopped by the same command.  Periods before the raw-retention horizon are refused.
    """
    from app.clock import SystemClock
    from app.metrics.calendar import to_us
    from app.metrics.pack import load_packs
    from app.store.db import create_writer_engine, migrate
    from app.store.rebuild import RebuildRefused, rebuild, select_measures

    settings = load_settings()
    announce_store(settings)
    packs = load_packs(settings.packs_dir)
    since_us = _instant(since, settings.tz, "--since")
    until_us = _instant(until, settings.tz, "--until")
    try:
        target = select_measures(packs, pack, measure)
    except RebuildRefused as exc:
        raise click.ClickException(str(exc)) from None
    migrate(settings)
    engine = create_writer_engine(settings)
    bar = tqdm(total=0, unit="h", desc="rebuild", file=sys.stderr, disable=quiet, dynamic_ncols=True)

    def progress(done_us: int, total_us: int) -> None:
        bar.total = total_us // 3_600_000_000
        bar.n = done_us // 3_600_000_000
        bar.refresh()

    try:
        summary = rebuild(
            engine,
            target,
            since_us,
            until_us,
            now_us=to_us(SystemClock().now()),
            retention_days=settings.raw_retention_days,
            chunk_s=chunk_hours * 3600 if chunk_hours else settings.rebuild_chunk_s,
            pause_s=pause_s,
            progress=progress,
        )
    except RebuildRefused as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
        engine.dispose()
    for line in summary.lines():
        click.echo(line)


@click.group()
def packs() -> None:
    """KPI packs."""


@packs.command("reload")
@click.option("--pid", type=int, default=None, help="a running server's process id: send it SIGHUP instead")
def packs_reload(pid: int | None) -> None:
    """Apply the packs on disk to the store: rebuild exactly the measures whose definition hash
    changed, then restate every closed snapshot whose numbers moved (cause ``definition changed:
    <measure>: <old> → <new>``).  With a server running, send it SIGHUP (``--pid``): it reloads its
    packs and does the same while it serves.
    """
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise click.ClickException(f"no process {pid}") from None
        click.echo(f"sent SIGHUP to {pid}")
        return
    import asyncio

    from app.metrics.pack import load_packs
    from app.store.definitions import apply_definitions_now

    settings = load_settings()
    announce_store(settings)
    report = asyncio.run(apply_definitions_now(settings, load_packs(settings.packs_dir)))
    for line in report.lines():
        click.echo(line)
