"""Monthly scorecards: value, target, RAG, variance, 12-month trend, owner, commentary,
publishing (a freeze), restatements after publication, and the review agenda.

Variance to target is ``value - target`` (in the KPI's unit) and, relative,
``(value - target) / |target|``; "better" follows the KPI's direction.  The
review agenda orders KPIs by what matters most: red before amber before green
(no status last), then the size of the weighted miss (``weight × |relative variance|``),
then longer red streaks (consecutive red months up to this one), then more breaches not
explained (the month's red spells, live or in day snapshots, without a day note of the
owner: ``app.snapshots.breaches``); each row's ``agenda_why`` gives these figures and a
sentence.  A red KPI without a note is flagged ``needs_note``.

Publishing requires a note on every red KPI and freezes the scorecard: it pins the monthly
snapshot version it shows, and shows those numbers from then on, whatever is restated later.
A later version appears beside it as ``restated_after_publication`` (what changed, why) and
opens a re-publication step: notes are accepted again on the KPIs whose numbers moved (only
those), and publishing again pins the newest version as the next publication.  Every
publication is kept (``publications``).  The same rules freeze a signed-off end-of-day
dashboard (``app.snapshots.endofday``).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.metrics.calendar import from_us
from app.snapshots import InvalidNote, NotCut, ScorecardLocked
from app.snapshots import breaches as breach_log
from app.snapshots import cut as cuts
from app.snapshots.cut import latest
from app.store.schema import commentary, publication

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
    """Month notes (not day notes) of ``month``, per KPI, oldest first."""
    t = commentary.c
    rows = await conn.execute(
        select(commentary)
        .where(t.dashboard == dashboard, t.month == month, t.day.is_(None))
        .order_by(t.created_us, t.id)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row.kpi, []).append(
            {
                "id": row.id,
                "author": row.author,
                "text": row.text,
                "snapshot_version": row.snapshot_version,
                "created_at": from_us(row.created_us).isoformat(),
            }
        )
    return out


async def publications(conn: AsyncConnection, dashboard: str, grain: str, period: str) -> list[Any]:
    """Every publication (``grain`` month) or sign-off (``grain`` day) of a period, oldest first."""
    t = publication.c
    rows = await conn.execute(
        select(publication).where(t.dashboard == dashboard, t.grain == grain, t.period == period).order_by(t.number)
    )
    return list(rows)


def publication_json(row: Any, zone: ZoneInfo) -> dict[str, Any]:
    """The API form of a publication row."""
    return {
        "number": row.number,
        "at": from_us(row.published_us, zone).isoformat(),
        "by": row.published_by,
        "snapshot_version": row.snapshot_version,
    }


async def pinned(conn: AsyncConnection, dashboard: str, grain: str, period: str) -> tuple[Any | None, Any | None]:
    """``(the snapshot row shown, the latest row)`` of a period: the shown row is the version the
    last publication pinned, else the latest.  ``(None, None)`` before the period is cut."""
    rows = await cuts.versions(conn, dashboard, grain, period)
    if not rows:
        return None, None
    pubs = await publications(conn, dashboard, grain, period)
    if pubs:
        want = pubs[-1].snapshot_version
        shown = next((r for r in rows if r.version == want), rows[-1])
        return shown, rows[-1]
    return rows[-1], rows[-1]


def restatement(shown: Any, latest: Any, zone: ZoneInfo) -> dict[str, Any] | None:
    """What a version newer than the published one changed: ``{version, status, cut_at, cause,
    changes: {kpi: {from, to, difference, status_from, status_to}}, moved: [kpi, ...]}``, or
    ``None`` when the shown version is the latest."""
    if shown is None or latest is None or latest.version == shown.version:
        return None
    old, new = msgspec.json.decode(shown.kpis), msgspec.json.decode(latest.kpis)
    changes = {}
    for name, c in cuts.diff_kpis(old, new).items():
        changes[name] = {
            "from": c["from"],
            "to": c["to"],
            "difference": c["difference"],
            "status_from": (old.get(name) or {}).get("status"),
            "status_to": new[name]["status"],
            "definition_changed": c.get("definition_changed", False),
        }
    return {
        "version": latest.version,
        "status": latest.status,
        "cut_at": from_us(latest.cut_at_us, zone).isoformat(),
        "cause": latest.cause,
        "changes": changes,
        "moved": sorted(changes),
    }


async def lock_scorecard(conn: AsyncConnection, dashboard: str, month: str) -> None:
    """Serialise the changes of one period's scorecard or end-of-day page (``month``: the period label; a
    note, a publication or sign-off) across connections and
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
        t = publication.c
        await conn.execute(
            update(publication)
            .where(t.dashboard == dashboard, t.period == month, t.period != t.period)
            .values(period=t.period)
        )


