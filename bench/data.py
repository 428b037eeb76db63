"""Realistic contact-centre events: the real Anonymous Bank log of August 1999.

``load_events`` (``app.replay.anonymous_bank``) maps every call of the month to
its events (~96k).  Figures that need more, or fresh keys for a repeat, use
copies whose ``id`` carries a suffix (``#<tag>``): same types, times, values and
dimensions, distinct dedup keys, so every repeat stores new rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from bench.paths import AUGUST

_encoder = msgspec.json.Encoder()


@functools.cache
def august_events() -> tuple[dict[str, Any], ...]:
    """Every event of the August 1999 log, time-ordered, with ``ts`` as aware datetimes."""
    from app.replay.anonymous_bank import load_events

    if not AUGUST.exists():
        raise FileNotFoundError(f"the real call log is missing: {AUGUST}")
    return tuple(load_events(AUGUST))


@functools.cache
def august_wire() -> tuple[dict[str, Any], ...]:
    """The August events in wire form (``ts`` RFC 3339 with offset)."""
    from app.replay.anonymous_bank import to_wire

    return tuple(to_wire(ev) for ev in august_events())


def tagged(events: Sequence[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """Copies of wire ``events`` whose ids end with ``#tag`` (new dedup keys, same content)."""
    return [{**ev, "id": f"{ev['id']}#{tag}"} for ev in events]


def batches(events: Sequence[dict[str, Any]], size: int) -> list[bytes]:
    """``events`` as JSON-array request bodies of ``size`` events each (last one may be short)."""
    return [_encoder.encode(list(events[i : i + size])) for i in range(0, len(events), size)]


def singles(events: Sequence[dict[str, Any]]) -> list[bytes]:
    """One JSON-object request body per event."""
    return [_encoder.encode(ev) for ev in events]


def moved_to_day(
    events: Sequence[dict[str, Any]], day_start: datetime, copies: int, tag: str
) -> Iterator[dict[str, Any]]:
    """Every event of ``events`` (aware ``ts``) moved onto one local day, ``copies`` times.

    The time of day is kept (the day's real shape: busy mornings, quiet
    nights); copy ``k`` gets ids ``<id>#<tag>k``.  Yields wire-form events.
    """
    zone = day_start.tzinfo
    for k in range(copies):
        for ev in events:
            local = ev["ts"].astimezone(zone)
            ts = day_start + timedelta(hours=local.hour, minutes=local.minute, seconds=local.second)
            yield {**ev, "id": f"{ev['id']}#{tag}{k}", "ts": ts.isoformat()}


def shifted_batches(run_index: int, batch_events: int, tag: str) -> tuple[list[bytes], list[int], list[int]]:
    """The August events moved ``31 * run_index`` days later, with ids ``#<tag>``, as batches.

    Each run of a live-tile figure gets its own stretch of event time, so the
    server's event-time clock always moves forward and tiles keep changing.

    Returns:
        ``(bodies, events per body, newest event time of each body in UTC µs)``.
    """
    from app.metrics.calendar import to_us

    shift = timedelta(days=31 * run_index)
    events = august_events()
    bodies, counts, newest = [], [], []
    for i in range(0, len(events), batch_events):
        chunk = events[i : i + batch_events]
        moved = [(ev["ts"] + shift) for ev in chunk]
        wire = [{**ev, "id": f"{ev['id']}#{tag}", "ts": ts.isoformat()} for ev, ts in zip(chunk, moved, strict=True)]
        bodies.append(_encoder.encode(wire))
        counts.append(len(chunk))
        newest.append(max(to_us(ts) for ts in moved))
    return bodies, counts, newest


def live_batches(batch_events: int, tag: str, limit: int) -> list[bytes]:
    """Up to ``limit`` batches of August events with ``ts`` left as ``__TS__`` (stamped at send time
    by ``bench.driver``) and ids ``#<tag>``, for a server on the wall clock."""
    events = august_wire()[: limit * batch_events]
    wire = [{**ev, "id": f"{ev['id']}#{tag}", "ts": "__TS__"} for ev in events]
    return batches(wire, batch_events)
