"""Property tests (hypothesis) of the rollup engine: any split of a stream into batches, in any
order, with duplicates dropped by id, gives the rollups of the whole stream; minutes add up to
hours, days and months of any zone; merging is associative."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from app.metrics.calendar import MINUTE_US, iter_periods, to_us
from app.metrics.pack import parse_pack
from app.metrics.partials import Partial
from app.metrics.rollup import EventRow, merge_into, rollup

PACK = parse_pack(
    {
        "pack": "prop",
        "dimensions": ["q"],
        "measures": {"all": {"event": "e", "sketch": True}, "small": {"event": "e", "where": {"value": {"le": 5}}}},
        "kpis": {"n": {"formula": {"count": "all"}}},
    },
    "prop",
)

# Around DST changes in several zones (fall back, spring forward, +05:30, +05:45 have none).
ANCHORS = [
    datetime(2022, 11, 6, 5, tzinfo=UTC),
    datetime(2022, 3, 13, 9, tzinfo=UTC),
    datetime(2022, 10, 30, 0, tzinfo=UTC),
    datetime(2024, 1, 31, 22, tzinfo=UTC),
]
ZONES = ["America/Chicago", "America/Los_Angeles", "Europe/Athens", "Asia/Kolkata", "Asia/Kathmandu", "UTC"]

event_st = st.builds(
    lambda anchor, offset_s, value, q, ident: (
        ident,
        EventRow("e", to_us(anchor) + offset_s * 1_000_000, value, {"q": q}),
    ),
    st.sampled_from(ANCHORS),
    st.integers(-3 * 86400, 3 * 86400),
    st.integers(0, 20).map(float),
    st.sampled_from(["a", "b"]),
    st.integers(0, 60),
)


def dedup(stream):
    """Keep the first event of each id (what the store does)."""
    seen, out = set(), []
    for ident, ev in stream:
        if ident not in seen:
            seen.add(ident)
            out.append(ev)
    return out


def summary(partials):
    return {k: (p.count, p.sum, p.min, p.max, p.sketch) for k, p in partials.items()}


@settings(max_examples=150, deadline=None)
@given(st.lists(event_st, max_size=120), st.lists(st.integers(1, 30), max_size=10), st.randoms(use_true_random=False))
def test_batches_in_any_order_equal_the_whole(stream, cuts, rnd):
    events = dedup(stream)
    whole, _ = rollup(PACK, events)
    shuffled = list(events)
    rnd.shuffle(shuffled)  # late and out-of-order arrival
    merged: dict = {}
    start = 0
    for size in cuts + [len(shuffled)]:
        batch, _ = rollup(PACK, shuffled[start : start + size])
        merge_into(merged, batch)
        start += size
    assert summary(merged) == summary(whole)


@settings(max_examples=100, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=120), st.sampled_from(ZONES))
def test_minutes_add_up_to_hours_days_and_months(stream, zone_name):
    zone = ZoneInfo(zone_name)
    events = dedup(stream)
    partials, _ = rollup(PACK, events)
    minutes = {b: p for (m, dk, b), p in partials.items() if m == "prop/all" and dk == ""}
    lo, hi = min(minutes), max(minutes) + MINUTE_US
    total = sum(p.count for p in minutes.values())
    for grain in ("hour", "day", "month"):
        periods = list(iter_periods(grain, lo, hi, zone))
        counts = [sum(p.count for b, p in minutes.items() if per.start_us <= b < per.end_us) for per in periods]
        assert sum(counts) == total == len(events)
        # contiguous, non-overlapping local periods
        assert all(a.end_us == b.start_us for a, b in zip(periods, periods[1:], strict=False))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(-50, 50).map(float), max_size=20), min_size=3, max_size=3))
def test_partial_merge_is_associative(groups):
    def part(vals):
        p = Partial()
        for v in vals:
            p.add(v)
        return p

    a, b, c = groups
    left = part(a).merge(part(b)).merge(part(c))
    right = part(a).merge(part(b).merge(part(c)))
    assert (left.count, left.sum, left.min, left.max) == (right.count, right.sum, right.min, right.max)