def _kpi_in(month_kpis: Mapping[str, Any] | None, name: str) -> Any | None:
    """KPI ``name`` of a month's decoded snapshot KPIs; ``None`` when the month or the KPI is missing."""
    return month_kpis.get(name) if month_kpis else None


def _cell_freshness(stored: Mapping[str, Any] | None, zone: ZoneInfo) -> dict[str, Any] | None:
    """A scorecard cell's freshness (``app.snapshots.cut.compute_kpis``) with its watermark as a local instant."""
    if not stored:
        return None
    mark = stored.get("watermark_us")
    return {
        "watermark": from_us(mark, zone).isoformat() if mark is not None else None,
        "events": stored.get("events"),
        "lag_at_end_s": stored.get("lag_at_end_s"),
    }


def _why(row: dict[str, Any]) -> dict[str, Any]:
    miss = abs(row["variance_to_target_ratio"] or 0)
    weighted = row["weight"] * miss
    parts = [str(row["status"] or "no status").upper()]
    if row["status"] in ("red", "amber") and row["variance_to_target_ratio"] is not None:
        parts.append(f"weight {row['weight']:g} × miss {miss:.1%} = {weighted:.3f}")
    if row["red_streak_months"]:
        parts.append(f"red {row['red_streak_months']} month(s) running")
    if row["breaches_unexplained"]:
        parts.append(f"{row['breaches_unexplained']} of {row['breaches']} breach(es) not explained")
    return {
        "status": row["status"],
        "weight": row["weight"],
        "miss_ratio": miss if row["variance_to_target_ratio"] is not None else None,
        "weighted_miss": weighted,
        "red_streak_months": row["red_streak_months"],
        "breaches": row["breaches"],
        "breaches_unexplained": row["breaches_unexplained"],
        "text": "; ".join(parts),
    }


