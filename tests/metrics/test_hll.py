"""The distinct-count measure's HyperLogLog (app.metrics.hll): exact below the threshold,
merge = max (a value on two days counts once), stated error past it, and its use in formulas."""

from __future__ import annotations

import random

import pytest

from app.metrics.evaluate import evaluate
from app.metrics.hll import DENSE_P, EXACT_MAX, HyperLogLog, fold, hash64, sparse_register
from app.metrics.pack import parse_pack
from app.metrics.rollup import EventRow, rollup


def _hll(values) -> HyperLogLog:
    h = HyperLogLog()
    for v in values:
        h.add_text(str(v))
    return h


def test_exact_below_the_threshold_and_repeats_count_once() -> None:
    values = [f"c{i}" for i in range(5000)]
    h = _hll(values + values[:1000])
    assert h.estimate() == 5000
    assert _hll([]).estimate() == 0
    assert _hll(["x"] * 50).estimate() == 1


def test_merge_is_max_per_register_associative_and_idempotent() -> None:
    day1, day2 = _hll(range(0, 3000)), _hll(range(2000, 4500))  # 1000 callers on both days
    month = day1.copy().merge(day2)
    assert month.estimate() == 4500 < day1.estimate() + day2.estimate()
    assert month.copy().merge(day1).registers == month.registers
    assert day2.copy().merge(day1).registers == month.registers
    assert _hll(range(0, 4500)).registers == month.registers


def test_sparse_register_and_fold() -> None:
    h = (0xABCDEF01 << 32) | 1  # last bit set: rank 32 of the low 32 bits
    assert sparse_register(h) == (0xABCDEF01, 32)
    assert sparse_register(0xABCDEF01 << 32) == (0xABCDEF01, 33)
    index = 0b10 << 18 | 0b1  # dense index 2; the 18 folded bits are 0...01: 17 zeros then a one
    assert fold(index, 5) == (2, 18)
    assert fold(2 << 18, 5) == (2, 18 + 5)  # all 18 folded bits zero: continue into the sparse rank
    assert hash64("42") == hash64("42") != hash64("43")


@pytest.mark.parametrize(("n", "sparse_max"), [(30_000, 1 << 20), (60_000, 0), (200_000, 0)])
def test_error_past_the_threshold_is_within_2_percent(n: int, sparse_max: int) -> None:
    rng = random.Random(n)
    h = HyperLogLog()
    for _ in range(n):
        h.add_hash(rng.getrandbits(64))
    got = h.estimate(sparse_max=sparse_max)
    assert abs(got - n) / n <= 0.02, (n, got)
    if sparse_max:
        assert abs(got - n) / n <= 0.001  # linear counting over 2**32 sparse registers
    assert 1 << DENSE_P == 16384 and EXACT_MAX == 10_000


def test_distinct_measure_in_formulas() -> None:
    pack = parse_pack(
        {
            "pack": "cc",
            "dimensions": ["queue"],
            "measures": {
                "answered": {"event": "call.answered"},
                "callers": {"event": "call.answered", "distinct": "customer"},
            },
            "kpis": {
                "unique": {"formula": {"count": "callers"}},
                "calls_per_caller": {
                    "formula": {"ratio": {"numerator": {"count": "answered"}, "denominator": {"count": "callers"}}}
                },
            },
        }
    )
    minute = 60_000_000
    events = [
        EventRow("call.answered", 0, 5.0, {"queue": "A", "customer": 1}),
        EventRow("call.answered", minute, 5.0, {"queue": "B", "customer": 1}),
        EventRow("call.answered", 2 * minute, 5.0, {"queue": "A", "customer": 2}),
        EventRow("call.answered", 3 * minute, 5.0, {"queue": "A"}),  # not identified: a call, not a caller
    ]
    partials, _ = rollup(pack, events)
    merged: dict = {}
    for (mkey, dim_key, _bucket), part in partials.items():
        if dim_key == "":
            name = mkey.split("/", 1)[1]
            merged[name] = merged[name].merge(part) if name in merged else part
    assert evaluate(pack.kpis["unique"], merged).value == 2
    # not a *_count component: reconciliation does not add distinct counts of days into a month
    assert evaluate(pack.kpis["unique"], merged).components == {"callers_distinct": 2}
    assert evaluate(pack.kpis["calls_per_caller"], merged).value == 2.0
    per_queue = sum(p.distinct.estimate() for (m, d, _), p in partials.items() if m == "cc/callers" and d == "queue=A")
    assert per_queue == 2  # customer 1 and 2 in queue A (in different minutes)
