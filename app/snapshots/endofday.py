"""The end-of-day dashboard: the day's snapshot (pinned once signed off), its breaches with their
owners and explanations, the day's notes, and sign-off (a freeze, as a scorecard's publication).

Sign-off needs every breach of the day explained (a day note on its KPI) and a day note on every
KPI red in the day's snapshot; it pins the day's latest snapshot version.  A later restatement
shows beside it (``restated_after_publication``), opens notes on the KPIs that moved, and a new
sign-off pins the newer version as the next publication (``app.snapshots.scorecard``).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.metrics.pack import Pack
from app.snapshots import NotCut, ScorecardLocked
from app.snapshots import breaches as breach_log
from app.snapshots import cut as cuts
from app.snapshots.scorecard import pinned, publication_json, publications, record_publication, restatement


def owners_of(pack: Pack) -> dict[str, Any]:
    """KPI name -> owner JSON (``{role, person}`` or ``None``) of a pack."""
    return {k.name: ({"role": k.owner.role, "person": k.owner.person} if k.owner else None) for k in pack.kpis.values()}


async def build_day(conn: AsyncConnection, slug: str, day: str, pack: Pack, zone: ZoneInfo) -> dict[str, Any]:
    """The end-of-day view of ``day`` (CONTRACT §15): works before the day is cut (breaches and
    notes only, ``snapshot`` null)."""
    shown, newest = await pinned(conn, slug, "day", day)
    pubs = await publications(conn, slug, "day", day)
    restated = restatement(shown, newest, zone) if pubs else None
    owners = owners_of(pack)
    day_breaches = await breach_log.breaches(conn, slug, zone, owners, day=day)
    notes = await breach_log.explained_days(conn, slug, [day])
    commentary = {kpi: [breach_log.note_json(n, zone) for n in rows] for (kpi, _d), rows in notes.items()}
    kpis = msgspec.json.decode(shown.kpis) if shown is not None else {}
    red = sorted(n for n, k in kpis.items() if k.get("status") == "red")
    missing = sorted({b["kpi"] for b in day_breaches if not b["explained"]} | {n for n in red if n not in commentary})
    moved = set(restated["moved"]) if restated else set()
    return {
        "dashboard": slug,
        "day": day,
        "tz": str(zone),
        "snapshot": (
            {**cuts.snapshot_json(shown), "latest_version": newest.version if newest is not None else None}
            if shown is not None
            else None
        ),
        "signed_off": publication_json(pubs[-1], zone) if pubs else None,
        "publications": [publication_json(p, zone) for p in pubs],
        "restated_after_publication": restated,
        "breaches": day_breaches,
        "commentary": commentary,
        "needs_explanation": missing,
        "notes_allowed": sorted(owners) if not pubs else sorted(moved),
    }


async def sign_off(
    engine: AsyncEngine, slug: str, day: str, pack: Pack, zone: ZoneInfo, by: str, key_id: str | None, now_us: int
) -> dict[str, Any]:
    """Sign off (freeze) the end-of-day dashboard of ``day`` at its latest snapshot version.

    Raises:
        NotCut: the day has no snapshot yet.
        ScorecardLocked: already signed off at the latest version; or breaches / red KPIs without
            an explanation (``missing`` names the KPIs).
    """
    try:
        async with engine.begin() as conn:
            await cuts.lock_period(conn, slug, "publish", day)
            view = await build_day(conn, slug, day, pack, zone)
            newest = await cuts.latest(conn, slug, "day", day)
            if newest is None:
                raise NotCut(f"{slug}: day {day} has no snapshot yet")
            pubs = await publications(conn, slug, "day", day)
            if not pubs or pubs[-1].snapshot_version < newest.version:
                latest_kpis = msgspec.json.decode(newest.kpis)
                red = {n for n, k in latest_kpis.items() if k.get("status") == "red"}
                unexplained = {b["kpi"] for b in view["breaches"] if not b["explained"]}
                missing = sorted(unexplained | (red - set(view["commentary"])))
                if missing:
                    reasons = {
                        k: f"{k} has a breach on {day} without an explanation"
                        if k in unexplained
                        else f"{k} is red on {day} and has no note"
                        for k in missing
                    }
                    raise ScorecardLocked("every breach and red KPI of the day needs an explanation", missing, reasons)
            await record_publication(conn, slug, "day", day, newest.version, by, key_id, now_us)
    except IntegrityError:
        raise ScorecardLocked(
            f"the {day} end-of-day dashboard of {slug} was just signed off by another caller"
        ) from None
    async with engine.connect() as conn:
        return await build_day(conn, slug, day, pack, zone)
