"""Cutting immutable, versioned snapshots of a dashboard's KPIs for a closed period.

A snapshot stores, per KPI of the dashboard's pack: value, components, target
(per grain), RAG status, owner and the definition's hash; and for the whole
cut: the event watermark (highest event ``seq`` included), the count of late
events, and the reconciliation made at cut time.

Exactly one version 1 exists per (dashboard, grain, period) however many
workers or instances cut: PostgreSQL takes a transaction-scoped advisory lock
on the period; SQLite has a single writer; and a unique constraint backs both.
Rows are never updated (a trigger refuses it): events arriving later for a cut
period produce a new version with status ``restated``, the differences, and
the cause.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import and_, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.metrics.calendar import Period, from_us
from app.metrics.evaluate import evaluate, rag_status
from app.metrics.pack import Dashboard, Pack
from app.query.drill import behind
from app.query.kpis import gauge_of, kpi_value, pack_partials
from app.snapshots import PeriodNotClosed
from app.snapshots.reconcile import reconcile_cut
from app.store import reads
from app.store.schema import event, snapshot

log = logging.getLogger(__name__)
_json = msgspec.json


@dataclass(frozen=True, slots=True)
class Target:
    """Where a snapshot goes: the dashboard, its pack and its zone."""

    pack: Pack
    dashboard: Dashboard

    @property
    def slug(self) -> str:
        return self.dashboard.slug


async def compute_kpis(conn: AsyncConnection, pack: Pack, grain: str, period: Period) -> dict[str, dict[str, Any]]:
    """Every KPI of ``pack`` over ``period`` from the rollups; gauges read at the period's end.

    Returns:
        KPI name -> ``{value, components, target, status, owner, definition_hash, definitions, unit,
        direction, title, freshness}`` (``definitions``: the definition hash of every measure and gauge
        read); ``freshness`` (issue 14) is ``{watermark_us, events, lag_at_end_s}``: the event
        time of the newest event behind the KPI in the period (``app.query.drill.behind``), how many
        there are, and the period's end minus that newest event time.
    """
    partials = await pack_partials(conn, pack, (), period.start_us, period.end_us)
    newest = await _newest_by_type(conn, pack, period)
    out: dict[str, dict[str, Any]] = {}
    for kpi in pack.kpis.values():
        if kpi.is_gauge:
            gauge = gauge_of(pack, kpi)
            at = period.end_us - 1
            reading = await reads.gauge_reading(conn, pack.gauge_key(gauge.name), "", at, gauge.max_open_s)
            value = evaluate(kpi, {}, reading, at)
        elif kpi.reads_window:  # time-weighted, rate, peak KPIs (NOC availability)
            value = await kpi_value(conn, pack, kpi, (), period.start_us, period.end_us, period.end_us)
        else:
            value = evaluate(kpi, partials)
        target = kpi.target_for(grain)
        out[kpi.name] = {
            "title": kpi.title,
            "unit": kpi.unit,
            "direction": kpi.direction,
            "value": value.value,
            "components": value.components,
            "target": target,
            "status": rag_status(kpi, value.value, target),
            "owner": {"role": kpi.owner.role, "person": kpi.owner.person} if kpi.owner else None,
            "weight": kpi.weight,
            "definition_hash": kpi.definition_hash(),
            "freshness": _cell_freshness(newest, behind(pack, kpi).types, period),
            "definitions": dict(kpi.inputs),  # qualified measure/gauge -> its hash, for the restatement's cause
        }
    return out


async def _newest_by_type(conn: AsyncConnection, pack: Pack, period: Period) -> dict[str, tuple[int, int]]:
    """Event type -> (newest ts_us, events) of the pack's events in ``period``."""
    t = event.c
    rows = await conn.execute(
        select(t.type, func.max(t.ts_us), func.count())
        .where(t.type.in_(sorted(pack.event_types)), t.ts_us >= period.start_us, t.ts_us < period.end_us)
        .group_by(t.type)
    )
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def _cell_freshness(newest: dict[str, tuple[int, int]], types: list[str], period: Period) -> dict[str, Any]:
    seen = [newest[t] for t in types if t in newest]
    last = max((s[0] for s in seen), default=None)
    return {
        "watermark_us": last,
        "events": sum(s[1] for s in seen),
        "lag_at_end_s": (period.end_us - last) / 1_000_000 if last is not None else None,
    }


