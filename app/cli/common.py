"""What every command shares: settings from the environment (and options), the line naming the
store and zone a command acts on, replay pacing and start-time options."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from app.config import Settings


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the non-``None`` ``overrides`` applied.

    Raises:
        click.ClickException: the configuration does not validate (the message names the field).
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise click.ClickException(f"invalid configuration: {exc}") from None


def store_url(settings: Settings) -> str:
    """The configured store's URL without its password or driver (an SQLite file by its
    absolute path), with its PostgreSQL schema if any."""
    from sqlalchemy.engine import URL, make_url

    full = make_url(settings.sqlalchemy_url)
    backend = full.get_backend_name()
    url = URL.create(backend, full.username, None, full.host, full.port, full.database, full.query)
    where = url.render_as_string(hide_password=False)
    if settings.db_schema and backend == "postgresql":
        where += f" schema {settings.db_schema}"
    return where


def store_line(settings: Settings) -> str:
    """``store: <url>, zone: <tz>`` (``store_url``, the business zone), plus ``, clock: event``
    in event-time mode."""
    clock = ", clock: event" if settings.clock == "event" else ""
    return f"store: {store_url(settings)}, zone: {settings.tz}{clock}"


def announce_store(settings: Settings) -> None:
    """Print ``store_line(settings)`` to stderr: every command that touches a store says which."""
    click.echo(store_line(settings), err=True)


if TYPE_CHECKING:  # recent click types ParamType by (value, input); click 8.1 cannot be subscripted at run time
    _SpeedParam = click.ParamType[float | None, str | float | None]
else:
    _SpeedParam = click.ParamType


class SpeedType(_SpeedParam):
    """``max`` or a positive number (seconds of event time per second)."""

    name = "N|max"

    def convert(
        self, value: str | float | None, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | None:
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


def parse_start(text: str | None, zone_name: str) -> datetime | None:
    """``--start``: an ISO date-time; without an offset it is local time in ``zone_name``."""
    if text is None:
        return None
    from zoneinfo import ZoneInfo

    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO date-time (e.g. 1999-08-10T07:00:00+03:00)", param_hint="--start"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=ZoneInfo(zone_name))
