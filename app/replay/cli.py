"""``pulseboard replay anonymous-bank``, ``pulseboard replay itsm-incident-log`` and
``pulseboard demo`` (CONTRACT §1).

``app.cli`` adds these two commands to its group; ``app.cli`` is imported only
inside the commands, so either module can be imported first.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime, time
from pathlib import Path

import click

from app.replay.client import DEFAULT_URL, ReplayError, ReplaySummary, replay_events

DEMO_FILE = Path(__file__).resolve().parent.parent / "demo" / "anonymous-bank-excerpt.tsv.gz"
DEMO_TZ = "Asia/Jerusalem"
DEMO_DASHBOARD = "contact-centre"
DEMO_OPENS = time(7, 0)  # the call centre opens at 07:00: backfill the night, pace from here


class SpeedType(click.ParamType):
    """``max`` or a positive number (seconds of event time per second)."""

    name = "N|max"

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        if value is None or isinstance(value, float):
            return value
        text = str(value).strip().lower()
        if text == "max":
            return None
        try:
            speed = float(text)
        except ValueError:
            self.fail(f"{value!r} is neither 'max' nor a number", param, ctx)
        if not speed > 0 or speed == float("inf"):
            self.fail(f"{value!r} must be a positive number", param, ctx)
        return speed


def parse_start(text: str | None, zone_name: str = DEMO_TZ) -> datetime | None:
    """``--start``: an ISO date-time; without an offset it is local time in ``zone_name``."""
    if text is None:
        return None
    from zoneinfo import ZoneInfo

    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date-time (e.g. 1999-08-10T07:00:00+03:00)",
                                 param_hint="--start") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=ZoneInfo(zone_name))


def _load(path: Path) -> list[dict]:
    from app.replay.anonymous_bank import RowError, load_events

    try:
        return load_events(path)
    except RowError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    except (OSError, EOFError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None


def _quiet_http_log() -> None:
    """One INFO line per POST from httpx would drown the progress bar (kept with ``pulseboard -v``)."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _print_summary(summary: ReplaySummary) -> None:
    click.echo("replay done")
    for line in summary.lines():
        click.echo(line)


@click.group()
def replay() -> None:
    """Replay a recorded log into a running server through the HTTP API."""


@replay.command("anonymous-bank")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default=DEFAULT_URL, show_default=True, help="base URL of the Pulseboard server")
@click.option("--speed", type=SpeedType(), default="max", show_default=True,
              help="'max' = as fast as the server accepts; N = N seconds of call time per second (60: an hour a minute)")
@click.option("--start", "start_text", default=None, metavar="ISO",
              help="replay-clock start: earlier events are posted at once, later ones paced by --speed "
                   "(no offset = Asia/Jerusalem local time)")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="most events per POST")
@click.option("--api-key", envvar="PULSEBOARD_API_KEY", default=None,
              help="sent as 'Authorization: Bearer KEY' (env PULSEBOARD_API_KEY)")
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar on stderr")
def anonymous_bank(file: Path, url: str, speed: float | None, start_text: str | None, batch_size: int,
                   api_key: str | None, progress: bool) -> None:
    """Post the Anonymous Bank call log FILE (.tsv or .tsv.gz) as events (CONTRACT §5)."""
    _quiet_http_log()
    events = _load(file)
    if not events:
        raise click.ClickException(f"{file}: no events (empty log, or only PHANTOM rows)")
    _post_and_summarise(file, events, url, speed, parse_start(start_text), batch_size, progress, api_key)


def _post_and_summarise(file: Path, events: list[dict], url: str, speed: float | None, start: datetime | None,
                        batch_size: int, progress: bool, api_key: str | None) -> None:
    """Post ``events`` through the API and print the summary (shared by every log's command)."""
    click.echo(f"{len(events)} events from {file.name}, {events[0]['ts'].isoformat()} .. "
               f"{events[-1]['ts'].isoformat()}, to {url} at speed {'max' if speed is None else speed}", err=True)
    try:
        summary = asyncio.run(replay_events(events, url, speed, start, batch_size, progress, api_key=api_key))
    except ReplayError as exc:
        raise click.ClickException(f"replay stopped: {exc}") from None
    except KeyboardInterrupt:
        raise click.ClickException("replay interrupted") from None
    _print_summary(summary)


def _load_itsm(path: Path) -> list[dict]:
    from app.replay.itsm import RowError, map_file

    try:
        events, stats = map_file(path)
    except RowError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    for line in stats.lines():
        click.echo(line, err=True)
    return events


@replay.command("itsm-incident-log")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default=DEFAULT_URL, show_default=True, help="base URL of the Pulseboard server")
@click.option("--speed", type=SpeedType(), default="max", show_default=True,
              help="'max' = as fast as the server accepts; N = N seconds of incident time per second "
                   "(86400: a day a second)")
@click.option("--start", "start_text", default=None, metavar="ISO",
              help="replay-clock start: earlier events are posted at once, later ones paced by --speed "
                   "(no offset = UTC, the zone the log's times are taken in)")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="most events per POST")
