"""GitHub's status-page incidents -> alarm events (``pulseboard replay github-incidents``).

Source: ``data/noc-alarms/github-incidents.csv`` and ``github-component-status.csv``
(SOURCE.md): the real incidents of githubstatus.com 2010-2023 (Atlassian Statuspage records,
The Unlicense), one row per incident, and one row per (update x affected component) with the
component's status before and after the update.  All times UTC.

Two kinds of alarm (``source`` = ``github-status``; ``dims.type`` tells them apart):

**Incidents** (``type`` = ``incident``, ``alarm`` = the incident id), one per incident:

=======================  ======================  ===============================================
event                    ``ts``                  when
=======================  ======================  ===============================================
``alarm.raised``         ``started_at``          always (untimed incidents: ``resolved_at``)
``alarm.acknowledged``   ``second_update_at``    timed, with a second update: the **MTTA proxy**
``alarm.cleared``        ``resolved_at``         always
=======================  ======================  ===============================================

* ``severity`` from ``impact`` (``IMPACT_SEVERITY``): critical -> critical, major -> major,
  minor -> minor, none -> warning (X.733: a condition with no effect yet); so only major and
  critical incidents are service-affecting.
* **MTTA is a proxy**: the source records no acknowledge.  The first update after the opening
  post (``second_update_at``) stands for it (SOURCE.md); the acknowledge event says so in
  ``dims.proxy`` = ``second_update_at``.  An update stamped after the resolution is no
  acknowledge (the lifecycle's rule: an ack after the clear does not count); one stamped before
  ``started_at`` counts as an acknowledge at the raise.
* **untimed** incidents (``created_at == resolved_at``: 839 -- the 832 imported before
  2019-01-02, and 7 later ones posted after the fact, 3 of them with ``resolved_at <
  started_at``): no real duration.  They are raised and cleared at ``resolved_at`` (zero length,
  never open, no downtime) with ``dims.timed = false``: counted as raised and cleared, not in
  MTTA or MTTR (the ``noc`` pack's measures leave ``timed: false`` out), never a negative duration.

**Component status** (``type`` = ``component``, ``service`` = the component), what the status page
shows per service and what availability per service is computed from, for timed incidents: the
component's status after each update is its ``new_status`` from ``update_at`` on (updates at or
after ``resolved_at`` are ignored; one before ``started_at`` counts from ``started_at``).  While
the status is not ``operational`` the component has an open alarm (``alarm`` = incident id +
``/`` + component, ``#2``... for a later stretch of the same incident):

* raised when the status leaves ``operational``, ``alarm.updated`` when it changes between outage
  levels, cleared when it returns to ``operational`` or at ``resolved_at`` (the incident's end);
* ``severity`` from the status (``STATUS_SEVERITY``): major_outage -> critical, partial_outage ->
  major, degraded_performance -> minor, under_maintenance -> warning.  So availability counts
  partial and major outages as downtime (service-affecting), not degraded performance.

**Renamed components** are mapped to today's names (``RENAMED``: "GitHub Actions" -> "Actions",
"GitHub Pages" -> "Pages", "GitHub Packages" -> "Packages", "Issues, PRs, Projects" -> "Issues,
Pull Requests, Projects"); the pseudo-component "Visit www.githubstatus.com for more
information" is not a service and is skipped.  Incidents with no component have an incident
alarm only.  Only resolved incidents are in the archive: "open now" exists only while a replay
runs.

Pure: ``map_frames`` turns the two DataFrames into events; ``read_frames`` reads them with pandas.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

SOURCE = "github-status"
RAISED, ACKED, CLEARED, UPDATED = "alarm.raised", "alarm.acknowledged", "alarm.cleared", "alarm.updated"
IMPACT_SEVERITY = {"critical": "critical", "major": "major", "minor": "minor", "none": "warning"}
STATUS_SEVERITY = {
    "major_outage": "critical",
    "partial_outage": "major",
    "degraded_performance": "minor",
    "under_maintenance": "warning",
}
OPERATIONAL = "operational"
RENAMED = {
    "GitHub Actions": "Actions",
    "GitHub Pages": "Pages",
    "GitHub Packages": "Packages",
    "Issues, PRs, Projects": "Issues, Pull Requests, Projects",
}
NOT_A_SERVICE = frozenset({"Visit www.githubstatus.com for more information"})
INCIDENT_COLUMNS = ("incident_id", "impact", "created_at", "started_at", "second_update_at", "resolved_at")
STATUS_COLUMNS = ("incident_id", "update_id", "update_at", "component", "new_status")
PROXY = "second_update_at"


class RowError(ValueError):
    """A file or row that cannot be mapped; the message names the file, line and column."""


@dataclass(slots=True)
class MappingStats:
    """What the mapping did: incidents, alarms, events, and the quirks met."""

    incidents: int = 0
    untimed: int = 0
    untimed_retro: int = 0
    acknowledged: int = 0
    no_component: int = 0
    component_alarms: int = 0
    renamed: int = 0
    skipped_components: int = 0
    events: dict[str, int] = field(default_factory=lambda: {RAISED: 0, ACKED: 0, CLEARED: 0, UPDATED: 0})

    def lines(self) -> list[str]:
        """The stats as short lines (what the CLI prints on stderr)."""
        ev = self.events
        return [
            f"{self.incidents} incidents, {self.component_alarms} component-status alarms -> {ev[RAISED]} raised, "
            f"{ev[ACKED]} acknowledged, {ev[UPDATED]} updated, {ev[CLEARED]} cleared events",
            f"untimed (created_at = resolved_at, no real duration, not in MTTA/MTTR): {self.untimed}, "
            f"{self.untimed_retro} of them with resolved_at before started_at",
            f"MTTA is a PROXY: {PROXY} (the first update after the opening post) of {self.acknowledged} incidents; "
            "the source records no acknowledge",
            f"{self.no_component} incidents without a component; {self.renamed} component rows renamed to today's "
            f"names; {self.skipped_components} rows of pseudo-components skipped",
        ]


def _times(frame: pd.DataFrame, column: str, name: str) -> pd.Series:
    text = frame[column].str.strip()
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna() & (text != "")
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise RowError(f"{name}: line {row + 2}: column {column}: expected an ISO 8601 time, got {text.iloc[row]!r}")
    return parsed


def read_frames(paths: Iterable[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The incident table and the component-status table from ``paths`` (a folder holding both
    CSVs, or the two files), told apart by their columns; times parsed as UTC.

    Raises:
        RowError: a table missing, a column missing, a malformed time (names file and line).
    """
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("github-*.csv")) if path.is_dir() else [path]
    incidents = statuses = None
    for path in files:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "resolved_at" in frame.columns:
            missing = [c for c in INCIDENT_COLUMNS if c not in frame.columns]
            kind = "incidents"
        else:
            missing = [c for c in STATUS_COLUMNS if c not in frame.columns]
            kind = "component status"
        if missing:
            raise RowError(f"{path.name}: line 1: missing column(s) {', '.join(missing)} of the {kind} table")
        for column in [c for c in frame.columns if c.endswith("_at")]:
            frame[column] = _times(frame, column, path.name)
        if kind == "incidents":
            incidents = frame
        else:
            statuses = frame
    if incidents is None or statuses is None:
        raise RowError("need both github-incidents.csv and github-component-status.csv (a folder or the two files)")
    return incidents, statuses


