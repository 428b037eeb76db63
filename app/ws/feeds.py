"""Feed silence: when events from a source stop arriving although the socket is fine.

A dashboard declares the feeds it expects (``feeds:`` in its pack, ``app.metrics.pack.Feed``):
a ``source`` (or any source) and ``every_s``, the most seconds of wall time between two
arrivals.  ``FeedTracker`` remembers, per source, when events of it last arrived (wall time:
silence is about the feed, not about event timestamps) and what the view clock said then (the
time a screen shows: wall time, or event time in event-time mode).  ``feed_states`` gives each
tile of a dashboard its feed state; a tile whose feed is silent carries (CONTRACT §4, ``feed``)::

    {"source": "pcic2021" | null, "every_s": 300.0, "since": ISO | null, "seen": bool}

``since`` is the view clock at the last arrival in the dashboard's zone (``seen`` false: nothing
arrived since the server started, ``since`` is then the start).  A tile whose feeds are all
fine carries ``"feed": null``; tiles of dashboards without feeds carry no ``feed`` key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from app.metrics.calendar import from_us
from app.metrics.pack import Dashboard

ANY_SOURCE = "*"


@dataclass(slots=True)
class Arrival:
    """The last arrival of a source: ``wall_us`` (wall clock, epoch µs) and ``view_us`` (the view
    clock then); ``seen`` false for the baseline set at start."""

    wall_us: int
    view_us: int
    seen: bool = True


class FeedTracker:
    """Last arrival per event source, for feed silence.

    Args:
        started_wall_us: wall clock at start (epoch µs): the baseline of a source never seen.
        started_view_us: the view clock at start.
    """

    def __init__(self, started_wall_us: int, started_view_us: int) -> None:
        self._start = Arrival(started_wall_us, started_view_us, seen=False)
        self._last: dict[str, Arrival] = {}

    def arrived(self, sources: set[str], wall_us: int, view_us: int) -> None:
        """Events of ``sources`` arrived (were accepted or recognised as duplicates) at ``wall_us``."""
        if not sources:
            return
        got = Arrival(wall_us, view_us)
        for source in sources:
            self._last[source] = got
        self._last[ANY_SOURCE] = got

    def last(self, source: str | None) -> Arrival:
        """The last arrival of ``source`` (``None``: any source), or the start baseline."""
        return self._last.get(ANY_SOURCE if source is None else source, self._start)


def feed_states(
    dashboard: Dashboard, tracker: FeedTracker | None, wall_now_us: int, zone: ZoneInfo
) -> dict[str, dict[str, Any] | None]:
    """Per tile id of ``dashboard``, the silent feed it shows (see the module docstring) or ``None``;
    empty when the dashboard declares no feeds (or there is no tracker).

    A tile fed by several silent feeds shows the one silent the longest.
    """
    if not dashboard.feeds or tracker is None:
        return {}
    out: dict[str, dict[str, Any] | None] = {t.id: None for t in dashboard.tiles}
    worst: dict[str, int] = {}
    for feed in dashboard.feeds:
        last = tracker.last(feed.source)
        if wall_now_us - last.wall_us <= feed.every_s * 1_000_000:
            continue
        state = {
            "source": feed.source,
            "every_s": feed.every_s,
            "since": from_us(last.view_us, zone).isoformat(),
            "seen": last.seen,
        }
        for tid in feed.tiles if feed.tiles is not None else out.keys():
            if tid in out and (tid not in worst or last.wall_us < worst[tid]):
                out[tid] = state
                worst[tid] = last.wall_us
    return out
