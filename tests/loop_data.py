"""Real data for the managers' loop tests (issue 14): slices of the August 1999 Anonymous Bank log,
and the expected figures computed from the file itself with ``csv`` alone."""

from __future__ import annotations

import csv
import gzip
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from tests.helpers import AUGUST

ZONE = ZoneInfo("Asia/Jerusalem")
SLUG = "contact-centre"
NEVER = "0:00:00"


@cache
def august_events() -> tuple[dict[str, Any], ...]:
    """Every event of the file (``app.replay.anonymous_bank``, the mapping under test elsewhere)."""
    from app.replay.anonymous_bank import load_events

    return tuple(load_events(AUGUST))


def events_of(days: set[date], skip_calls: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Wire events whose local day is in ``days``, leaving out the calls in ``skip_calls``."""
    out = []
    for ev in august_events():
        if ev["ts"].astimezone(ZONE).date() in days and ev["dims"]["call"] not in skip_calls:
            out.append({**ev, "ts": ev["ts"].isoformat()})
    return out


def _tod(text: str) -> time:
    h, m, s = (int(x) for x in text.split(":"))
    return time(h, m, s)


@cache
def abandoned_calls_from_file() -> dict[date, tuple[str, ...]]:
    """Local day -> the file's abandoned calls (``HANG`` rows that queued), as ``vru+line-call_id``
    keys, by the day they left the queue (``q_exit``, next day when more than 12 h before entry)."""
    out: dict[date, list[str]] = {}
    with gzip.open(AUGUST, "rt", encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh, delimiter="\t"):
            if rec["outcome"].strip() != "HANG" or rec["q_start"].strip() == NEVER:
                continue
            d = rec["date"].strip()
            day = date(1900 + int(d[:2]), int(d[2:4]), int(d[4:6]))
            entry, left = _tod(rec["vru_entry"].strip()), _tod(rec["q_exit"].strip())
            gap = datetime.combine(day, entry) - datetime.combine(day, left)
            if gap > timedelta(hours=12):
                day += timedelta(days=1)
            out.setdefault(day, []).append(f"{rec['vru+line'].strip()}-{rec['call_id'].strip()}")
    return {d: tuple(calls) for d, calls in out.items()}
