"""CSV export of snapshots and scorecards, safe against formula injection.

Spreadsheet programs run a cell that starts with ``=``, ``+``, ``-``, ``@``,
tab or carriage return as a formula (OWASP "CSV injection"); such text cells
are prefixed with a single quote.  Numbers are written as numbers.

Every text cell is quoted (``csv.QUOTE_NONNUMERIC``), so a spreadsheet whose locale splits on
``;`` (or tab) keeps it one cell; and a formula start right after a separator or a line break
inside the text (``ok;=cmd|' /C calc'!A0``) gets the quote too, for programs that split anyway
(issue 10, item 13).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any

_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")
_AFTER_SEPARATOR = re.compile(r"([,;\t\r\n|])([=+\-@])")


def safe_cell(value: Any) -> Any:
    """``value`` made safe for a spreadsheet: text starting with a formula character gets a ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    text = _AFTER_SEPARATOR.sub(r"\1'\2", str(value))
    return "'" + text if text.startswith(_DANGEROUS) else text


def to_csv(header: list[str], rows: Iterable[list[Any]]) -> str:
    """CSV text (RFC 4180, CRLF line ends) with every cell passed through ``safe_cell`` and every
    text cell quoted (numbers are not)."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(header)
    for row in rows:
        writer.writerow([safe_cell(c) for c in row])
    return buf.getvalue()


def snapshot_csv(snap: dict[str, Any]) -> str:
    """One row per KPI of a snapshot (the API form)."""
    header = [
        "dashboard",
        "grain",
        "period",
        "version",
        "status",
        "kpi",
        "value",
        "unit",
        "target",
        "rag_status",
        "owner_role",
        "owner_person",
        "components",
    ]
    rows = []
    for name, k in snap["kpis"].items():
        owner = k.get("owner") or {}
        comps = "; ".join(f"{c}={v}" for c, v in k["components"].items())
        rows.append(
            [
                snap["dashboard"],
                snap["grain"],
                snap["period"]["label"],
                snap["version"],
                snap["status"],
                name,
                k["value"],
                k.get("unit"),
                k["target"],
                k["status"],
                owner.get("role"),
                owner.get("person"),
                comps,
            ]
        )
    return to_csv(header, rows)


def scorecard_csv(card: dict[str, Any]) -> str:
    """One row per KPI of a scorecard, in agenda order, with its notes."""
    header = [
        "agenda_rank",
        "kpi",
        "title",
        "value",
        "unit",
        "target",
        "rag_status",
        "variance_to_target",
        "variance_to_previous",
        "red_streak_months",
        "owner_role",
        "owner_person",
        "trend_12_months",
        "commentary",
    ]
    rows = []
    for r in card["kpis"]:
        owner = r.get("owner") or {}
        trend = " ".join("" if p["value"] is None else f"{p['value']:.6g}" for p in r["trend"])
        notes = " | ".join(f"{n['author']}: {n['text']}" for n in r["commentary"])
        rows.append(
            [
                r["agenda_rank"],
                r["kpi"],
                r["title"],
                r["value"],
                r["unit"],
                r["target"],
                r["status"],
                r["variance_to_target"],
                r["variance_to_previous"],
                r["red_streak_months"],
                owner.get("role"),
                owner.get("person"),
                trend,
                notes,
            ]
        )
    return to_csv(header, rows)
