"""When scheduled cuts fire, and which period each one covers.

A daily cut fires at local ``HH:MM`` on day D and covers day D-1; a monthly cut
fires at local ``HH:MM`` on day ``month_day`` of month M (clamped to the
month's length, so an anchor of 31 runs on 01-31, 02-29, 03-31, 04-30) and
covers month M-1.  A cut always covers the period before its *scheduled* fire
time, never "now", so a cut run late (catch-up) has the values of its period.

Local times that happen twice (fall back) fire once, at the first; local times
that do not exist (spring forward) fire at the first instant after the gap.
APScheduler 3.11's ``CronTrigger`` gets both wrong, and skips the day after a
spring-forward midnight (apscheduler#606, #529, #120; measured on 2026-11-29),
so fire times are computed here and handed to APScheduler through
``LocalCutTrigger``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from app.metrics.calendar import MINUTE_US, Period, day_period, from_us, month_period, period_containing, to_us

SnapshotGrain = Literal["day", "month"]


def local_fire_us(day: date, at: time, zone: ZoneInfo) -> int:
    """UTC µs of local ``day`` ``at`` in ``zone``: the first of a repeated time, the end of a gap."""
    naive = datetime.combine(day, at)
    first = to_us(naive.replace(tzinfo=zone, fold=0))
    if from_us(first, zone).replace(tzinfo=None) == naive:
        return first
    # ``at`` falls in a gap: find the transition, the first instant after the gap.
    lo = to_us(naive.replace(tzinfo=zone, fold=1))
    hi = first
    if lo > hi:
        lo, hi = hi, lo
    t = lo - lo % MINUTE_US
    while t < hi and from_us(t, zone).replace(tzinfo=None) < naive:
        t += MINUTE_US
    return t


@dataclass(frozen=True, slots=True)
class CutSchedule:
    """A cut schedule: grain, local time of day, and (monthly) the anchor day of the month."""

    grain: SnapshotGrain
    at: time
    month_day: int = 1

    def fire_us(self, period: Period) -> int:
        """When the cut of ``period`` is scheduled (UTC µs)."""
        zone = period.zone
        local_start = period.start.date()
        if self.grain == "day":
            return local_fire_us(local_start + timedelta(days=1), self.at, zone)
        year, month = (local_start.year + (local_start.month == 12), local_start.month % 12 + 1)
        day = min(self.month_day, calendar.monthrange(year, month)[1])
        return local_fire_us(date(year, month, day), self.at, zone)

    def period_of_label(self, label: str, zone: ZoneInfo) -> Period:
        """The period named ``label`` (``YYYY-MM-DD`` or ``YYYY-MM``)."""
        if self.grain == "day":
            return day_period(date.fromisoformat(label), zone)
        year, month = (int(x) for x in label.split("-"))
        return month_period(year, month, zone)

    def period_containing(self, us: int, zone: ZoneInfo) -> Period:
        """The period of this grain holding instant ``us``."""
        return period_containing(self.grain, us, zone)

    def periods_due(self, first: Period, now_us: int, limit: int) -> Iterator[Period]:
        """Periods from ``first`` on whose cut is scheduled at or before ``now_us`` (at most ``limit``)."""
        period = first
        for _ in range(limit):
            if self.fire_us(period) > now_us:
                return
            yield period
            period = self.period_containing(period.end_us, period.zone)

    def next_fire_us(self, after_us: int, zone: ZoneInfo) -> int:
        """The first scheduled fire strictly after ``after_us``."""
        period = self.period_containing(after_us, zone)
        # The cut firing next covers the period before the one holding "now", or this one.
        previous = self.period_containing(period.start_us - 1, zone)
        for candidate in (previous, period, self.period_containing(period.end_us, zone)):
            fire = self.fire_us(candidate)
            if fire > after_us:
                return fire
        return self.fire_us(self.period_containing(period.end_us, zone))


class LocalCutTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 is untyped: its BaseTrigger is Any
    """APScheduler trigger firing at a ``CutSchedule``'s (DST-correct) times."""

    def __init__(self, schedule: CutSchedule, zone: ZoneInfo) -> None:
        self.schedule = schedule
        self.zone = zone

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        after = to_us(previous_fire_time) if previous_fire_time is not None else to_us(now) - 1
        return from_us(self.schedule.next_fire_us(max(after, to_us(now) - 1), self.zone), self.zone)

    def __str__(self) -> str:
        return f"cut[{self.schedule.grain} at {self.schedule.at.isoformat('minutes')} {self.zone}]"


def parse_hhmm(text: str) -> time:
    """``HH:MM`` -> time.  Raises ValueError naming the expected form."""
    try:
        return time.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"expected HH:MM, got {text!r}") from exc