def snapshot_json(row: Any) -> dict[str, Any]:
    """The API form of a stored snapshot row (CONTRACT §7, plus provenance fields)."""
    zone = _zone(row.tz)
    return {
        "id": row.id,
        "dashboard": row.dashboard,
        "grain": row.grain,
        "period": {
            "label": row.period,
            "start": from_us(row.period_start_us, zone).isoformat(),
            "end": from_us(row.period_end_us, zone).isoformat(),
        },
        "tz": row.tz,
        "version": row.version,
        "status": row.status,
        "cut_at": from_us(row.cut_at_us, zone).isoformat(),
        "scheduled_for": from_us(row.scheduled_for_us, zone).isoformat() if row.scheduled_for_us else None,
        "event_watermark": row.event_seq_max,
        "late_events": row.late_events,
        "cause": row.cause,
        "changes": _json.decode(row.changes) if row.changes else None,
        "reconciliation": _json.decode(row.reconciliation) if row.reconciliation else None,
        "kpis": _json.decode(row.kpis),
    }


def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


async def versions(conn: AsyncConnection, dashboard: str, grain: str, label: str) -> list[Any]:
    """Every stored version of a period, oldest first."""
    t = snapshot.c
    rows = await conn.execute(
        select(snapshot).where(t.dashboard == dashboard, t.grain == grain, t.period == label).order_by(t.version)
    )
    return list(rows)


async def latest(conn: AsyncConnection, dashboard: str, grain: str, label: str) -> Any | None:
    """The newest version of a period, or ``None`` before it is cut."""
    rows = await versions(conn, dashboard, grain, label)
    return rows[-1] if rows else None