async def build(conn: AsyncConnection, dashboard: str, month: str) -> dict[str, Any]:
    """The scorecard of ``month``: the published (pinned) monthly snapshot, else the latest.

    Raises:
        NotCut: the month has no snapshot yet.
    """
    months = previous_months(month, 12)
    snaps = {m: (await pinned(conn, dashboard, "month", m))[0] for m in months}
    current = snaps[month]
    if current is None:
        raise NotCut(f"{dashboard}: month {month} has no snapshot yet")
    newest = await latest(conn, dashboard, "month", month)
    zone = ZoneInfo(current.tz)
    decoded: dict[str, dict[str, Any] | None] = {
        m: msgspec.json.decode(r.kpis) if r is not None else None for m, r in snaps.items()
    }
    this_month: dict[str, Any] = msgspec.json.decode(current.kpis)
    prev_month = months[-2]
    notes = await _notes(conn, dashboard, month)
    pubs = await publications(conn, dashboard, "month", month)
    restated = restatement(current, newest, zone) if pubs else None
    moved = set(restated["moved"]) if restated else set()
    owners = {n: k.get("owner") for n, k in this_month.items()}
    month_breaches = await breach_log.breaches(conn, dashboard, zone, owners, month=month)
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
        mine = [b for b in month_breaches if b["kpi"] == name]
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
                "breaches": len(mine),
                "breaches_unexplained": sum(1 for b in mine if not b["explained"]),
                "restated_after_publication": restated["changes"].get(name) if restated else None,
                "notes_allowed": not pubs or name in moved,
                "freshness": _cell_freshness(k.get("freshness"), zone),
            }
        )
    rows.sort(
        key=lambda r: (
            STATUS_RANK.get(r["status"], 3),
            -(r["weight"] * abs(r["variance_to_target_ratio"] or 0)),
            -r["red_streak_months"],
            -r["breaches_unexplained"],
            r["kpi"],
        )
    )
    for i, r in enumerate(rows, start=1):
        r["agenda_rank"] = i
        r["agenda_why"] = _why(r)
    for r in rows:
        for note in r["commentary"]:
            note["created_at"] = datetime.fromisoformat(note["created_at"]).astimezone(zone).isoformat()
    last = pubs[-1] if pubs else None
    return {
        "dashboard": dashboard,
        "month": month,
        "tz": current.tz,
        "period": {
            "start": from_us(current.period_start_us, zone).isoformat(),
            "end": from_us(current.period_end_us, zone).isoformat(),
        },
        "snapshot": {
            "version": current.version,
            "status": current.status,
            "cut_at": from_us(current.cut_at_us, zone).isoformat(),
            "cause": current.cause,
            "latest_version": newest.version if newest is not None else current.version,
        },
        "published": (
            {
                "at": from_us(last.published_us, zone).isoformat(),
                "by": last.published_by,
                "snapshot_version": last.snapshot_version,
                "number": last.number,
            }
            if last
            else None
        ),
        "publications": [publication_json(p, zone) for p in pubs],
        "restated_after_publication": restated,
        "republication": (
            {"open": True, "moved": restated["moved"], "latest_version": restated["version"]} if restated else None
        ),
        "breaches": month_breaches,
        "agenda": [r["kpi"] for r in rows],
        "kpis": rows,
    }


async def add_note(
    engine: AsyncEngine,
    dashboard: str,
    month: str,
    kpi: str,
    text: str,
    author: str,
    now_us: int,
    key_id: str | None = None,
    day: str | None = None,
    pack_kpis: Collection[str] = (),
) -> dict[str, Any]:
    """Append a note to ``kpi`` for ``month`` or, with ``day`` (``YYYY-MM-DD`` in ``month``), for
    that day (the owner's explanation of the day's breaches).  ``author`` is the authenticated
    person (the key's holder), ``key_id`` the key.

    A month note needs the month cut; a day note needs only ``kpi`` in ``pack_kpis`` (a live
    breach of today can be explained before the day is cut).  Once a period is published
    (signed off), notes are accepted only on the KPIs whose numbers moved since (a restatement
    after publication).

    Raises:
        NotCut: no snapshot for the month, or no such KPI.
        ScorecardLocked: the period is published and ``kpi``'s numbers did not move since.
        InvalidNote: empty or overlong text (a ``ValueError``).
    """
    text = text.strip()
    if not text or len(text) > MAX_NOTE_CHARS:
        raise InvalidNote(f"text must be 1-{MAX_NOTE_CHARS} characters")
    grain, period = ("day", day) if day is not None else ("month", month)
    async with engine.begin() as conn:
        await lock_scorecard(conn, dashboard, period)
        shown, newest = await pinned(conn, dashboard, grain, period)
        if grain == "month" and (shown is None or kpi not in msgspec.json.decode(shown.kpis)):
            raise NotCut(f"{dashboard}: no KPI {kpi!r} in a snapshot of {month}")
        if grain == "day" and kpi not in pack_kpis:
            raise NotCut(f"{dashboard}: no KPI {kpi!r}")
        if await publications(conn, dashboard, grain, period):
            restated = restatement(shown, newest, ZoneInfo("UTC"))
            if restated is None or kpi not in restated["moved"]:
                what = "scorecard" if grain == "month" else "end-of-day dashboard"
                raise ScorecardLocked(
                    f"the {period} {what} of {dashboard} is published and {kpi}'s numbers have not moved "
                    "since; notes are locked"
                )
        note = {
            "id": secrets.token_hex(16),
            "dashboard": dashboard,
            "month": month,
            "kpi": kpi,
            "author": author,
            "text": text,
            "created_us": now_us,
            "day": day,
            "author_key_id": key_id,
            "snapshot_version": newest.version if newest is not None else None,
        }
        await conn.execute(commentary.insert(), note)
    return {
        "id": note["id"],
        "kpi": kpi,
        "day": day,
        "author": author,
        "text": text,
        "snapshot_version": note["snapshot_version"],
        "created_at": from_us(now_us).isoformat(),
    }


