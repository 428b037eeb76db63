"""The ServiceNow incident event log -> Pulseboard events (``pulseboard replay itsm-incident-log``).

Source: the UCI Machine Learning Repository data set "Incident management
process enriched event log" (audit log of a ServiceNow instance of an IT
company, enriched from its database; C. Amaral, M. Fantinato, S. Peres,
University of São Paulo; CC BY 4.0), in the truncated copy described in
``data/itsm-incident-log/SOURCE.md`` (``incident_event_log.csv.gz``:
the first 119,998 events, 20,769 incidents).

One CSV row is one update of one incident; the incident-level fields
(``opened_at``, ``resolved_at``, ``closed_at``, ``priority``, ``category``,
``assignment_group``, ...) are repeated on every row, and some of them
(priority, category, assignment group, ``made_sla``) change between updates.
**An incident's events are built from its last row in the file** (its latest
state: the last row has the highest ``sys_mod_count`` of the incident).

Mapping, per incident (``number`` e.g. ``INC0000045``; ``id`` = number + ``:`` + type;
``source`` = ``itsm-incident-log``):

=====================  ===============  ==========================================  ==============
event                  ``ts``           when                                        ``value``
=====================  ===============  ==========================================  ==============
``incident.opened``    ``opened_at``    always                                      --
``incident.resolved``  ``resolved_at``  ``resolved_at`` present and not earlier     resolution time,
                                        than ``opened_at``                          s (resolved_at -
                                                                                    opened_at)
``incident.closed``    ``closed_at``    the last row's state is ``Closed`` and      --
                                        ``closed_at`` is present and not earlier
                                        than ``opened_at``
=====================  ===============  ==========================================  ==============

``dims`` on every event of the incident (from its last row):

* ``priority`` (``1 - Critical`` .. ``4 - Low``), ``category``, ``contact_type``:
  the text as in the file; omitted when missing (``?``: ``category`` of 7 incidents);
* ``assignment_group``: the text, or ``unassigned`` when missing (2,157 incidents
  have no assignment group on their last row; an incident that no group owns is
  a standard service-desk breakdown, so it gets a value rather than vanishing
  from per-group views);
* ``made_sla``: boolean (``true``/``false`` in the file; omitted when missing);
* ``incident``: the number, which pairs opens with resolutions and closures for gauges.

Time: timestamps are ``D/M/YYYY HH:MM``, day-first, no seconds and **no time
zone** (SOURCE.md).  Nothing in the data names the company's zone, so the
times are taken as **UTC** (``ZONE``); the ``itsm`` dashboard sets ``tz: UTC``
so its days and months are the file's calendar days and months.  Pass another
``zone`` to ``load_events`` to place them elsewhere.

Dirty and incomplete incidents (counted in ``MappingStats``; in this copy):

* ``resolved_at`` missing: no ``incident.resolved`` (1,418 incidents, all Closed
  without a recorded resolution); they do not count in MTTR;
* ``resolved_at`` earlier than ``opened_at``: no ``incident.resolved`` (0);
* ``closed_at`` earlier than ``opened_at`` or missing on a Closed incident: no
  ``incident.closed`` (0);
* last row not ``Closed``: no ``incident.closed`` even though the enriched
  ``closed_at`` column is filled (1: INC0029233, the log's last incident, cut
  off after its ``New`` event by the truncation; its ``resolved_at`` is a
  database fact and still gives an ``incident.resolved``).

An incident whose ``opened_at`` is missing or malformed cannot be placed in
time and raises ``RowError`` (none in this copy), as does any malformed
timestamp.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

ZONE: tzinfo = UTC
SOURCE = "itsm-incident-log"
MISSING = "?"
CLOSED = "Closed"
UNASSIGNED = "unassigned"
OPENED, RESOLVED, CLOSED_EVENT = "incident.opened", "incident.resolved", "incident.closed"
COLUMNS = (
    "number",
    "incident_state",
    "opened_at",
    "resolved_at",
    "closed_at",
    "priority",
    "category",
    "assignment_group",
    "contact_type",
    "made_sla",
)


class RowError(ValueError):
    """A row that cannot be mapped; the message names the line and column."""


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """The columns of one row (one update of one incident) that the mapping reads, raw text."""

    line: int
    number: str
    state: str
    opened_at: str
    resolved_at: str
    closed_at: str
    priority: str
    category: str
    assignment_group: str
    contact_type: str
    made_sla: str


@dataclass(slots=True)
class MappingStats:
    """What the mapping did with a file: rows, incidents, events, and the dirty cases skipped."""

    rows: int = 0
    incidents: int = 0
    events: dict[str, int] = field(default_factory=lambda: {OPENED: 0, RESOLVED: 0, CLOSED_EVENT: 0})
    resolved_missing: int = 0
    resolved_before_opened: int = 0
    closed_missing: int = 0
    closed_before_opened: int = 0
    not_closed: int = 0

    def lines(self) -> list[str]:
        """The stats as short lines (what the CLI prints on stderr)."""
        ev = self.events
        return [
            f"{self.rows} rows, {self.incidents} incidents -> {ev[OPENED]} opened, {ev[RESOLVED]} resolved, "
            f"{ev[CLOSED_EVENT]} closed events",
            f"no incident.resolved: {self.resolved_missing} without resolved_at, "
            f"{self.resolved_before_opened} with resolved_at before opened_at",
            f"no incident.closed: {self.not_closed} not Closed on their last row, "
            f"{self.closed_missing} Closed without closed_at, {self.closed_before_opened} closed_at before opened_at",
        ]


def parse_time(text: str, line: int, column: str, zone: tzinfo = ZONE) -> datetime | None:
    """``D/M/YYYY HH:MM`` (day first) as an aware instant in ``zone``; ``None`` for ``?``.

    Raises:
        RowError: for anything else.
    """
    text = text.strip()
    if text == MISSING or text == "":
        return None
    try:
        day_text, tod = text.split(" ")
        d, m, y = (int(x) for x in day_text.split("/"))
        hh, mm = (int(x) for x in tod.split(":"))
        return datetime(y, m, d, hh, mm, tzinfo=zone)
    except ValueError as exc:
        raise RowError(f"line {line}: column {column}: expected D/M/YYYY HH:MM, got {text!r}") from exc


def read_rows(path: Path) -> Iterator[IncidentRow]:
    """Rows of a ``.csv`` or ``.csv.gz`` incident event log (header line first).

    Raises:
        RowError: for a missing column or an empty incident number.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise RowError(f"line 1: missing column(s) {', '.join(missing)}")
        for line, rec in enumerate(reader, start=2):
            try:
                number = rec["number"].strip()
                if not number:
                    raise ValueError("empty incident number")
                yield IncidentRow(
                    line=line,
                    number=number,
                    state=rec["incident_state"].strip(),
                    opened_at=rec["opened_at"].strip(),
                    resolved_at=rec["resolved_at"].strip(),
                    closed_at=rec["closed_at"].strip(),
                    priority=rec["priority"].strip(),
                    category=rec["category"].strip(),
                    assignment_group=rec["assignment_group"].strip(),
                    contact_type=rec["contact_type"].strip(),
                    made_sla=rec["made_sla"].strip(),
                )
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise RowError(f"line {line}: cannot read row: {exc}") from exc


