"""Instants and local calendar periods.

Instants are integers: UTC epoch **microseconds** (``*_us``).  A period of
grain ``minute``/``hour``/``day``/``month`` is ``[start, next start)`` of the
*local* calendar of an IANA zone, so days last 23, 24 or 25 hours and a
fall-back night has two 01:00 hours (two buckets, told apart by offset).
Hours are stepped in UTC (60 real minutes each), which is what makes the
repeated hour two buckets and the skipped hour absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
Grain = Literal["minute", "hour", "day", "month"]
GRAINS: tuple[Grain, ...] = ("minute", "hour", "day", "month")
SUPPORTED_FIRST_YEAR = 1900
SUPPORTED_END_YEAR = 9000  # exclusive
"""The calendar periods, reads and cuts are computed in: far inside ``datetime``'s years 1 to 9999,
so that no period start, end or local time near them overflows in any zone (issue 10 item 11)."""


def to_us(instant: datetime) -> int:
    """Aware datetime -> UTC epoch microseconds.

    Raises:
        ValueError: if ``instant`` is naive.
    """
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("naive datetime: every instant must carry a UTC offset")
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int, zone: ZoneInfo | timezone = UTC) -> datetime:
    """UTC epoch microseconds -> aware datetime in ``zone``."""
    return (EPOCH + timedelta(microseconds=us)).astimezone(zone)


SUPPORTED_MIN_US = to_us(datetime(SUPPORTED_FIRST_YEAR, 1, 1, tzinfo=UTC))
SUPPORTED_MAX_US = to_us(datetime(SUPPORTED_END_YEAR, 1, 1, tzinfo=UTC))


def supported(us: int) -> bool:
    """Whether instant ``us`` (UTC µs) lies in the supported calendar [1900, 9000)."""
    return SUPPORTED_MIN_US <= us < SUPPORTED_MAX_US


def minute_floor_us(us: int) -> int:
    """Start of the UTC minute holding ``us`` (every zone offset in use is whole minutes)."""
    return us - us % MINUTE_US


def _local_midnight_us(day: date, zone: ZoneInfo) -> int:
    """First instant of local calendar ``day`` in ``zone`` (handles a midnight that does not exist)."""
    naive = datetime.combine(day, time(0))
    local = naive.replace(tzinfo=zone)
    # If local midnight falls in a spring-forward gap, zoneinfo maps it forward
    # with fold=0 semantics; normalise via UTC round-trip and take the later one.
    candidate = to_us(local)
    back = from_us(candidate, zone)
    if back.date() < day:  # midnight skipped: the day starts at the gap's end
        candidate = to_us(local.replace(fold=1))
    return candidate


@dataclass(frozen=True, slots=True)
class Period:
    """One local calendar period ``[start_us, end_us)`` of ``grain`` in ``zone``."""

    grain: Grain
    start_us: int
    end_us: int
    zone: ZoneInfo

    @property
    def start(self) -> datetime:
        """Local start, aware (carries the offset in force)."""
        return from_us(self.start_us, self.zone)

    @property
    def end(self) -> datetime:
        """Local end (exclusive), aware."""
        return from_us(self.end_us, self.zone)

    @property
    def label(self) -> str:
        """``YYYY-MM-DD`` for days, ``YYYY-MM`` for months, ISO start otherwise."""
        if self.grain == "day":
            return self.start.date().isoformat()
        if self.grain == "month":
            start = self.start  # zero-padded: strftime writes year 1 as "1-01" (issue 10 item 12)
            return f"{start.year:04d}-{start.month:02d}"
        return self.start.isoformat()


def day_period(day: date, zone: ZoneInfo) -> Period:
    """The local calendar day ``day`` in ``zone``."""
    return Period("day", _local_midnight_us(day, zone), _local_midnight_us(day + timedelta(days=1), zone), zone)


def month_period(year: int, month: int, zone: ZoneInfo) -> Period:
    """The local calendar month ``year-month`` in ``zone``."""
    first = date(year, month, 1)
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return Period("month", _local_midnight_us(first, zone), _local_midnight_us(nxt, zone), zone)


def period_containing(grain: Grain, us: int, zone: ZoneInfo) -> Period:
    """The period of ``grain`` that holds instant ``us``."""
    if grain == "minute":
        start = minute_floor_us(us)
        return Period("minute", start, start + MINUTE_US, zone)
    if grain == "hour":
        # Local hours start where the local minute-of-hour is 0; with offsets of
        # whole quarter hours that is a fixed UTC minute within each UTC hour.
        local = from_us(us, zone)
        start = us - (local.minute * 60 + local.second) * 1_000_000 - local.microsecond
        return Period("hour", start, start + HOUR_US, zone)
    local_day = from_us(us, zone).date()
    if grain == "day":
        return day_period(local_day, zone)
    if grain == "month":
        return month_period(local_day.year, local_day.month, zone)
    raise ValueError(f"unknown grain {grain!r}; expected one of {', '.join(GRAINS)}")


def iter_periods(grain: Grain, start_us: int, end_us: int, zone: ZoneInfo) -> Iterator[Period]:
    """Every period of ``grain`` overlapping ``[start_us, end_us)``, in order.

    The first period is the one holding ``start_us`` (it may begin earlier).
    """
    if end_us <= start_us:
        return
    period = period_containing(grain, start_us, zone)
    while period.start_us < end_us:
        yield period
        period = period_containing(grain, period.end_us, zone)


def parse_day(text: str) -> date:
    """``YYYY-MM-DD`` -> date.  Raises ValueError with the expected form."""
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"expected a date YYYY-MM-DD, got {text!r}") from exc


def parse_month(text: str) -> tuple[int, int]:
    """``YYYY-MM`` -> (year, month).  Raises ValueError with the expected form."""
    try:
        parsed = datetime.strptime(text, "%Y-%m")
    except ValueError as exc:
        raise ValueError(f"expected a month YYYY-MM, got {text!r}") from exc
    return parsed.year, parsed.month