async def record_publication(
    conn: AsyncConnection,
    dashboard: str,
    grain: str,
    period: str,
    version: int,
    by: str,
    key_id: str | None,
    now_us: int,
) -> None:
    """Insert the next publication of a period, pinning snapshot ``version``.

    Raises:
        ScorecardLocked: the latest publication already pins ``version`` (nothing to re-publish).
        IntegrityError: another caller inserted the same publication number meanwhile.
    """
    pubs = await publications(conn, dashboard, grain, period)
    if pubs and pubs[-1].snapshot_version >= version:
        what = "scorecard" if grain == "month" else "end-of-day dashboard"
        raise ScorecardLocked(
            f"the {period} {what} of {dashboard} is already published (version {pubs[-1].snapshot_version}); "
            "it can be published again only after a restatement"
        )
    await conn.execute(
        publication.insert(),
        {
            "dashboard": dashboard,
            "grain": grain,
            "period": period,
            "number": (pubs[-1].number + 1) if pubs else 1,
            "snapshot_version": version,
            "published_us": now_us,
            "published_by": by,
            "key_id": key_id,
        },
    )


async def publish(
    engine: AsyncEngine, dashboard: str, month: str, by: str, now_us: int, key_id: str | None = None
) -> dict[str, Any]:
    """Publish (freeze) the scorecard of ``month`` at its latest monthly snapshot; again after a
    restatement (the next publication, pinning the newer version).

    Raises:
        NotCut: no snapshot for the month.
        ScorecardLocked: already published at the latest version, or red KPIs (of the latest
            version) without a note (``missing`` names them).
    """
    try:
        async with engine.begin() as conn:
            await lock_scorecard(conn, dashboard, month)
            await _publish_month(conn, dashboard, month, by, now_us, key_id)
    except IntegrityError:
        raise ScorecardLocked(f"the {month} scorecard of {dashboard} was just published by another caller") from None
    async with engine.connect() as conn:
        return await build(conn, dashboard, month)


async def _publish_month(
    conn: AsyncConnection, dashboard: str, month: str, by: str, now_us: int, key_id: str | None
) -> None:
    await cuts.lock_period(conn, dashboard, "publish", month)
    newest = await latest(conn, dashboard, "month", month)
    if newest is None:
        raise NotCut(f"{dashboard}: month {month} has no snapshot yet")
    notes = await _notes(conn, dashboard, month)
    pubs = await publications(conn, dashboard, "month", month)
    if pubs and pubs[-1].snapshot_version >= newest.version:
        raise ScorecardLocked(
            f"the {month} scorecard of {dashboard} is already published (version {newest.version}); "
            "it can be published again only after a restatement"
        )
    kpis = msgspec.json.decode(newest.kpis)
    missing = [name for name, k in kpis.items() if k["status"] == "red" and not notes.get(name)]
    if missing:  # in review-agenda order, as the card lists them
        order = {name: i for i, name in enumerate((await build(conn, dashboard, month))["agenda"])}
        missing.sort(key=lambda name: (order.get(name, len(order)), name))
        raise ScorecardLocked("every red KPI needs a note before publishing", missing)
    await record_publication(conn, dashboard, "month", month, newest.version, by, key_id, now_us)


def month_label(day: date) -> str:
    """``YYYY-MM`` of a date."""
    return f"{day.year:04d}-{day.month:02d}"
