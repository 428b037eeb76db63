"""``pulseboard replay anonymous-bank``, ``itsm-incident-log``, ``pcic-alarms`` and
``github-incidents`` (CONTRACT §1)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from app.cli.common import SpeedType, parse_start
from app.replay.client import DEFAULT_URL, ReplayError, ReplaySummary, replay_events

ANONYMOUS_BANK_TZ = "Asia/Jerusalem"


def load_anonymous_bank(path: Path) -> list[dict[str, Any]]:
    from app.replay.anonymous_bank import RowError, load_events

    try:
        return load_events(path)
    except RowError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    except (OSError, EOFError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None


def quiet_http_log() -> None:
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
@click.option(
    "--speed",
    type=SpeedType(),
    default="max",
    show_default=True,
    help="'max' = as fast as the server accepts; N = N seconds of call time per second (60: an hour a minute)",
)
@click.option(
    "--start",
    "start_text",
    default=None,
    metavar="ISO",
    help="replay-clock start: earlier events are posted at once, later ones paced by --speed "
    "(no offset = Asia/Jerusalem local time)",
)
@click.option(
    "--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True, help="most events per POST"
)
@click.option(
    "--api-key",
    envvar="PULSEBOARD_API_KEY",
    default=None,
    help="sent as 'Authorization: Bearer KEY' (env PULSEBOARD_API_KEY)",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar on stderr")
def anonymous_bank(
    file: Path,
    url: str,
    speed: float | None,
    start_text: str | None,
    batch_size: int,
    api_key: str | None,
    progress: bool,
) -> None:
    """Post the Anonymous Bank call log FILE (.tsv or .tsv.gz) as events (CONTRACT §5)."""
    quiet_http_log()
    events = load_anonymous_bank(file)
    if not events:
        raise click.ClickException(f"{file}: no events (empty log, or only PHANTOM rows)")
    _post_and_summarise(
        file, events, url, speed, parse_start(start_text, ANONYMOUS_BANK_TZ), batch_size, progress, api_key
    )


def _post_and_summarise(
    file: Path,
    events: list[dict[str, Any]],
    url: str,
    speed: float | None,
    start: datetime | None,
    batch_size: int,
    progress: bool,
    api_key: str | None,
) -> None:
    """Post ``events`` through the API and print the summary (shared by every log's command)."""
    click.echo(
        f"{len(events)} events from {file.name}, {events[0]['ts'].isoformat()} .. "
        f"{events[-1]['ts'].isoformat()}, to {url} at speed {'max' if speed is None else speed}",
        err=True,
    )
    try:
        summary = asyncio.run(replay_events(events, url, speed, start, batch_size, progress, api_key=api_key))
    except ReplayError as exc:
        raise click.ClickException(f"replay stopped: {exc}") from None
    except KeyboardInterrupt:
        raise click.ClickException("replay interrupted") from None
    _print_summary(summary)


def _load_itsm(path: Path) -> list[dict[str, Any]]:
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
@click.option(
    "--speed",
    type=SpeedType(),
    default="max",
    show_default=True,
    help="'max' = as fast as the server accepts; N = N seconds of incident time per second (86400: a day a second)",
)
@click.option(
    "--start",
    "start_text",
    default=None,
    metavar="ISO",
    help="replay-clock start: earlier events are posted at once, later ones paced by --speed "
    "(no offset = UTC, the zone the log's times are taken in)",
)
@click.option(
    "--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True, help="most events per POST"
)
@click.option(
    "--api-key",
    envvar="PULSEBOARD_API_KEY",
    default=None,
    help="sent as 'Authorization: Bearer KEY' (env PULSEBOARD_API_KEY)",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar on stderr")
def itsm_incident_log(
    file: Path,
    url: str,
    speed: float | None,
    start_text: str | None,
    batch_size: int,
    api_key: str | None,
    progress: bool,
) -> None:
    """Post the ServiceNow incident event log FILE (.csv or .csv.gz) as incident events.

    One incident.opened / incident.resolved / incident.closed per incident, from its
    last row; times taken as UTC (mapping: app/replay/itsm.py).
    """
    quiet_http_log()
    events = _load_itsm(file)
    if not events:
        raise click.ClickException(f"{file}: no events (empty log)")
    _post_and_summarise(file, events, url, speed, parse_start(start_text, "UTC"), batch_size, progress, api_key)


_F = TypeVar("_F", bound=Callable[..., Any])


def _common_options(unit_help: str, zone_help: str) -> Callable[[_F], _F]:
    """The options every replay takes (pacing, batches, key, progress bar)."""

    def wrap(command: _F) -> _F:
        for option in reversed(
            [
                click.option("--url", default=DEFAULT_URL, show_default=True, help="base URL of the Pulseboard server"),
                click.option(
                    "--speed",
                    type=SpeedType(),
                    default="max",
                    show_default=True,
                    help=f"'max' = as fast as the server accepts; N = N seconds of {unit_help} per second",
                ),
                click.option(
                    "--start",
                    "start_text",
                    default=None,
                    metavar="ISO",
                    help="replay-clock start: earlier events are posted at once, later ones paced by --speed "
                    f"({zone_help})",
                ),
                click.option(
                    "--batch-size",
                    type=click.IntRange(1, 10_000),
                    default=1000,
                    show_default=True,
                    help="most events per POST",
                ),
                click.option(
                    "--api-key",
                    envvar="PULSEBOARD_API_KEY",
                    default=None,
                    help="sent as 'Authorization: Bearer KEY' (env PULSEBOARD_API_KEY)",
                ),
                click.option(
                    "--progress/--no-progress", default=True, show_default=True, help="progress bar on stderr"
                ),
            ]
        ):
            command = option(command)
        return command

    return wrap


@replay.command("pcic-alarms")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--origin",
    "origin_text",
    default="2021-01-01T00:00:00Z",
    show_default=True,
    metavar="ISO",
    help="the instant the file's second 0 is placed at (the data's own origin is unpublished; no offset = UTC)",
)
@_common_options("alarm time", "no offset = UTC")
def pcic_alarms(
    file: Path,
    origin_text: str,
    url: str,
    speed: float | None,
    start_text: str | None,
    batch_size: int,
    api_key: str | None,
    progress: bool,
) -> None:
    """Post the PCIC 2021 wireless alarm file FILE (.csv or .csv.gz) as alarm events.

    One alarm.raised and one alarm.cleared per row, source pcic2021, times = --origin + the
    file's seconds (mapping: app/replay/pcic.py).
    """
    from app.replay.pcic import RowError, map_file

    quiet_http_log()
    origin = parse_start(origin_text, "UTC")
    assert origin is not None
    try:
        events, stats = map_file(file, origin)
    except RowError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    for line in stats.lines(origin):
        click.echo(line, err=True)
    if not events:
        raise click.ClickException(f"{file}: no alarms")
    _post_and_summarise(file, events, url, speed, parse_start(start_text, "UTC"), batch_size, progress, api_key)


@replay.command("github-incidents")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@_common_options("incident time", "no offset = UTC")
def github_incidents(
    paths: tuple[Path, ...],
    url: str,
    speed: float | None,
    start_text: str | None,
    batch_size: int,
    api_key: str | None,
    progress: bool,
) -> None:
    """Post GitHub's status-page incidents as alarm events: PATHS is the folder holding
    github-incidents.csv and github-component-status.csv, or the two files.

    Incident alarms (severity from impact; MTTA from a PROXY, the first update after the opening
    post) and per-component status alarms (availability per service); source github-status
    (mapping: app/replay/github_status.py).
    """
    from app.replay.github_status import RowError, map_paths

    quiet_http_log()
    try:
        events, stats = map_paths(paths)
    except RowError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise click.ClickException(f"cannot read {', '.join(map(str, paths))}: {exc}") from None
    for line in stats.lines():
        click.echo(line, err=True)
    if not events:
        raise click.ClickException("no incidents")
    _post_and_summarise(paths[0], events, url, speed, parse_start(start_text, "UTC"), batch_size, progress, api_key)
