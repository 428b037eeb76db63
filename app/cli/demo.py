"""``pulseboard demo``: the server plus a paced replay of three real days of calls (CONTRACT §1);
``pulseboard demo --pack noc``: the NOC wall on both real alarm data sets (``data/noc-alarms/``).

The NOC variant replays the PCIC 2021 wireless alarms (their seconds placed at the replay
command's documented origin, 2021-01-01T00:00:00Z) and GitHub's status-page incidents together,
from the first of May 2021 (so "month" tiles hold a whole month so far) to the end of the PCIC
alarms (29 August 2021; GitHub's incidents after that are left out): everything before
``NOC_OPENS`` of 11 May 2021 is backfilled at once, then both feeds are paced at ``--speed``,
one ingest key per source, in one event-time clock (UTC).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from app import resources
from app.cli.common import SpeedType, announce_store, load_settings
from app.cli.replay import ANONYMOUS_BANK_TZ, load_anonymous_bank, quiet_http_log
from app.replay.client import ReplayError, replay_events

if TYPE_CHECKING:  # imported when the demo runs: `pulseboard --help` stays fast
    from app.config import Settings
    from app.runtime import Runtime

DEMO_FILE = resources.demo_dir() / "anonymous-bank-excerpt.tsv.gz"
DEMO_TZ = ANONYMOUS_BANK_TZ
DEMO_DASHBOARD = "contact-centre"
DEMO_OPENS = time(7, 0)  # the call centre opens at 07:00: backfill the night, pace from here
NOC_FROM = datetime(2021, 5, 1, tzinfo=UTC)  # events before this are left out (month to date)
NOC_UNTIL = datetime(2021, 8, 30, tzinfo=UTC)  # ... and from here on: the PCIC alarms end on 29 August
NOC_START = datetime(2021, 5, 11, 12, 0, tzinfo=UTC)  # backfilled up to here, then paced (a busy afternoon)
NOC_TZ = "UTC"


@click.command()
@click.option("--port", type=int, default=None, help="port (default PULSEBOARD_PORT or 8000)")
@click.option(
    "--speed",
    type=SpeedType(),
    default="60",
    show_default=True,
    help="replay speed after 07:00 of the first day (60 = an hour a minute; 'max' = all at once)",
)
@click.option(
    "--exit-after-s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="stop server and replay after this many seconds (smoke tests)",
)
@click.option(
    "--pack",
    "pack",
    type=click.Choice(["contact-centre", "noc"]),
    default="contact-centre",
    show_default=True,
    help="contact-centre: three days of real calls; noc: the NOC wall on the real PCIC 2021 alarms and "
    "GitHub status incidents",
)
@click.option(
    "--noc-data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="with --pack noc: the folder holding pcic2021-wireless-alarms.csv.gz, github-incidents.csv and "
    "github-component-status.csv (default: data/noc-alarms/ of this checkout)",
)
def demo(port: int | None, speed: float | None, exit_after_s: float | None, pack: str, noc_data: Path | None) -> None:
    """Serve the contact-centre wall and replay three real days of calls into it
    (--pack noc: the NOC wall and both real alarm data sets).

    Uses its own embedded SQLite store under <data dir>/demo/ (emptied at start),
    whatever DATABASE_URL says.  Ctrl-C stops everything.
    """
    base = load_settings(port=port)
    tz = NOC_TZ if pack == "noc" else DEMO_TZ
    settings = base.model_copy(
        update={"database_url": None, "data_dir": base.data_dir / "demo", "clock": "event", "tz": tz}
    )
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            (settings.data_dir / f"pulseboard.db{suffix}").unlink(missing_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot prepare the demo store in {settings.data_dir}: {exc}") from None
    announce_store(settings)
    quiet_http_log()
    if pack == "noc":
        try:
            folder = noc_data if noc_data is not None else resources.noc_data_dir()
        except resources.ResourceMissing as exc:
            raise click.ClickException(str(exc)) from None
        feeds = load_noc(folder)
        try:
            code = asyncio.run(_run_noc_demo(settings, feeds, speed, exit_after_s))
        except KeyboardInterrupt:
            code = 0
            click.echo("\nstopped", err=True)
        sys.exit(code)
    events = load_anonymous_bank(DEMO_FILE)
    first_day = events[0]["ts"].date()
    start = datetime.combine(first_day, DEMO_OPENS, tzinfo=events[0]["ts"].tzinfo)
    try:
        code = asyncio.run(_run_demo(settings, events, speed, start, exit_after_s))
    except KeyboardInterrupt:
        code = 0
        click.echo("\nstopped", err=True)
    sys.exit(code)


def cli_env(settings: Settings) -> str:
    """The environment that points the ``pulseboard`` CLI at the demo's store, zone and clock
    (``env -u DATABASE_URL`` first: the demo's store is its own SQLite file whatever it says)."""
    return (
        f"env -u DATABASE_URL PULSEBOARD_DATA_DIR={settings.data_dir.resolve()} "
        f"PULSEBOARD_TZ={settings.tz} PULSEBOARD_CLOCK={settings.clock}"
    )


def load_noc(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Both NOC data sets of ``folder`` as events per source (``pcic2021``, ``github-status``),
    from ``NOC_FROM`` to ``NOC_UNTIL`` (the span of the PCIC alarms), in time order.

    Raises:
        click.ClickException: a file is missing or cannot be read (the message names it).
    """
    from app.replay.github_status import RowError as GithubRowError
    from app.replay.github_status import map_paths
    from app.replay.pcic import DEFAULT_ORIGIN, map_file
    from app.replay.pcic import RowError as PcicRowError

    pcic = folder / "pcic2021-wireless-alarms.csv.gz"
    github = [folder / "github-incidents.csv", folder / "github-component-status.csv"]
    for path in (pcic, *github):
        if not path.is_file():
            raise click.ClickException(f"the NOC demo needs {path} (give the folder with --noc-data)")
    try:
        alarms, _ = map_file(pcic, DEFAULT_ORIGIN)
        incidents, _ = map_paths(github)
    except (PcicRowError, GithubRowError, OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise click.ClickException(f"cannot read the NOC data in {folder}: {exc}") from None
    out: dict[str, list[dict[str, Any]]] = {}
    for events in (alarms, incidents):
        kept = sorted((e for e in events if NOC_FROM <= e["ts"] < NOC_UNTIL), key=lambda e: e["ts"])
        if kept:
            out[kept[0]["source"]] = kept
    return out


async def _start_server(settings: Settings) -> tuple[Any, Any, asyncio.Task[None], int] | None:
    """Start the demo's server in this loop: ``(app, uvicorn server, its task, bound port)``, or
    ``None`` when it stopped before starting (the task's exception, e.g. a port taken, is raised)."""
    import uvicorn

    from app.main import create_app, uvicorn_options

    options = {**uvicorn_options(settings), "access_log": False}
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    serve_task = asyncio.create_task(server.serve(), name="demo-server")
    while not server.started:
        if serve_task.done():
            serve_task.result()  # raises what stopped it (port taken, store error)
            return None
        await asyncio.sleep(0.05)
    return app, server, serve_task, server.servers[0].sockets[0].getsockname()[1]


async def _run_noc_demo(
    settings: Settings, feeds: dict[str, list[dict[str, Any]]], speed: float | None, exit_after_s: float | None
) -> int:
    """The NOC demo: serve, print the banner, replay every feed (one ingest key each) paced from ``NOC_START``."""
    from app.metrics.calendar import to_us

    started = await _start_server(settings)
    if started is None:
        return 1
    app, server, serve_task, port = started
    base_url = f"http://127.0.0.1:{port}"
    runtime = app.state.runtime
    now = to_us(runtime.clock.now())
    keys = {source: (await runtime.keys.create("ingest", f"demo {source}", now, source=source))[0] for source in feeds}
    read, _ = await runtime.keys.create("read", "demo reader", now)
    admin, _ = await runtime.keys.create("admin", "demo admin", now)
    pairing = await runtime.pairings.preapproved("noc", "demo NOC wall", now)
    wall = f"{base_url}/pair#s={pairing.secret}"
    banner = "=" * max(40, len(wall) + 4)
    click.echo(
        f"\n{banner}\n  Pulseboard NOC demo: open the wall at (one-time link: it pairs this browser)\n\n"
        f"  {wall}\n\n  then {base_url}/wall/noc\n{banner}"
    )
    click.echo(f"  read key (API, /login, the rotation {base_url}/wall/playlist/noc-rotation): {read}")
    click.echo(f"  admin key (pair more screens at {base_url}/pair): {admin}")
    click.echo(f"  the CLI on this store: {cli_env(settings)} pulseboard ...")
    counts = ", ".join(f"{len(events)} from {source}" for source, events in feeds.items())
    click.echo(
        f"replaying {counts} (from {NOC_FROM:%d %B %Y}): backfilled up to {NOC_START:%d %B %Y %H:%M} UTC, then at "
        f"speed {'max' if speed is None else speed}; Ctrl-C stops",
        err=True,
    )
    sys.stdout.flush()
    code = 0

    async def backfill() -> None:
        """Everything before ``NOC_START`` day by day, each source's day in turn: the event clock
        never passes a day's end before every feed's events of that day are in (so each day is
        cut once, after all of them)."""
        days = sorted({e["ts"].date() for events in feeds.values() for e in events if e["ts"] < NOC_START})
        for day in days:
            for source, events in feeds.items():
                batch = [e for e in events if e["ts"] < NOC_START and e["ts"].date() == day]
                if batch:
                    await replay_events(batch, base_url, None, api_key=keys[source], max_in_flight=1)

    async def run_feed(source: str, events: list[dict[str, Any]]) -> None:
        nonlocal code
        try:
            await backfilled
            later = [e for e in events if e["ts"] >= NOC_START]
            summary = await replay_events(later, base_url, speed, NOC_START, api_key=keys[source], max_in_flight=1)
        except ReplayError as exc:
            click.echo(f"demo replay of {source} stopped: {exc}", err=True)
            code = 1
            server.should_exit = True
            return
        click.echo(
            f"replay of {source} finished: {summary.accepted} accepted, {summary.duplicates} duplicates", err=True
        )

    backfilled = asyncio.create_task(backfill(), name="demo-backfill")
    tasks = [backfilled, *(asyncio.create_task(run_feed(s, ev), name=f"demo-{s}") for s, ev in feeds.items())]
    if exit_after_s is not None:

        async def stop_later() -> None:
            await asyncio.sleep(exit_after_s)
            click.echo(f"demo: --exit-after-s {exit_after_s:g} reached, stopping", err=True)
            server.should_exit = True

        tasks.append(asyncio.create_task(stop_later(), name="demo-timer"))
    try:
        await serve_task
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return code


async def _demo_keys(runtime: Runtime, base_url: str) -> dict[str, str]:
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


async def _run_demo(
    settings: Settings, events: list[dict[str, Any]], speed: float | None, start: datetime, exit_after_s: float | None
) -> int:
    started = await _start_server(settings)
    if started is None:
        return 1
    app, server, serve_task, port = started
    base_url = f"http://127.0.0.1:{port}"
    keys = await _demo_keys(app.state.runtime, base_url)
    wall = keys["wall_link"]
    banner = "=" * max(40, len(wall) + 4)
    click.echo(
        f"\n{banner}\n  Pulseboard demo: open the wall at (one-time link: it pairs this browser)\n\n"
        f"  {wall}\n\n  then {base_url}/wall/{DEMO_DASHBOARD}\n{banner}"
    )
    click.echo(f"  read key (API, /login, /day and /scorecard pages): {keys['read']}")
    click.echo(f"  admin key (pair more screens at {base_url}/pair, cut snapshots): {keys['admin']}")
    click.echo(f"  the CLI on this store: {cli_env(settings)} pulseboard ...")
    click.echo(
        f"replaying {len(events)} events of 1-3 August 1999 (Anonymous Bank call centre): "
        f"night backfilled up to {start:%H:%M}, then at speed {'max' if speed is None else speed}; "
        f"Ctrl-C stops",
        err=True,
    )
    sys.stdout.flush()

    code = 0

    async def run_replay() -> None:
        nonlocal code
        try:
            # One post at a time: events commit in time order, so the event clock is a true
            # watermark and each day is cut once, after its last event (version 1, final).
            summary = await replay_events(
                events, base_url, speed, start, progress=True, api_key=keys["ingest"], max_in_flight=1
            )
        except ReplayError as exc:
            click.echo(f"demo replay stopped: {exc}", err=True)
            code = 1
            server.should_exit = True
            return
        click.echo(
            f"replay finished: {summary.accepted} accepted, {summary.duplicates} duplicates "
            f"in {summary.elapsed_s:.0f} s; the wall stays up at {wall} (Ctrl-C to stop)",
            err=True,
        )

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
