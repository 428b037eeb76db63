"""KPI values, components and RAG status from merged partials (read side).

Ratios divide merged totals (never average ratios); means divide merged sums
by merged counts (never average averages); percentiles read a merged sketch by
the nearest-rank rule.  An undefined value (no calls: no service level) is
``None``, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from app.metrics.pack import Formula, Kpi
from app.metrics.partials import Partial
from app.metrics.timeweighted import TimeWeighted

_EMPTY = Partial()


@dataclass(frozen=True, slots=True)
class GaugeReading:
    """State of a gauge at an instant: open items and the oldest open time (UTC µs)."""

    open_count: int
    oldest_open_us: int | None


@dataclass(frozen=True, slots=True)
class WindowReading:
    """What time-weighted, rate and peak KPIs read besides merged partials, over one window:
    its measured length (µs: up to "now" for a window still running), the gauge's
    ``TimeWeighted`` and the measures' highest count in one minute."""

    span_us: int
    time_weighted: Mapping[str, TimeWeighted]
    peaks: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class KpiValue:
    """A KPI's value (``None`` when undefined) and the components it came from."""

    value: float | None
    components: dict[str, float | int | None]


def _total(formula: Formula, partials: Mapping[str, Partial], components: dict[str, float | int | None]) -> float:
    total: float = 0
    for name in formula.measures:
        part = partials.get(name, _EMPTY)
        if formula.kind == "count" and part.distinct is not None:  # a distinct count: not additive across periods
            counted = part.distinct.estimate()
            components[f"{name}_distinct"] = counted
            total += counted
        elif formula.kind == "count":
            components[f"{name}_count"] = part.count
            total += part.count
        else:
            components[f"{name}_sum"] = part.sum
            total += part.sum
    return total


def evaluate(
    kpi: Kpi,
    partials: Mapping[str, Partial],
    gauge: GaugeReading | None = None,
    now_us: int | None = None,
    window: WindowReading | None = None,
) -> KpiValue:
    """``_evaluate`` with every non-finite number (NaN, ±inf: partials written by an older
    version that let huge values overflow, issue 10 item 1) replaced by ``None``: a KPI is a
    finite number or undefined, never NaN, so no reader, writer or RAG status sees one.
    Same arguments, result and errors as ``_evaluate``."""
    result = _evaluate(kpi, partials, gauge, now_us, window)
    value = result.value
    if value is not None and not math.isfinite(value):
        value = None
    comps = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.components.items()}
    return KpiValue(value, comps)


def _evaluate(
    kpi: Kpi,
    partials: Mapping[str, Partial],
    gauge: GaugeReading | None = None,
    now_us: int | None = None,
    window: WindowReading | None = None,
) -> KpiValue:
    """Compute ``kpi`` from ``partials`` (measure name -> merged Partial).

    Args:
        kpi: the KPI definition.
        partials: merged partial per measure name of the KPI's pack (missing = empty).
        gauge: the gauge reading, for gauge KPIs.
        now_us: the instant gauges are read at (UTC µs), for ``oldest_age_s``.
        window: the window reading, for time-weighted, rate and peak KPIs.

    Formulas read from ``window``: ``time_weighted`` (availability = 1 - time with at least one
    open item / window length; ``mean``: time-weighted average of open items), ``rate``
    (count / (window length / ``per_s``)) and ``peak`` (highest count in one minute).

    Returns:
        ``KpiValue``; ``value`` is ``None`` where the formula is undefined (an empty window).

    Raises:
        ValueError: for a gauge KPI evaluated without ``gauge``/``now_us``, or a window KPI
            without ``window``.
    """
    f = kpi.formula
    comps: dict[str, float | int | None] = {}
    if f.kind in ("time_weighted", "rate", "peak"):
        if window is None:
            raise ValueError(f"KPI {kpi.name!r} ({f.kind}) needs a window reading")
        return _window_value(kpi, partials, window, comps)
    if f.kind in ("count", "sum"):
        return KpiValue(_total(f, partials, comps), comps)
    if f.kind == "ratio":
        assert f.numerator is not None and f.denominator is not None
        num = _total(f.numerator, partials, comps)
        den = _total(f.denominator, partials, comps)
        comps["numerator"], comps["denominator"] = num, den
        return KpiValue(num / den if den else None, comps)
    part = partials.get(f.measures[0], _EMPTY) if f.measures else _EMPTY
    name = f.measures[0] if f.measures else ""
    if f.kind == "mean":
        comps[f"{name}_sum"], comps[f"{name}_count"] = part.sum, part.count
        return KpiValue(part.mean, comps)
    if f.kind in ("min", "max"):
        comps[f"{name}_count"] = part.count
        return KpiValue(part.min if f.kind == "min" else part.max, comps)
    if f.kind == "percentile":
        comps[f"{name}_count"] = part.count
        value = part.sketch.quantile(f.p) if part.sketch is not None and f.p is not None else None
        return KpiValue(value, comps)
    if f.kind == "gauge":
        if gauge is None or now_us is None:
            raise ValueError(f"gauge KPI {kpi.name!r} needs a gauge reading and an instant")
        comps["open_items"] = gauge.open_count
        if f.aggregate == "open_count":
            return KpiValue(gauge.open_count, comps)
        if gauge.oldest_open_us is None:
            return KpiValue(0.0 if gauge.open_count == 0 else None, comps)
        return KpiValue(max(0.0, (now_us - gauge.oldest_open_us) / 1e6), comps)
    raise ValueError(f"unknown formula kind {f.kind!r}")


def _window_value(
    kpi: Kpi, partials: Mapping[str, Partial], window: WindowReading, comps: dict[str, float | int | None]
) -> KpiValue:
    f = kpi.formula
    comps["span_s_sum"] = window.span_us / 1e6
    if f.kind == "time_weighted":
        assert f.gauge is not None
        tw = window.time_weighted.get(f.gauge, TimeWeighted(span_us=window.span_us))
        comps["covered_s_sum"] = tw.covered_us / 1e6
        comps["item_s_sum"] = tw.item_us / 1e6
        value = {"available_ratio": tw.available_ratio, "covered_ratio": tw.covered_ratio, "mean": tw.mean}
        return KpiValue(value[f.aggregate or "available_ratio"], comps)
    if f.kind == "rate":
        total = _total(Formula("count", measures=f.measures), partials, comps)
        per_s = f.per_s or 60.0
        return KpiValue(total / (window.span_us / 1e6 / per_s) if window.span_us > 0 else None, comps)
    peak = window.peaks.get(f.measures[0], 0)
    comps["peak_per_minute"] = peak
    return KpiValue(peak if window.span_us > 0 else None, comps)


def rag_status(kpi: Kpi, value: float | None, target: float | None = None) -> str | None:
    """Red/amber/green of ``value`` against ``target`` (default: the KPI's).

    Higher-is-better: green when ``value >= target``, amber when
    ``value >= target - amber_band``, else red.  Lower-is-better mirrors it.
    ``None`` when there is no value or no target.
    """
    target = kpi.target if target is None else target
    if value is None or target is None:
        return None
    if kpi.direction == "higher":
        if value >= target:
            return "green"
        return "amber" if value >= target - kpi.amber_band else "red"
    if value <= target:
        return "green"
    return "amber" if value <= target + kpi.amber_band else "red"
