"""The Anonymous Bank call log -> Pulseboard events (CONTRACT §5).

Source: the "Anonymous Bank" call-centre log (Guedj & Mandelbaum, Technion SEE
lab; Brown et al., JASA 2005), see ``data/anonymous-bank/SOURCE.md``.

Times are local wall-clock times in ``Asia/Jerusalem`` on the row's ``date``
(``YYMMDD``, 1999); a time of day earlier than ``vru_entry`` happened after
midnight, on the next day.  A handful of dirty rows (negative ``vru_time``:
the VRU clock ran up to a few minutes ahead of the queue's) have a ``q_start``
seconds or minutes *before* ``vru_entry``; taking those literally would move
them a whole day ahead, so a time counts as next-day only when it is more than
``WRAP_MIN_GAP`` (12 h) earlier than ``vru_entry``.  57 ``AGENT`` rows have no
recorded service times (``ser_start`` = ``ser_exit`` = ``0:00:00``); their
answer time is when they left the queue (``q_exit``), or the VRU (``vru_exit``)
if they never queued, and their end time is the same instant (``ser_time`` 0).
``PHANTOM`` rows are skipped; ``HANG`` rows that never queued hung up in the voice menu and are not offered.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Asia/Jerusalem")
SOURCE = "anonymous-bank"
NEVER = "0:00:00"
WRAP_MIN_GAP = timedelta(hours=12)


class RowError(ValueError):
    """A row that cannot be mapped; the message names the line and column."""


@dataclass(frozen=True, slots=True)
class CallRow:
    """The columns of one call that the mapping reads."""

    line: int
    key: str
    priority: str
    queue: str
    day: date
    vru_entry: str
    vru_exit: str
    q_start: str
    q_exit: str
    q_time: int
    outcome: str
    ser_start: str
    ser_exit: str
    ser_time: int
    server: str
    customer: str = "0"  # customer_id; "0" = not identified


def _tod(text: str, line: int, column: str) -> time:
    try:
        h, m, s = (int(x) for x in text.split(":"))
        return time(h, m, s)
    except ValueError as exc:
        raise RowError(f"line {line}: column {column}: expected H:MM:SS, got {text!r}") from exc


def local_instant(row: CallRow, text: str, column: str) -> datetime:
    """Aware local instant of a time-of-day column, applying the midnight wrap."""
    entry = _tod(row.vru_entry, row.line, "vru_entry")
    tod = _tod(text, row.line, column)
    gap = datetime.combine(row.day, entry) - datetime.combine(row.day, tod)
    day = row.day + timedelta(days=1) if gap > WRAP_MIN_GAP else row.day
    return datetime.combine(day, tod, tzinfo=ZONE)


def read_rows(path: Path) -> Iterator[CallRow]:
    """Rows of a ``.tsv`` or ``.tsv.gz`` call log (header line first).

    Raises:
        RowError: for a row with missing columns or malformed values.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        for line, rec in enumerate(reader, start=2):
            try:
                d = rec["date"].strip()
                yield CallRow(
                    line=line,
                    key=f"{rec['vru+line'].strip()}-{rec['call_id'].strip()}",
                    priority=rec["priority"].strip(),
                    queue=rec["type"].strip(),
                    day=date(1900 + int(d[:2]) if int(d[:2]) > 50 else 2000 + int(d[:2]), int(d[2:4]), int(d[4:6])),
                    vru_entry=rec["vru_entry"].strip(),
                    vru_exit=rec["vru_exit"].strip(),
                    q_start=rec["q_start"].strip(),
                    q_exit=rec["q_exit"].strip(),
                    q_time=int(rec["q_time"]),
                    outcome=rec["outcome"].strip(),
                    ser_start=rec["ser_start"].strip(),
                    ser_exit=rec["ser_exit"].strip(),
                    ser_time=int(rec["ser_time"]),
                    server=rec["server"].strip(),
                    customer=rec["customer_id"].strip(),
                )
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise RowError(f"line {line}: cannot read row: {exc}") from exc


def row_events(row: CallRow) -> list[dict[str, Any]]:
    """The events of one call (CONTRACT §5), each with ``ts`` as an aware datetime."""
    if row.outcome == "PHANTOM":
        return []
    queued = row.q_start != NEVER
    base = {"queue": row.queue, "priority": row.priority, "call": row.key}
    if row.customer not in ("", "0"):  # identified callers only (unique_callers counts them)
        base["customer"] = row.customer
    out: list[dict[str, Any]] = []

    def add(kind: str, column: str, text: str, value: float | None, dims: dict[str, Any]) -> None:
        ev: dict[str, Any] = {
            "id": f"{row.key}:{kind}",
            "source": SOURCE,
            "type": kind,
            "ts": local_instant(row, text, column),
            "dims": dims,
        }
        if value is not None:
            ev["value"] = value
        out.append(ev)

    if queued:
        add("call.queued", "q_start", row.q_start, None, base)
    if row.outcome == "AGENT":
        agent = {**base, "agent": row.server}
        if row.ser_start != NEVER:
            add("call.answered", "ser_start", row.ser_start, row.q_time, agent)
            add("call.ended", "ser_exit", row.ser_exit, row.ser_time, agent)
        else:  # service times not recorded: answered when the call left the queue (or the VRU)
            column, text = ("q_exit", row.q_exit) if queued else ("vru_exit", row.vru_exit)
            add("call.answered", column, text, row.q_time, agent)
            add("call.ended", column, text, row.ser_time, agent)
    elif row.outcome == "HANG" and queued:
        add("call.abandoned", "q_exit", row.q_exit, row.q_time, base)
    return out


def load_events(path: Path) -> list[dict[str, Any]]:
    """Every event of the file, sorted by real time (ties keep file order)."""
    events = [ev for row in read_rows(path) for ev in row_events(row)]
    events.sort(key=lambda ev: ev["ts"])
    return events


def to_wire(ev: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready copy of an event (``ts`` as RFC 3339 with offset)."""
    return {**ev, "ts": ev["ts"].isoformat()}
