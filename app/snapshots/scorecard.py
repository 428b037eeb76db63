"""Monthly scorecards: value, target, RAG, variance, 12-month trend, owner, commentary,
publishing, and the review agenda.

Variance to target is ``value - target`` (in the KPI's unit) and, relative,
``(value - target) / |target|``; "better" follows the KPI's direction.  The
review agenda orders KPIs by what matters most: red before amber before green
(no status last), then larger weighted relative variance (``weight × |relative
variance|``), then longer red streaks (consecutive red months up to this one);
a red KPI without a note is flagged ``needs_note``.  Publishing requires a
note on every red KPI and locks the scorecard: no more notes, and the version
of the monthly snapshot it used is recorded.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.metrics.calendar import from_us
from app.snapshots import InvalidNote, NotCut, ScorecardLocked
from app.snapshots.cut import latest
from app.store.schema import commentary, scorecard_publication

STATUS_RANK = {"red": 0, "amber": 1, "green": 2, None: 3}
MAX_NOTE_CHARS = 4000


def previous_months(label: str, n: int) -> list[str]:
    """``label`` and the ``n - 1`` months before it, oldest first (``YYYY-MM``)."""
    year, month = (int(x) for x in label.split("-"))
    out = []
    for _ in range(n):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return out[::-1]


def _variance(value: float | None, ref: float | None) -> tuple[float | None, float | None]:
    if value is None or ref is None:
        return None, None
    diff = value - ref
    return diff, (diff / abs(ref) if ref else None)


async def _notes(conn: AsyncConnection, dashboard: str, month: str) -> dict[str, list[dict[str, Any]]]:
    t = commentary.c
    rows = await conn.execute(
        select(commentary).where(t.dashboard == dashboard, t.month == month).order_by(t.created_us, t.id)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row.kpi, []).append(
            {"id": row.id, "author": row.author, "text": row.text, "created_at": from_us(row.created_us).isoformat()}
        )
    return out


async def lock_scorecard(conn: AsyncConnection, dashboard: str, month: str) -> None:
    """Serialise the changes of one month's scorecard (a note, the publication) across connections and
    instances until ``conn``'s transaction ends (issue 10, item 20: a note checked the publication,
    then inserted, so one could land after the scorecard was published).

    PostgreSQL: a transaction-level advisory lock on the schema, dashboard and month.  SQLite: the
    database's write lock, taken by a statement that writes nothing (WAL readers are not blocked).
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.scorecard/' || :d || '/' || :m))"),
            {"d": dashboard, "m": month},
        )
    else:
        t = scorecard_publication.c
        await conn.execute(
            update(scorecard_publication)
            .where(t.dashboard == dashboard, t.month == month, t.month != t.month)
            .values(month=t.month)
        )


async def _publication(conn: AsyncConnection, dashboard: str, month: str) -> Any | None:
    t = scorecard_publication.c
    return (await conn.execute(select(scorecard_publication).where(t.dashboard == dashboard, t.month == month))).first()


def _kpi_in(month_kpis: Mapping[str, Any] | None, name: str) -> Any | None:
    """KPI ``name`` of a month's decoded snapshot KPIs; ``None`` when the month or the KPI is missing."""
    return month_kpis.get(name) if month_kpis else None