async def lock_period(conn: AsyncConnection, dashboard: str, grain: str, label: str) -> None:
    """Serialise work on one period of a dashboard: a transaction-scoped advisory lock on
    PostgreSQL; nothing on SQLite (a single writer)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"snapshot:{dashboard}:{grain}:{label}"}
        )


async def _watermark(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.coalesce(func.max(event.c.seq), 0)))).scalar_one())


async def _late_events(conn: AsyncConnection, pack: Pack, period: Period, after_seq: int) -> int:
    t = event.c
    return int(
        (
            await conn.execute(
                select(func.count()).where(
                    t.type.in_(sorted(pack.event_types)),
                    t.ts_us >= period.start_us,
                    t.ts_us < period.end_us,
                    t.seq > after_seq,
                )
            )
        ).scalar_one()
    )


def diff_kpis(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """KPIs whose value, components or definition changed: ``{kpi: {from, to, difference, ...}}``."""
    changes: dict[str, dict[str, Any]] = {}
    for name, cur in new.items():
        prev = old.get(name)
        if prev is None:
            changes[name] = {"from": None, "to": cur["value"], "difference": None, "definition_changed": True}
            continue
        if (
            prev["value"] == cur["value"]
            and prev["components"] == cur["components"]
            and prev["definition_hash"] == cur["definition_hash"]
        ):
            continue
        diff = cur["value"] - prev["value"] if prev["value"] is not None and cur["value"] is not None else None
        changes[name] = {
            "from": prev["value"],
            "to": cur["value"],
            "difference": diff,
            "components": {
                k: {"from": prev["components"].get(k), "to": v}
                for k, v in cur["components"].items()
                if prev["components"].get(k) != v
            },
            "definition_changed": prev["definition_hash"] != cur["definition_hash"],
        }
    return changes


def definition_causes(
    old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], changes: dict[str, dict[str, Any]]
) -> list[str]:
    """Causes of a restatement by changed definitions: ``definition changed: <pack/measure>: <old>
    → <new>`` for every measure or gauge whose hash moved between the versions (each once), from
    the hashes each snapshot records; ``definition change: <kpis>`` for KPIs whose own formula
    changed (or older snapshots that recorded no measure hashes)."""
    moved: dict[str, tuple[str, str]] = {}
    bare: list[str] = []
    for name, change in changes.items():
        if not change.get("definition_changed"):
            continue
        before = (old.get(name) or {}).get("definitions")
        after = new[name].get("definitions") or {}
        found = False
        if before is not None:
            for key, hash_now in after.items():
                was = before.get(key)
                if was != hash_now:
                    moved[key] = (was or "none", hash_now)
                    found = True
        if not found:
            bare.append(name)
    out = [f"definition changed: {key}: {was} → {now}" for key, (was, now) in sorted(moved.items())]
    if bare:
        out.append(f"definition change: {', '.join(sorted(bare))}")
    return out


async def cut(
    engine: AsyncEngine, target: Target, grain: str, period: Period, now_us: int, scheduled_for_us: int | None = None
) -> tuple[Any, bool]:
    """Cut ``period`` for ``target`` unless a snapshot exists; idempotent.

    Returns:
        ``(row, created)``: the version-1 row (new or existing) and whether this call stored it.

    Raises:
        PeriodNotClosed: if ``period`` has not ended at ``now_us``.
    """
    if period.end_us > now_us:
        raise PeriodNotClosed(f"{grain} {period.label} ends at {period.end.isoformat()}; it cannot be cut before")
    try:
        async with engine.begin() as conn:
            await lock_period(conn, target.slug, grain, period.label)
            existing = await latest(conn, target.slug, grain, period.label)
            if existing is not None:
                return existing, False
            watermark = await _watermark(conn)
            kpis = await compute_kpis(conn, target.pack, grain, period)
            recon = await reconcile_cut(conn, target.pack, target.slug, grain, period, kpis)
            row = {
                "id": secrets.token_hex(16),
                "dashboard": target.slug,
                "grain": grain,
                "period": period.label,
                "version": 1,
                "period_start_us": period.start_us,
                "period_end_us": period.end_us,
                "tz": str(period.zone),
                "scheduled_for_us": scheduled_for_us,
                "cut_at_us": now_us,
                "status": "final",
                "event_seq_max": watermark,
                "late_events": 0,
                "kpis": _json.encode(kpis).decode(),
                "cause": None,
                "changes": None,
                "reconciliation": _json.encode(recon).decode(),
            }
            await conn.execute(snapshot.insert(), row)
    except IntegrityError:  # another instance stored it between our check and insert
        async with engine.connect() as conn:
            return await latest(conn, target.slug, grain, period.label), False
    async with engine.connect() as conn:
        stored = await latest(conn, target.slug, grain, period.label)
    log.info("cut %s %s %s (watermark %d)", target.slug, grain, period.label, watermark)
    return stored, True


async def restate(
    engine: AsyncEngine, target: Target, grain: str, period: Period, now_us: int, reason: str | None = None
) -> Any | None:
    """Re-cut a cut period; store a new ``restated`` version if anything changed.

    Returns:
        The new row, or ``None`` when the period is not cut yet or nothing changed.
    """
    async with engine.begin() as conn:
        await lock_period(conn, target.slug, grain, period.label)
        rows = await versions(conn, target.slug, grain, period.label)
        if not rows:
            return None
        prev = rows[-1]
        watermark = await _watermark(conn)
        kpis = await compute_kpis(conn, target.pack, grain, period)
        changes = diff_kpis(_json.decode(prev.kpis), kpis)
        if not changes:
            return None
        late_since_prev = await _late_events(conn, target.pack, period, prev.event_seq_max)
        late_total = await _late_events(conn, target.pack, period, rows[0].event_seq_max)
        causes = []
        if late_since_prev:
            causes.append(f"late events: {late_since_prev} arrived after version {prev.version} was cut")  # n >= 1
        causes += definition_causes(_json.decode(prev.kpis), kpis, changes)
        if reason:
            causes.append(reason)
        recon = await reconcile_cut(conn, target.pack, target.slug, grain, period, kpis)
        row = {
            "id": secrets.token_hex(16),
            "dashboard": target.slug,
            "grain": grain,
            "period": period.label,
            "version": prev.version + 1,
            "period_start_us": period.start_us,
            "period_end_us": period.end_us,
            "tz": str(period.zone),
            "scheduled_for_us": rows[0].scheduled_for_us,
            "cut_at_us": now_us,
            "status": "restated",
            "event_seq_max": watermark,
            "late_events": late_total,
            "kpis": _json.encode(kpis).decode(),
            "cause": "; ".join(causes) or "recomputed",
            "changes": _json.encode(changes).decode(),
            "reconciliation": _json.encode(recon).decode(),
        }
        await conn.execute(snapshot.insert(), row)
    log.info("restated %s %s %s as version %d: %s", target.slug, grain, period.label, row["version"], row["cause"])
    async with engine.connect() as conn:
        return await latest(conn, target.slug, grain, period.label)


def _latest_versions(slug: str) -> Any:
    """Subquery ``(grain, period, v)``: the latest version of each cut period of ``slug``."""
    t = snapshot.c
    return (
        select(t.grain, t.period, func.max(t.version).label("v"))
        .where(t.dashboard == slug)
        .group_by(t.grain, t.period)
        .subquery()
    )


async def stale_periods(
    conn: AsyncConnection, target: Target, since_seq: int | None = None, definitions: bool = True
) -> list[tuple[str, str]]:
    """``(grain, label)`` of cut periods whose latest version misses events stored since
    (late events), or (with ``definitions``) whose KPI definitions changed.

    Late data is found by one set-based query, whatever the history (issue 10 item 10: one
    query per snapshot took 10 s a tick at 14,283 snapshots): the latest versions joined with
    an ``EXISTS`` over the events of the pack's types stored after each version's
    ``event_seq_max`` inside its period.  ``since_seq`` (an event ``seq``) limits that to events
    stored after it, which the caller has checked before: each probe is then a short range of the
    primary key.  Definitions change only when packs are loaded (at start), so the caller asks
    for them once per process (``definitions``); that check reads each latest version's KPIs.
    """
    t = snapshot.c
    latest = _latest_versions(target.slug)
    joined = and_(
        t.dashboard == target.slug,
        t.grain == latest.c.grain,
        t.period == latest.c.period,
        t.version == latest.c.v,
    )
    out: list[tuple[str, str]] = []
    if definitions:
        hashes = {k.name: k.definition_hash() for k in target.pack.kpis.values()}
        for row in await conn.execute(select(t.grain, t.period, t.kpis).join(latest, joined)):
            stored = {k: v.get("definition_hash") for k, v in _json.decode(row.kpis).items()}
            if stored != hashes:
                out.append((row.grain, row.period))
    e = event.c
    late = select(e.seq).where(
        e.seq > t.event_seq_max,
        e.ts_us >= t.period_start_us,
        e.ts_us < t.period_end_us,
        e.type.in_(sorted(target.pack.event_types)),
    )
    if since_seq is not None:
        late = late.where(e.seq > since_seq)
    seen = set(out)
    found = await conn.execute(select(t.grain, t.period).join(latest, joined).where(late.exists()))
    for grain, label in found:
        if (grain, label) not in seen:
            out.append((grain, label))
    return out


async def event_watermark(conn: AsyncConnection) -> int:
    """The highest event ``seq`` stored (0 for none)."""
    return await _watermark(conn)


async def notices(conn: AsyncConnection, dashboard: str, since_end_us: int) -> list[dict[str, Any]]:
    """What a wall should flag about recent cuts: restated snapshots and failed checks.

    Covers periods ending at or after ``since_end_us``; one notice per finding,
    ``{kind: "restated" | "check_failed", grain, period, version, text}``.
    """
    t = snapshot.c
    rows = await conn.execute(
        select(snapshot)
        .where(t.dashboard == dashboard, t.period_end_us >= since_end_us)
        .order_by(t.grain, t.period, t.version)
    )
    newest: dict[tuple[str, str], Any] = {}
    for row in rows:
        newest[(row.grain, row.period)] = row
    out = []
    for (grain, period), row in sorted(newest.items()):
        base = {"grain": grain, "period": period, "version": row.version}
        if row.status == "restated":
            out.append({**base, "kind": "restated", "text": f"{grain} {period} restated (v{row.version}): {row.cause}"})
        recon = _json.decode(row.reconciliation) if row.reconciliation else None
        if recon and recon.get("ok") is False:
            first = recon["mismatches"][0] if recon["mismatches"] else {}
            out.append(
                {
                    **base,
                    "kind": "check_failed",
                    "text": f"{grain} {period}: {len(recon['mismatches'])} check mismatch(es), e.g. "
                    f"{first.get('kpi')}: {first.get('cause')}",
                }
            )
    return out
