"""Additive partial aggregates.

A ``Partial`` summarises the values of one measure in one bucket: ``count``,
``sum``, ``min``, ``max`` and optionally a quantile ``Sketch``.  Merging is
addition (and min/max), so any window is the merge of its 1-minute buckets and
N writers can add partials for the same bucket in any order.  Averages are
never stored: a mean is ``sum / count`` of the merged partial.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.metrics.hll import HyperLogLog
from app.metrics.sketch import Sketch


@dataclass(slots=True)
class Partial:
    """Additive aggregate of one measure over one bucket or window.

    Attributes:
        count: number of matching events.
        sum: sum of their values (events without a value add 0).
        min, max: extreme values, ``None`` when no event had a value.
        sketch: quantile sketch of the values when the measure keeps one.
        distinct: HyperLogLog registers of a distinct-count measure's dimension values
            (``app.metrics.hll``); ``count:`` formulas read its estimate instead of ``count``.
    """

    count: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    sketch: Sketch | None = field(default=None)
    distinct: HyperLogLog | None = field(default=None)

    def add(self, value: float | None) -> None:
        """Count one event with ``value`` (may be ``None``)."""
        self.count += 1
        if value is None:
            return
        self.sum += value
        self.min = value if self.min is None or value < self.min else self.min
        self.max = value if self.max is None or value > self.max else self.max
        if self.sketch is not None:
            self.sketch.add(value)

    def merge(self, other: Partial) -> Partial:
        """Merge ``other`` into this partial in place and return self."""
        self.count += other.count
        self.sum += other.sum
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max
        if other.sketch is not None:
            if self.sketch is None:
                self.sketch = other.sketch.copy()
            else:
                self.sketch.merge(other.sketch)
        if other.distinct is not None:
            if self.distinct is None:
                self.distinct = other.distinct.copy()
            else:
                self.distinct.merge(other.distinct)
        return self

    @property
    def mean(self) -> float | None:
        """``sum / count``, or ``None`` for an empty partial."""
        return self.sum / self.count if self.count else None