async def build(conn: AsyncConnection, dashboard: str, month: str) -> dict[str, Any]:
    """The scorecard of ``month`` from the latest monthly snapshots.

    Raises:
        NotCut: the month has no snapshot yet.
    """
    months = previous_months(month, 12)
    snaps = {m: await latest(conn, dashboard, "month", m) for m in months}
    current = snaps[month]
    if current is None:
        raise NotCut(f"{dashboard}: month {month} has no snapshot yet")
    decoded: dict[str, dict[str, Any] | None] = {
        m: msgspec.json.decode(r.kpis) if r is not None else None for m, r in snaps.items()
    }
    this_month: dict[str, Any] = msgspec.json.decode(current.kpis)
    prev_month = months[-2]
    notes = await _notes(conn, dashboard, month)
    rows = []
    for name, k in this_month.items():
        value, target = k["value"], k["target"]
        var_t, var_t_rel = _variance(value, target)
        prev = _kpi_in(decoded[prev_month], name)
        var_p, var_p_rel = _variance(value, prev["value"] if prev else None)
        streak = 0
        for m in reversed(months):
            kk = _kpi_in(decoded[m], name)
            if kk is None or kk["status"] != "red":
                break
            streak += 1
        kpi_notes = notes.get(name, [])
        rows.append(
            {
                "kpi": name,
                "title": k.get("title", name),
                "unit": k.get("unit"),
                "direction": k.get("direction"),
                "value": value,
                "target": target,
                "status": k["status"],
                "owner": k.get("owner"),
                "weight": k.get("weight", 1.0),
                "variance_to_target": var_t,
                "variance_to_target_ratio": var_t_rel,
                "previous_value": prev["value"] if prev else None,
                "variance_to_previous": var_p,
                "variance_to_previous_ratio": var_p_rel,
                "trend": [{"month": m, "value": (_kpi_in(decoded[m], name) or {}).get("value")} for m in months],
                "red_streak_months": streak,
                "commentary": kpi_notes,
                "needs_note": k["status"] == "red" and not kpi_notes,
            }
        )
    rows.sort(
        key=lambda r: (
            STATUS_RANK.get(r["status"], 3),
            -(r["weight"] * abs(r["variance_to_target_ratio"] or 0)),
            -r["red_streak_months"],
            r["kpi"],
        )
    )
    for i, r in enumerate(rows, start=1):
        r["agenda_rank"] = i
    pub = await _publication(conn, dashboard, month)
    zone = ZoneInfo(current.tz)
    for r in rows:
        for note in r["commentary"]:
            note["created_at"] = datetime.fromisoformat(note["created_at"]).astimezone(zone).isoformat()
    return {
        "dashboard": dashboard,
        "month": month,
        "tz": current.tz,
        "snapshot": {
            "version": current.version,
            "status": current.status,
            "cut_at": from_us(current.cut_at_us, zone).isoformat(),
            "cause": current.cause,
        },
        "published": (
            {
                "at": from_us(pub.published_us, zone).isoformat(),
                "by": pub.published_by,
                "snapshot_version": pub.snapshot_version,
            }
            if pub
            else None
        ),
        "agenda": [r["kpi"] for r in rows],
        "kpis": rows,
    }


async def add_note(
    engine: AsyncEngine, dashboard: str, month: str, kpi: str, text: str, author: str, now_us: int
) -> dict[str, Any]:
    """Append a note to ``kpi`` for ``month``.

    Raises:
        NotCut: no snapshot for the month, or no such KPI in it.
        ScorecardLocked: the scorecard is published.
        InvalidNote: empty or overlong text (a ``ValueError``).
    """
    text = text.strip()
    if not text or len(text) > MAX_NOTE_CHARS:
        raise InvalidNote(f"text must be 1-{MAX_NOTE_CHARS} characters")
    async with engine.begin() as conn:
        await lock_scorecard(conn, dashboard, month)
        row = await latest(conn, dashboard, "month", month)
        if row is None or kpi not in msgspec.json.decode(row.kpis):
            raise NotCut(f"{dashboard}: no KPI {kpi!r} in a snapshot of {month}")
        if await _publication(conn, dashboard, month) is not None:
            raise ScorecardLocked(f"the {month} scorecard of {dashboard} is published; notes are locked")
        note = {
            "id": secrets.token_hex(16),
            "dashboard": dashboard,
            "month": month,
            "kpi": kpi,
            "author": author,
            "text": text,
            "created_us": now_us,
        }
        await conn.execute(commentary.insert(), note)
    return {"id": note["id"], "kpi": kpi, "author": author, "text": text, "created_at": from_us(now_us).isoformat()}


async def publish(engine: AsyncEngine, dashboard: str, month: str, by: str, now_us: int) -> dict[str, Any]:
    """Lock the scorecard of ``month``.

    Raises:
        NotCut: no snapshot for the month.
        ScorecardLocked: already published, or red KPIs without a note (``missing`` names them).
    """
    async with engine.begin() as conn:
        await lock_scorecard(conn, dashboard, month)
        card = await build(conn, dashboard, month)
        if card["published"] is not None:
            raise ScorecardLocked(f"the {month} scorecard of {dashboard} is already published")
        missing = [r["kpi"] for r in card["kpis"] if r["needs_note"]]
        if missing:
            raise ScorecardLocked("every red KPI needs a note before publishing", missing)
        try:
            await conn.execute(
                scorecard_publication.insert(),
                {
                    "dashboard": dashboard,
                    "month": month,
                    "published_us": now_us,
                    "published_by": by,
                    "snapshot_version": card["snapshot"]["version"],
                },
            )
        except IntegrityError:
            raise ScorecardLocked(f"the {month} scorecard of {dashboard} is already published") from None
    async with engine.connect() as conn:
        return await build(conn, dashboard, month)


def month_label(day: date) -> str:
    """``YYYY-MM`` of a date."""
    return f"{day.year:04d}-{day.month:02d}"
