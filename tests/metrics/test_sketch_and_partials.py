"""Sketch and partial merges: exact, associative, and within the stated error bound."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.metrics.partials import Partial
from app.metrics.sketch import DEFAULT_RELATIVE_ACCURACY, Sketch


def nearest_rank(values, p):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered))) - 1]


values_st = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=300
)


@settings(max_examples=200, deadline=None)
@given(values_st, st.floats(min_value=0.01, max_value=1.0))
def test_sketch_quantile_within_relative_error(values, p):
    sk = Sketch()
    for v in values:
        sk.add(v)
    exact = nearest_rank(values, p)
    got = sk.quantile(p)
    assert abs(got - exact) <= DEFAULT_RELATIVE_ACCURACY * abs(exact) + 1e-9


@settings(max_examples=100, deadline=None)
@given(values_st, values_st, values_st)
def test_merge_is_associative_and_split_independent(a, b, c):
    def sk(vals):
        s = Sketch()
        for v in vals:
            s.add(v)
        return s

    left = sk(a)
    left.merge(sk(b))
    left.merge(sk(c))
    bc = sk(b)
    bc.merge(sk(c))
    right = sk(a)
    right.merge(bc)
    assert left == right == sk(a + b + c)

    def part(vals):
        p = Partial(sketch=Sketch())
        for v in vals:
            p.add(v)
        return p

    merged = part(a).merge(part(b)).merge(part(c))
    whole = part(a + b + c)
    assert (merged.count, merged.min, merged.max, merged.sketch) == (whole.count, whole.min, whole.max, whole.sketch)
    assert math.isclose(merged.sum, whole.sum, rel_tol=1e-9, abs_tol=1e-6)


def test_sketch_round_trips_and_empty_is_none():
    s = Sketch()
    assert s.quantile(0.5) is None
    for v in (0, 0.0, -3, 5, 5, 1e-12):
        s.add(v)
    assert Sketch.from_bytes(s.to_bytes()) == s
    assert s.quantile(1.0) == pytest.approx(5, rel=0.01)
    assert s.quantile(0.1) == pytest.approx(-3, rel=0.01)  # rank 1 of 6
    assert s.quantile(0.2) == 0.0  # rank 2: a zero


def test_partial_mean_and_values_without_value():
    p = Partial()
    assert p.mean is None
    p.add(None)
    p.add(4)
    assert (p.count, p.sum, p.min, p.max, p.mean) == (2, 4, 4, 4, 2.0)
