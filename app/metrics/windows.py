"""Sliding and calendar windows that tiles read, ending at an instant ``now``.

- ``15m`` / ``60m``: sliding, the last 15 / 60 one-minute buckets **including
  the open minute** (the one holding ``now``).
- ``today`` / ``month``: the local calendar day / month holding ``now`` in the zone.
- ``now``: an instant (gauges); the window is empty and the gauge is read at ``now``.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from app.metrics.calendar import MINUTE_US, minute_floor_us, period_containing

SLIDING_MINUTES = {"15m": 15, "60m": 60}


def window_bounds(window: str, now_us: int, zone: ZoneInfo) -> tuple[int, int]:
    """``[start_us, end_us)`` of ``window`` at ``now_us`` in ``zone``.

    Raises:
        ValueError: for an unknown window name.
    """
    if window in SLIDING_MINUTES:
        end = minute_floor_us(now_us) + MINUTE_US
        return end - SLIDING_MINUTES[window] * MINUTE_US, end
    if window == "today":
        p = period_containing("day", now_us, zone)
        return p.start_us, p.end_us
    if window == "month":
        p = period_containing("month", now_us, zone)
        return p.start_us, p.end_us
    if window == "now":
        return now_us, now_us
    raise ValueError(f"unknown window {window!r}; expected 15m, 60m, today, month or now")
