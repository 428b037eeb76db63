"""The one injectable clock.  Every "now" in Pulseboard comes from a ``Clock``.

``SystemClock`` reads real time; ``ManualClock`` is the fake used by tests;
``EventClock`` follows the newest event time seen (event-time processing, as in
stream processors' watermarks), so a replay of 1999 data has live windows.
All return timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of the current instant."""

    def now(self) -> datetime:
        """Return the current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    """Real wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests).

    Args:
        start: initial instant; must be timezone-aware.

    Raises:
        ValueError: if ``start`` is naive.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start instant")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        """Jump to ``instant`` (aware)."""
        if instant.tzinfo is None:
            raise ValueError("ManualClock.set needs a timezone-aware instant")
        self._now = instant.astimezone(UTC)

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (may be fractional)."""
        self._now += timedelta(seconds=seconds)


class EventClock:
    """Event-time clock: ``now()`` is the newest event timestamp observed.

    Before any event it falls back to the system clock.  ``observe`` never moves
    it backwards.
    """

    def __init__(self) -> None:
        self._watermark_us: int | None = None

    def observe(self, ts_us: int) -> None:
        """Advance the watermark to ``ts_us`` (UTC epoch microseconds) if newer."""
        if self._watermark_us is None or ts_us > self._watermark_us:
            self._watermark_us = ts_us

    def now(self) -> datetime:
        if self._watermark_us is None:
            return datetime.now(UTC)
        return datetime.fromtimestamp(self._watermark_us / 1e6, tz=UTC)