def last_rows(rows: Iterator[IncidentRow], stats: MappingStats | None = None) -> list[IncidentRow]:
    """The last row of every incident, in order of each incident's first appearance."""
    last: dict[str, IncidentRow] = {}
    n = 0
    for row in rows:
        n += 1
        last[row.number] = row  # re-assigning keeps the key's first-seen position
    if stats is not None:
        stats.rows += n
        stats.incidents += len(last)
    return list(last.values())


def incident_dims(row: IncidentRow) -> dict[str, Any]:
    """The ``dims`` every event of the incident carries (see the module docstring)."""
    dims: dict[str, Any] = {}
    if row.priority and row.priority != MISSING:
        dims["priority"] = row.priority
    if row.category and row.category != MISSING:
        dims["category"] = row.category
    dims["assignment_group"] = row.assignment_group if row.assignment_group not in ("", MISSING) else UNASSIGNED
    if row.contact_type and row.contact_type != MISSING:
        dims["contact_type"] = row.contact_type
    if row.made_sla.lower() in ("true", "false"):
        dims["made_sla"] = row.made_sla.lower() == "true"
    dims["incident"] = row.number
    return dims


def incident_events(row: IncidentRow, stats: MappingStats | None = None, zone: tzinfo = ZONE) -> list[dict[str, Any]]:
    """The events of one incident from its last row, each with ``ts`` as an aware datetime.

    Raises:
        RowError: when ``opened_at`` is missing, or a timestamp is malformed.
    """
    stats = stats if stats is not None else MappingStats()
    opened = parse_time(row.opened_at, row.line, "opened_at", zone)
    if opened is None:
        raise RowError(f"line {row.line}: incident {row.number}: opened_at is missing")
    resolved = parse_time(row.resolved_at, row.line, "resolved_at", zone)
    closed = parse_time(row.closed_at, row.line, "closed_at", zone)
    dims = incident_dims(row)
    out: list[dict[str, Any]] = []

    def add(kind: str, ts: datetime, value: float | None = None) -> None:
        ev: dict[str, Any] = {"id": f"{row.number}:{kind}", "source": SOURCE, "type": kind, "ts": ts, "dims": dims}
        if value is not None:
            ev["value"] = value
        out.append(ev)
        stats.events[kind] += 1

    add(OPENED, opened)
    if resolved is None:
        stats.resolved_missing += 1
    elif resolved < opened:
        stats.resolved_before_opened += 1
    else:
        add(RESOLVED, resolved, int((resolved - opened).total_seconds()))
    if row.state != CLOSED:
        stats.not_closed += 1
    elif closed is None:
        stats.closed_missing += 1
    elif closed < opened:
        stats.closed_before_opened += 1
    else:
        add(CLOSED_EVENT, closed)
    return out


def map_file(path: Path, zone: tzinfo = ZONE) -> tuple[list[dict[str, Any]], MappingStats]:
    """Every event of the file sorted by time (ties keep file order), and the mapping's stats."""
    stats = MappingStats()
    events = [ev for row in last_rows(read_rows(path), stats) for ev in incident_events(row, stats, zone)]
    events.sort(key=lambda ev: ev["ts"])
    return events, stats


def load_events(path: Path, zone: tzinfo = ZONE) -> list[dict[str, Any]]:
    """Every event of the file, sorted by time (ties keep file order)."""
    return map_file(path, zone)[0]


def to_wire(ev: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready copy of an event (``ts`` as RFC 3339 with offset)."""
    return {**ev, "ts": ev["ts"].isoformat()}