def _event(kind: str, key: str, ts: datetime, dims: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    return {"id": f"{key}:{kind.split('.')[1]}{suffix}", "source": SOURCE, "type": kind, "ts": ts, "dims": dims}


def map_frames(incidents: pd.DataFrame, statuses: pd.DataFrame) -> tuple[list[dict[str, Any]], MappingStats]:
    """Every event of the two tables (as ``read_frames`` returns them) sorted by time (ties keep
    the order they were built in: an alarm's raise before its updates and clear), and the stats."""
    stats = MappingStats(incidents=len(incidents))
    built: list[dict[str, Any]] = []

    def add(ev: dict[str, Any]) -> None:
        built.append(ev)
        stats.events[ev["type"]] += 1

    by_incident: dict[str, list[tuple[datetime, str, str, str]]] = {}
    for inc, update_id, at, component, status in zip(
        statuses["incident_id"],
        statuses["update_id"],
        statuses["update_at"],
        statuses["component"],
        statuses["new_status"],
        strict=True,
    ):
        if component in NOT_A_SERVICE:
            stats.skipped_components += 1
            continue
        if component in RENAMED:
            stats.renamed += 1
        by_incident.setdefault(inc, []).append(
            (at.to_pydatetime(), update_id, RENAMED.get(component, component), status)
        )
    for row in incidents.itertuples(index=False):
        inc = row.incident_id
        created, started, resolved = row.created_at, row.started_at, row.resolved_at
        if "components" in incidents.columns and not str(row.components).strip():
            stats.no_component += 1
        severity = IMPACT_SEVERITY.get(str(row.impact).strip(), "indeterminate")
        base = {"alarm": inc, "type": "incident", "severity": severity}
        if created == resolved or resolved < started:
            stats.untimed += 1
            stats.untimed_retro += int(resolved < started)
            dims = {**base, "timed": False}
            add(_event(RAISED, inc, resolved.to_pydatetime(), dims))
            add(_event(CLEARED, inc, resolved.to_pydatetime(), {"alarm": inc}))
            continue
        add(_event(RAISED, inc, started.to_pydatetime(), base))
        second = row.second_update_at
        if not pd.isna(second):
            stats.acknowledged += 1
            add(_event(ACKED, inc, second.to_pydatetime(), {"alarm": inc, "proxy": PROXY}))
        add(_event(CLEARED, inc, resolved.to_pydatetime(), {"alarm": inc}))
        _component_alarms(inc, started.to_pydatetime(), resolved.to_pydatetime(), by_incident.get(inc, []), add, stats)
    order = {id(ev): n for n, ev in enumerate(built)}
    built.sort(key=lambda ev: (ev["ts"], order[id(ev)]))
    return built, stats


def _component_alarms(
    inc: str,
    started: datetime,
    resolved: datetime,
    rows: list[tuple[datetime, str, str, str]],
    add: Any,
    stats: MappingStats,
) -> None:
    """The component-status alarms of one timed incident (rules in the module docstring)."""
    by_component: dict[str, list[tuple[datetime, str, str]]] = {}
    for at, update_id, component, status in rows:
        by_component.setdefault(component, []).append((max(at, started), update_id, status))
    for component, updates in by_component.items():
        current, stretch, key = OPERATIONAL, 0, ""
        for at, update_id, status in sorted(updates, key=lambda u: u[0]):
            if at >= resolved or status == current:
                continue
            if current == OPERATIONAL:
                stretch += 1
                key = f"{inc}/{component}" + (f"#{stretch}" if stretch > 1 else "")
                dims = {"alarm": key, "type": "component", "service": component, "incident": inc}
                add(_event(RAISED, key, at, {**dims, "severity": STATUS_SEVERITY.get(status, "indeterminate")}))
                stats.component_alarms += 1
            elif status == OPERATIONAL:
                add(_event(CLEARED, key, at, {"alarm": key}))
            else:
                severity = STATUS_SEVERITY.get(status, "indeterminate")
                add(_event(UPDATED, key, at, {"alarm": key, "severity": severity}, f":{update_id}"))
            current = status
        if current != OPERATIONAL:
            add(_event(CLEARED, key, resolved, {"alarm": key}))


def map_paths(paths: Iterable[Path]) -> tuple[list[dict[str, Any]], MappingStats]:
    """``map_frames`` of ``read_frames(paths)``."""
    return map_frames(*read_frames(paths))
