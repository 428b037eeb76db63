"""The one injectable clock.  Every "now" in Pulseboard comes from a ``Clock``.

``SystemClock`` reads real time; ``ManualClock`` is the fake used by tests;
``EventClock`` follows the newest event time seen (event-time processing, as in
stream processors' watermarks), so a replay of 1999 data has live windows.
All return timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    """Event-time clock: ``now()`` is the newest event timestamp observed (the watermark).

    Before any event it falls back to the system clock (live windows need an end);
    ``watermark()`` tells the two apart, for jobs that must not run on wall time in
    event-time mode (scheduled cuts).  ``observe`` never moves it backwards, and calls
    every listener added with ``on_advance`` (in the caller's thread: the event loop)
    with the new watermark when it moves.
    """

    def __init__(self) -> None:
        self._watermark_us: int | None = None
        self._listeners: list[Callable[[int], None]] = []

    def observe(self, ts_us: int) -> None:
        """Advance the watermark to ``ts_us`` (UTC epoch microseconds) if newer."""
        if self._watermark_us is None or ts_us > self._watermark_us:
            self._watermark_us = ts_us
            for listener in self._listeners:
                listener(ts_us)

    def on_advance(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(watermark_us)`` whenever ``observe`` moves the watermark (must not block)."""
        self._listeners.append(listener)

    @property
    def watermark_us(self) -> int | None:
        """The newest event time observed (UTC epoch microseconds), or ``None`` before any event."""
        return self._watermark_us

    def watermark(self) -> datetime | None:
        """The newest event time observed (aware, UTC, exact to the microsecond), or ``None``."""
        if self._watermark_us is None:
            return None
        return _EPOCH + timedelta(microseconds=self._watermark_us)

    def now(self) -> datetime:
        return self.watermark() or datetime.now(UTC)