@click.option("--api-key", envvar="PULSEBOARD_API_KEY", default=None,
              help="sent as 'Authorization: Bearer KEY' (env PULSEBOARD_API_KEY)")
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar on stderr")
def itsm_incident_log(file: Path, url: str, speed: float | None, start_text: str | None, batch_size: int,
                      api_key: str | None, progress: bool) -> None:
    """Post the ServiceNow incident event log FILE (.csv or .csv.gz) as incident events.

    One incident.opened / incident.resolved / incident.closed per incident, from its
    last row; times taken as UTC (mapping: app/replay/itsm.py).
    """
    _quiet_http_log()
    events = _load_itsm(file)
    if not events:
        raise click.ClickException(f"{file}: no events (empty log)")
    _post_and_summarise(file, events, url, speed, parse_start(start_text, "UTC"), batch_size, progress, api_key)


@click.command()
@click.option("--port", type=int, default=None, help="port (default PULSEBOARD_PORT or 8000)")
@click.option("--speed", type=SpeedType(), default="60", show_default=True,
              help="replay speed after 07:00 of the first day (60 = an hour a minute; 'max' = all at once)")
@click.option("--exit-after-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="stop server and replay after this many seconds (smoke tests)")
def demo(port: int | None, speed: float | None, exit_after_s: float | None) -> None:
    """Serve the contact-centre wall and replay three real days of calls into it.

    Uses its own embedded SQLite store under <data dir>/demo/ (emptied at start),
    whatever DATABASE_URL says.  Ctrl-C stops everything.
    """
    from app.cli import _settings

    base = _settings(port=port)
    settings = base.model_copy(update={
        "database_url": None, "data_dir": base.data_dir / "demo", "clock": "event", "tz": DEMO_TZ})
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            (settings.data_dir / f"pulseboard.db{suffix}").unlink(missing_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot prepare the demo store in {settings.data_dir}: {exc}") from None
    _quiet_http_log()
    events = _load(DEMO_FILE)
    first_day = events[0]["ts"].date()
    start = datetime.combine(first_day, DEMO_OPENS, tzinfo=events[0]["ts"].tzinfo)
    try:
        code = asyncio.run(_run_demo(settings, events, speed, start, exit_after_s))
    except KeyboardInterrupt:
        code = 0
        click.echo("\nstopped", err=True)
    sys.exit(code)


async def _demo_keys(runtime, base_url: str) -> dict[str, str]:
    """The demo's own keys: ingest for its replay, read and admin to print, and a display key
    handed to the first browser that opens the printed one-time pairing link."""
    from app.metrics.calendar import to_us

    now = to_us(runtime.clock.now())
    store = runtime.keys
    ingest, _ = await store.create("ingest", "demo replay", now, source="anonymous-bank")
    read, _ = await store.create("read", "demo reader", now)
    admin, _ = await store.create("admin", "demo admin", now)
    pairing = await runtime.pairings.preapproved(DEMO_DASHBOARD, "demo wall", now)  # key made when claimed
    return {"ingest": ingest, "read": read, "admin": admin, "wall_link": f"{base_url}/pair#s={pairing.secret}"}


async def _run_demo(settings, events: list[dict], speed: float | None, start: datetime,
                    exit_after_s: float | None) -> int:
    import uvicorn

    from app.cli import uvicorn_options
    from app.main import create_app

    options = {**uvicorn_options(settings), "access_log": False}
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    serve_task = asyncio.create_task(server.serve(), name="demo-server")
    while not server.started:
        if serve_task.done():
            serve_task.result()  # raises what stopped it (port taken, store error)
            return 1
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    keys = await _demo_keys(app.state.runtime, base_url)
    wall = keys["wall_link"]
    banner = "=" * max(40, len(wall) + 4)
    click.echo(f"\n{banner}\n  Pulseboard demo: open the wall at (one-time link: it pairs this browser)\n\n"
               f"  {wall}\n\n  then {base_url}/wall/{DEMO_DASHBOARD}\n{banner}")
    click.echo(f"  read key (API, /login, /day and /scorecard pages): {keys['read']}")
    click.echo(f"  admin key (pair more screens at {base_url}/pair, cut snapshots): {keys['admin']}")
    click.echo(f"replaying {len(events)} events of 1-3 August 1999 (Anonymous Bank call centre): "
               f"night backfilled up to {start:%H:%M}, then at speed {'max' if speed is None else speed}; "
               f"Ctrl-C stops", err=True)
    sys.stdout.flush()

    code = 0

    async def run_replay() -> None:
        nonlocal code
        try:
            summary = await replay_events(events, base_url, speed, start, progress=True, api_key=keys["ingest"])
        except ReplayError as exc:
            click.echo(f"demo replay stopped: {exc}", err=True)
            code = 1
            server.should_exit = True
            return
        click.echo(f"replay finished: {summary.accepted} accepted, {summary.duplicates} duplicates "
                   f"in {summary.elapsed_s:.0f} s; the wall stays up at {wall} (Ctrl-C to stop)", err=True)

    replay_task = asyncio.create_task(run_replay(), name="demo-replay")
    timer = None
    if exit_after_s is not None:
        async def stop_later() -> None:
            await asyncio.sleep(exit_after_s)
            click.echo(f"demo: --exit-after-s {exit_after_s:g} reached, stopping", err=True)
            server.should_exit = True
        timer = asyncio.create_task(stop_later(), name="demo-timer")
    try:
        await serve_task
    finally:
        for task in (replay_task, timer):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (replay_task, timer) if t is not None), return_exceptions=True)
    return code
