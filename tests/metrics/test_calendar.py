"""Local calendar periods: 23/25-hour days, two 01:00 hours, half-hour and 45-minute zones."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.metrics.calendar import (
    HOUR_US,
    day_period,
    from_us,
    iter_periods,
    month_period,
    parse_day,
    parse_month,
    period_containing,
    to_us,
)


def us(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


@pytest.mark.parametrize(
    "zone, day, hours",
    [
        ("America/Chicago", date(2022, 11, 6), 25),
        ("America/Los_Angeles", date(2022, 3, 13), 23),
        ("Europe/Athens", date(2022, 10, 30), 25),
        ("Asia/Kolkata", date(2022, 10, 30), 24),
        ("UTC", date(2024, 2, 29), 24),
    ],
)
def test_day_lengths(zone, day, hours):
    p = day_period(day, ZoneInfo(zone))
    assert (p.end_us - p.start_us) == hours * HOUR_US
    assert len(list(iter_periods("hour", p.start_us, p.end_us, ZoneInfo(zone)))) == hours


def test_fall_back_hours_are_labelled_by_offset():
    z = ZoneInfo("America/Chicago")
    labels = [h.start.isoformat() for h in iter_periods("hour", *_bounds(day_period(date(2022, 11, 6), z)), z)]
    assert labels[1:3] == ["2022-11-06T01:00:00-05:00", "2022-11-06T01:00:00-06:00"]


def _bounds(p):
    return p.start_us, p.end_us


@pytest.mark.parametrize(
    "zone, instant, start",
    [
        ("Asia/Kolkata", "2024-01-01T10:15:00+00:00", "2024-01-01T15:00:00+05:30"),
        ("Asia/Kathmandu", "2024-01-01T10:20:00+00:00", "2024-01-01T16:00:00+05:45"),
        ("Asia/Kathmandu", "2024-01-01T10:10:00+00:00", "2024-01-01T15:00:00+05:45"),
    ],
)
def test_local_hours_in_fractional_zones(zone, instant, start):
    p = period_containing("hour", us(instant), ZoneInfo(zone))
    assert p.start.isoformat() == start
    assert p.end_us - p.start_us == HOUR_US


def test_months_are_local():
    z = ZoneInfo("Europe/Amsterdam")
    oct_ = month_period(2020, 10, z)
    assert oct_.start.isoformat() == "2020-10-01T00:00:00+02:00"
    assert oct_.end.isoformat() == "2020-11-01T00:00:00+01:00"
    assert period_containing("month", us("2020-09-30T23:00:00+00:00"), z).label == "2020-10"
    assert month_period(2024, 12, z).end.isoformat() == "2025-01-01T00:00:00+01:00"
    assert (
        month_period(2024, 2, ZoneInfo("UTC")).end_us - month_period(2024, 2, ZoneInfo("UTC")).start_us
        == 29 * 24 * HOUR_US
    )


def test_round_trip_and_naive_refused():
    instant = datetime(2024, 5, 2, 9, 15, 20, 123456, tzinfo=UTC)
    assert from_us(to_us(instant)) == instant
    with pytest.raises(ValueError, match="naive"):
        to_us(datetime(2024, 1, 1))


def test_parse_period_labels():
    assert parse_day("1999-08-31") == date(1999, 8, 31)
    assert parse_month("1999-08") == (1999, 8)
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month("August")
