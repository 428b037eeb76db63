"""Small statistics over repeats: median, spread, percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    """Median and spread of repeated measurements of one quantity.

    ``spread_pct`` is the range, (max - min) / median, in percent; ``values`` keeps every repeat.
    """

    median: float
    low: float
    high: float
    spread_pct: float
    values: tuple[float, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary:
    """Median, min, max and relative spread of ``values`` (at least one)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return Summary(math.nan, math.nan, math.nan, math.nan, ())
    med = statistics.median(vals)
    spread = (max(vals) - min(vals)) / med * 100 if med else math.nan
    return Summary(med, min(vals), max(vals), spread, tuple(vals))


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile ``p`` in [0, 1] of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p * len(sorted_values)))
    return float(sorted_values[rank - 1])
