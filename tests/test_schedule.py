"""Cut schedules: CASES C4, C5, C6 (month-end anchors, spring-forward, repeated and missing times)."""

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from app.metrics.calendar import from_us, to_us
from app.snapshots.schedule import CutSchedule, LocalCutTrigger, local_fire_us


def utc(us: int) -> str:
    return from_us(us).isoformat()


def fires(schedule: CutSchedule, zone: ZoneInfo, start: datetime, end: datetime) -> list[str]:
    out, t = [], to_us(start) - 1
    while True:
        t = schedule.next_fire_us(t, zone)
        if t >= to_us(end):
            return out
        out.append(utc(t))


def test_c4_month_end_anchor():
    z = ZoneInfo("UTC")
    sched = CutSchedule("month", time(0, 0), month_day=31)
    runs = fires(sched, z, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC))
    assert [r[:10] for r in runs] == ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]
    feb = sched.period_of_label("2024-02", z)
    assert sched.fire_us(feb) == to_us(datetime(2024, 3, 31, tzinfo=UTC))
    assert (feb.start.date(), feb.end.date()) == (date(2024, 2, 1), date(2024, 3, 1))
    assert (feb.end_us - feb.start_us) // 86_400_000_000 == 29


def test_c5_spring_forward_does_not_skip_the_next_day():
    z = ZoneInfo("America/Los_Angeles")
    sched = CutSchedule("day", time(0, 0))
    assert utc(sched.next_fire_us(to_us(datetime(2022, 3, 13, 8, 0, tzinfo=UTC)), z)) == "2022-03-14T07:00:00+00:00"
    start = to_us(datetime(2022, 3, 12, 8, 0, tzinfo=UTC))  # local midnight 03-12
    due = list(
        sched.periods_due(sched.period_containing(start, z), to_us(datetime(2022, 3, 16, 7, 0, tzinfo=UTC)), 100)
    )
    assert [p.label for p in due] == ["2022-03-12", "2022-03-13", "2022-03-14", "2022-03-15"]


def test_c6_repeated_and_missing_local_times_run_once():
    z = ZoneInfo("America/New_York")
    sched = CutSchedule("day", time(1, 30))
    runs = fires(sched, z, datetime(2024, 11, 2, 4, tzinfo=UTC), datetime(2024, 11, 5, 4, tzinfo=UTC))
    assert len(runs) == 3
    assert runs[1] == "2024-11-03T05:30:00+00:00"
    gap = CutSchedule("day", time(2, 30))
    runs = fires(gap, z, datetime(2024, 3, 10, 5, tzinfo=UTC), datetime(2024, 3, 11, 5, tzinfo=UTC))
    assert runs == ["2024-03-10T07:00:00+00:00"]


def test_fire_times_in_fractional_and_southern_zones():
    assert utc(local_fire_us(date(2024, 1, 1), time(0, 5), ZoneInfo("Asia/Kathmandu"))) == "2023-12-31T18:20:00+00:00"
    # Chile skips local midnight: the day starts (and a 00:00 cut fires) at 01:00 local
    assert (
        utc(local_fire_us(date(2022, 9, 11), time(0, 0), ZoneInfo("America/Santiago"))) == "2022-09-11T04:00:00+00:00"
    )


def test_apscheduler_trigger_uses_the_same_times():
    z = ZoneInfo("America/Los_Angeles")
    trig = LocalCutTrigger(CutSchedule("day", time(0, 0)), z)
    prev = datetime(2022, 3, 13, 8, 0, tzinfo=UTC)
    nxt = trig.get_next_fire_time(prev, prev)
    assert nxt.astimezone(UTC).isoformat() == "2022-03-14T07:00:00+00:00"
