"""Time-weighted measures over intervals (availability, time-weighted averages).  Pure.

The items of a gauge (an alarm open on a device, a call waiting in a queue) are intervals
``[opened, closed)`` (``closed`` ``None``: still open; an item open longer than the gauge's
``max_open_s`` ends there, as gauge readings do).  Over a window ``[start, end)`` a
``TimeWeighted`` holds three integers of microseconds:

- ``span_us``: the window's length (a local day is 23, 24 or 25 hours long: DST-correct when the
  window is a local calendar period, ``app.metrics.calendar``);
- ``covered_us``: the time with at least one item open: the length of the **union** of the
  intervals, so overlapping items of one device count once;
- ``item_us``: the integral of the number of open items (item-time), for time-weighted averages.

All three are additive over adjacent windows (``merge`` adds them): a day is the sum of its hours,
a month the sum of its days, exactly, because each window clips the same intervals at its own
bounds.  Availability = ``1 - covered / span`` (``available_ratio``); the time-weighted average
number of open items (calls in queue, agents busy) = ``item / span`` (``mean``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Interval = tuple[int, int | None]  # [opened_us, closed_us or None = still open)


@dataclass(slots=True)
class TimeWeighted:
    """Additive time-weighted aggregate of a gauge over a window (µs; see the module docstring)."""

    span_us: int = 0
    covered_us: int = 0
    item_us: int = 0

    def merge(self, other: TimeWeighted) -> TimeWeighted:
        """Add ``other`` (an adjacent window) into this one in place; returns self."""
        self.span_us += other.span_us
        self.covered_us += other.covered_us
        self.item_us += other.item_us
        return self

    @property
    def covered_ratio(self) -> float | None:
        """Time with at least one item open / window length; ``None`` for an empty window."""
        return self.covered_us / self.span_us if self.span_us > 0 else None

    @property
    def available_ratio(self) -> float | None:
        """``1 - covered_ratio`` (availability); ``None`` for an empty window."""
        covered = self.covered_ratio
        return None if covered is None else 1.0 - covered

    @property
    def mean(self) -> float | None:
        """Time-weighted average number of open items; ``None`` for an empty window."""
        return self.item_us / self.span_us if self.span_us > 0 else None


def clip(intervals: Iterable[Interval], start_us: int, end_us: int, max_open_us: int | None = None) -> list[Interval]:
    """``intervals`` cut to ``[start_us, end_us)`` (each also ended at ``opened + max_open_us``),
    without the empty ones, sorted by start.  Every result has a finite end."""
    out: list[Interval] = []
    for opened, closed in intervals:
        hi = end_us if closed is None else min(closed, end_us)
        if max_open_us is not None:
            hi = min(hi, opened + max_open_us)
        lo = max(opened, start_us)
        if hi > lo:
            out.append((lo, hi))
    out.sort()
    return out


def coverage(intervals: Iterable[Interval], start_us: int, end_us: int, max_open_us: int | None = None) -> TimeWeighted:
    """The ``TimeWeighted`` of ``intervals`` over ``[start_us, end_us)``.

    Raises:
        ValueError: when ``end_us < start_us``.
    """
    if end_us < start_us:
        raise ValueError(f"window ends before it starts ({end_us} < {start_us})")
    out = TimeWeighted(span_us=end_us - start_us)
    run_lo: int | None = None
    run_hi = 0
    for lo, hi in clip(intervals, start_us, end_us, max_open_us):
        assert hi is not None
        out.item_us += hi - lo
        if run_lo is None or lo > run_hi:
            if run_lo is not None:
                out.covered_us += run_hi - run_lo
            run_lo, run_hi = lo, hi
        else:
            run_hi = max(run_hi, hi)
    if run_lo is not None:
        out.covered_us += run_hi - run_lo
    return out


def per_window(
    intervals: Sequence[Interval], windows: Sequence[tuple[int, int]], max_open_us: int | None = None
) -> list[TimeWeighted]:
    """``coverage`` of the same intervals over each window, in order."""
    return [coverage(intervals, lo, hi, max_open_us) for lo, hi in windows]
