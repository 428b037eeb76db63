"""Alarm lifecycles (``app.metrics.lifecycle``) and time-weighted measures
(``app.metrics.timeweighted``): every out-of-order case with its value, order independence,
incremental = rebuild, and availability over 23- and 25-hour days and across midnight."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from app.metrics.calendar import day_period, to_us
from app.metrics.lifecycle import AlarmState, Derived, add_contributions, derive, derive_all
from app.metrics.pack import load_packs
from app.metrics.partials import Partial
from app.metrics.rollup import EventRow
from app.metrics.timeweighted import TimeWeighted, coverage

PACK = load_packs()["noc"]
LC = PACK.lifecycles["alarm"]
S = 1_000_000
T0 = to_us(datetime(2021, 6, 1, 12, 0, tzinfo=UTC))


def ev(kind: str, at_s: float, alarm: str = "a1", **dims) -> EventRow:
    return EventRow(f"alarm.{kind}", T0 + int(at_s * S), None, {"alarm": alarm, **dims})


RAISE = {"severity": "major", "device": "d1", "type": "link-down"}


def totals(events: list[EventRow]) -> dict[str, tuple[int, float]]:
    """measure -> (count, sum) over every bucket, all alarms (dim key "")."""
    partials, _, _ = derive_all(PACK, events)
    out: dict[str, tuple[int, float]] = {}
    for (mkey, dk, _b), p in partials.items():
        if dk == "":
            c, s = out.get(mkey.split("/")[1], (0, 0.0))
            out[mkey.split("/")[1]] = (c + p.count, s + p.sum)
    return out


def open_rows(events: list[EventRow], gauge: str = "open", dim_key: str = "") -> list[tuple[int, int | None]]:
    _, rows, _ = derive_all(PACK, events)
    return sorted(v for (g, dk, _i), v in rows.items() if g == f"noc/{gauge}" and dk == dim_key)


def test_in_order_lifecycle() -> None:
    events = [ev("raised", 0, **RAISE), ev("acknowledged", 60), ev("cleared", 600)]
    t = totals(events)
    assert t["raised"] == (1, 0.0)
    assert t["acknowledged"] == (1, 60.0)
    assert t["cleared"] == (1, 600.0) and t["cleared_any"] == (1, 600.0)
    assert open_rows(events) == [(T0, T0 + 600 * S)]


@pytest.mark.parametrize(
    ("case", "events", "want"),
    [
        (  # the clear arrives first: counted once the raise arrives, duration from the raise
            "clear before raise (arrival)",
            [ev("cleared", 600), ev("raised", 0, **RAISE)],
            {"raised": (1, 0.0), "cleared": (1, 600.0)},
        ),
        (  # a clear stamped before its raise: cleared at the raise, duration 0, never negative
            "clear stamped before raise",
            [ev("raised", 100, **RAISE), ev("cleared", 40)],
            {"raised": (1, 0.0), "cleared": (1, 0.0)},
        ),
        (  # a second raise of an open alarm: one alarm, from the earliest raise
            "second raise of an open alarm",
            [ev("raised", 100, **RAISE), ev("raised", 0, **RAISE), ev("cleared", 600)],
            {"raised": (1, 0.0), "cleared": (1, 600.0)},
        ),
        (  # an ack after the clear is no acknowledge: the alarm cleared unacknowledged
            "ack after clear",
            [ev("raised", 0, **RAISE), ev("cleared", 300), ev("acknowledged", 400)],
            {"raised": (1, 0.0), "cleared": (1, 300.0)},
        ),
        (  # ack twice: the earliest counts, once
            "ack twice",
            [ev("raised", 0, **RAISE), ev("acknowledged", 90), ev("acknowledged", 30), ev("cleared", 600)],
            {"raised": (1, 0.0), "acknowledged": (1, 30.0), "cleared": (1, 600.0)},
        ),
        (  # clear twice: the earliest counts, once
            "clear twice",
            [ev("raised", 0, **RAISE), ev("cleared", 900), ev("cleared", 600)],
            {"raised": (1, 0.0), "cleared": (1, 600.0)},
        ),
        (  # an ack stamped before the raise: acknowledged at the raise (0 s)
            "ack stamped before raise",
            [ev("acknowledged", -50), ev("raised", 0, **RAISE), ev("cleared", 60)],
            {"raised": (1, 0.0), "acknowledged": (1, 0.0), "cleared": (1, 60.0)},
        ),
        (  # ack, clear and update of an alarm that never raised: nothing counts (they wait)
            "no raise at all",
            [ev("acknowledged", 10), ev("updated", 20, severity="critical"), ev("cleared", 30)],
            {},
        ),
    ],
)
def test_out_of_order_cases(case: str, events: list[EventRow], want: dict[str, tuple[int, float]]) -> None:
    t = totals(events)
    for name in ("raised", "acknowledged", "cleared"):
        assert t.get(name, (0, 0.0)) == want.get(name, (0, 0.0)), (case, name)
    assert all(s >= 0 for _, s in t.values()), case  # never a negative duration


def test_updated_before_raise_changes_nothing_and_after_it_moves_severity() -> None:
    before = [ev("updated", -10, severity="critical"), ev("raised", 0, **RAISE), ev("cleared", 600)]
    assert open_rows(before, dim_key="severity=critical") == []
    assert open_rows(before, dim_key="severity=major") == [(T0, T0 + 600 * S)]
    during = [ev("raised", 0, **RAISE), ev("updated", 200, severity="minor"), ev("cleared", 600)]
    assert open_rows(during, dim_key="severity=major") == [(T0, T0 + 200 * S)]
    assert open_rows(during, dim_key="severity=minor") == [(T0 + 200 * S, T0 + 600 * S)]
    assert open_rows(during, dim_key="") == [(T0, T0 + 600 * S)]  # one alarm all along
    # minor is not service-affecting: the device is down only while the alarm was major
    assert open_rows(during, "affecting", "device=d1") == [(T0, T0 + 200 * S)]
    # the clear is counted under the severity it had when it cleared
    partials, _, _ = derive_all(PACK, during)
    assert partials[("noc/cleared", "severity=minor", T0 + 600 * S - (T0 + 600 * S) % (60 * S))].count == 1
    # an update after the clear changes nothing
    after = [*during, ev("updated", 700, severity="critical")]
    assert derive_all(PACK, after)[1] == derive_all(PACK, during)[1]
    # back and forth: two stretches of major, item keys a1 and a1#2
    flap = [ev("raised", 0, **RAISE), ev("updated", 100, severity="minor"), ev("updated", 200, severity="major")]
    _, rows, _ = derive_all(PACK, flap)
    assert rows[("noc/open", "severity=major", "a1")] == (T0, T0 + 100 * S)
    assert rows[("noc/open", "severity=major", "a1#2")] == (T0 + 200 * S, None)


def test_no_severity_is_service_affecting_and_timed_false_stays_out_of_mttr() -> None:
    events = [ev("raised", 0, device="d9"), ev("cleared", 60)]
    assert open_rows(events, "affecting", "device=d9") == [(T0, T0 + 60 * S)]
    untimed = [ev("raised", 0, alarm="u", timed=False), ev("cleared", 0, alarm="u")]
    t = totals(untimed)
    assert t["raised"] == (1, 0.0) and t["cleared_any"] == (1, 0.0) and "cleared" not in t


def test_zero_length_alarm_counts_with_duration_zero_and_is_never_open() -> None:
    events = [ev("raised", 5, device="d1"), ev("cleared", 5)]
    assert totals(events)["cleared"] == (1, 0.0)
    assert open_rows(events) == []


def test_lost_clear_after_max_open() -> None:
    late = LC.max_open_s + 10
    assert "cleared" not in totals([ev("raised", 0, **RAISE), ev("cleared", late)])


SCENARIO = [
    ev("raised", 0, **RAISE),
    ev("raised", 30, **RAISE),
    ev("acknowledged", 50),
    ev("acknowledged", 20),
    ev("updated", 100, severity="critical"),
    ev("cleared", 500),
    ev("cleared", 400),
    ev("raised", 10, alarm="b", device="d2"),
    ev("cleared", 5, alarm="b"),
]


def _incremental(events: list[EventRow]) -> tuple[dict, dict]:
    """What the write path keeps: one event at a time, subtracting the old derivation, adding the new."""
    states: dict[str, AlarmState] = {}
    partials: dict = {}
    rows: dict = {}
    for e in events:
        key = e.dims["alarm"]
        old = states.get(key)
        new = (old or AlarmState()).merge(LC, e)
        before = derive(PACK, LC, key, old) if old is not None else Derived()
        after = derive(PACK, LC, key, new)
        add_contributions(PACK, LC, before, partials, -1)
        add_contributions(PACK, LC, after, partials, 1)
        for k in before.gauge_rows:
            rows.pop(k, None)
        rows.update(after.gauge_rows)
        states[key] = new
    return partials, rows


def _plain(partials: dict) -> dict:
    out = {}
    for k, p in partials.items():
        if p.count or p.sum:
            out[k] = (p.count, round(p.sum, 6), sorted(p.sketch.bins()) if p.sketch else None)
    return out


def test_every_arrival_order_gives_the_same_rows_and_incremental_equals_rebuild() -> None:
    want_partials, want_rows, _ = derive_all(PACK, SCENARIO)
    seen = 0
    for order in itertools.islice(itertools.permutations(SCENARIO), 0, None, 1009):  # 360 of 362,880
        partials, rows = _incremental(list(order))
        assert _plain(partials) == _plain(want_partials)
        assert rows == want_rows
        seen += 1
    assert seen == 360
    t = totals(SCENARIO)
    assert t["raised"] == (2, 0.0)
    assert t["acknowledged"] == (1, 20.0)
    assert t["cleared"] == (2, 400.0)  # a1: 400 s; b: cleared at its raise, 0 s
    assert isinstance(want_partials[("noc/raised", "", T0 - T0 % (60 * S))], Partial)


# --- time-weighted: availability -------------------------------------------------------------

PARIS = ZoneInfo("Europe/Paris")


def _us(*args: int, zone=PARIS) -> int:
    return to_us(datetime(*args, tzinfo=zone))


@pytest.mark.parametrize(("day", "hours"), [((2021, 3, 28), 23), ((2021, 10, 31), 25), ((2021, 6, 1), 24)])
def test_availability_over_dst_days(day: tuple[int, int, int], hours: int) -> None:
    from datetime import date

    period = day_period(date(*day), PARIS)
    assert period.end_us - period.start_us == hours * 3600 * S
    # down from 01:00 to 04:00 local: 2 real hours on the spring day (02:00-03:00 does not exist),
    # 4 on the autumn day (02:00-03:00 happens twice), 3 otherwise
    down = [(_us(*day, 1, 0), _us(*day, 4, 0))]
    tw = coverage(down, period.start_us, period.end_us)
    real = {23: 2, 25: 4, 24: 3}[hours]
    assert tw.span_us == hours * 3600 * S and tw.covered_us == real * 3600 * S
    assert tw.available_ratio == 1 - real / hours


def test_availability_across_midnight_splits_exactly_and_overlaps_count_once() -> None:
    from datetime import date

    d1, d2 = day_period(date(2021, 6, 1), PARIS), day_period(date(2021, 6, 2), PARIS)
    items = [
        (_us(2021, 6, 1, 23, 0), _us(2021, 6, 2, 1, 0)),  # across midnight
        (_us(2021, 6, 1, 23, 30), _us(2021, 6, 2, 0, 30)),  # overlapping the first: counted once
        (_us(2021, 6, 2, 12, 0), None),  # still open
    ]
    first, second = coverage(items, d1.start_us, d1.end_us), coverage(items, d2.start_us, d2.end_us)
    assert first.covered_us == 3600 * S and first.item_us == 5400 * S
    assert second.covered_us == (3600 + 12 * 3600) * S
    both = coverage(items, d1.start_us, d2.end_us)
    assert TimeWeighted().merge(first).merge(second) == both  # additive: two days = their sum
    hours = [coverage(items, h, h + 3600 * S) for h in range(d1.start_us, d2.end_us, 3600 * S)]
    merged = TimeWeighted()
    for h in hours:
        merged.merge(h)
    assert merged == both
    assert both.mean == both.item_us / both.span_us


def test_time_weighted_edges() -> None:
    assert coverage([], 0, 0).available_ratio is None
    assert coverage([(5, 3)], 0, 10).covered_us == 0  # closed before it opened: never open
    assert coverage([(0, None)], 0, 10, max_open_us=4).covered_us == 4  # dropped at max_open
    with pytest.raises(ValueError):
        coverage([], 10, 0)
