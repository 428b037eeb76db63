"""The breach log: every red spell of a KPI, on a live tile's window or in a snapshot.

A spell opens when a tile's RAG status becomes ``red`` and closes at the first evaluation
that is not red (amber, green or no data); while it lasts, the value furthest on the wrong
side of the target is kept as ``worst_value`` (the minimum for a ``higher``-is-better KPI,
the maximum for ``lower``).  Live spells are seen by the tile hub (``BreachLog.observe``,
at each computation of a watched dashboard: a dashboard nobody watches is not evaluated, so
it records nothing); snapshot spells by the snapshot service for every red KPI of a cut or
restated day (``record_snapshot``), one per KPI and day; a red month is the scorecard's
``needs_note``.  Times are the clock the
evaluation used (event time in event-time mode).

A breach is *explained* once its KPI has a note for the day the spell started
(``commentary`` with ``day`` set, written by the owner).  Rows are shared by every instance:
an instance adopts the open spells of a dashboard from the store on its first evaluation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.metrics.calendar import from_us, period_containing
from app.store.schema import commentary, kpi_breach

log = logging.getLogger(__name__)
SEEN_WRITE_US = 60_000_000  # an ongoing spell's last_seen_us is written at most once a minute (unless worse)


def _worse(direction: str | None, value: float | None, than: float | None) -> bool:
    if value is None:
        return False
    if than is None:
        return True
    return value > than if direction == "lower" else value < than


class BreachLog:
    """Records the red spells of live tiles in ``kpi_breach``.

    Args:
        engine: the store.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # slug -> tile id -> open spell {id, worst_value, written_us, direction}; a slug is absent until loaded
        self._open: dict[str, dict[str, dict[str, Any]]] = {}
        self._queue: asyncio.Queue[tuple[str, list[tuple[str, dict[str, Any]]]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every transition observed so far is written (or its write failed), at most
        ``timeout_s`` seconds; returns whether it got there."""
        if self._task is None:
            return True
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout_s``), then stop the writer task."""
        if not await self.flush(timeout_s):
            log.warning("breach log: %d write(s) dropped at shutdown", self._queue.qsize())
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _writer(self) -> None:
        while True:
            slug, writes = await self._queue.get()
            try:
                await self._write(writes)
            except Exception as exc:  # any store failure: the writer goes on with the next batch
                self._open.pop(slug, None)  # reload from the store next time
                log.warning("breach log of %s not written: %s", slug, exc)
            finally:
                self._queue.task_done()

    async def _write(self, writes: list[tuple[str, dict[str, Any]]]) -> None:
        async with self._engine.begin() as conn:
            for kind, values in writes:
                if kind == "insert":
                    await conn.execute(kpi_breach.insert(), values)
                else:
                    bid = values.pop("id")
                    await conn.execute(update(kpi_breach).where(kpi_breach.c.id == bid).values(**values))

    async def _load(self, slug: str) -> dict[str, dict[str, Any]]:
        t = kpi_breach.c
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(kpi_breach).where(t.dashboard == slug, t.source == "live", t.ended_us.is_(None))
            )
            found = {
                r.tile: {"id": r.id, "worst": r.worst_value, "written_us": r.last_seen_us, "direction": r.direction}
                for r in rows
            }
        self._open[slug] = found
        return found

    async def observe(self, slug: str, tiles: Mapping[str, Mapping[str, Any]], now_us: int, zone: ZoneInfo) -> None:
        """Note the statuses of ``tiles`` (tile id -> tile JSON, CONTRACT §4) at ``now_us`` (UTC µs).

        Opens a spell for a tile that turned red, updates the worst value of an ongoing one, closes
        the spell of a tile no longer red.  The writes go to a background task (the wall never
        waits for them; ``flush`` does); store errors are logged, not raised, and the open spells
        are re-read from the store at the next evaluation.
        """
        try:
            await self._observe(slug, tiles, now_us, zone)
        except SQLAlchemyError as exc:
            self._open.pop(slug, None)  # reload from the store next time
            log.warning("breach log of %s not written: %s", slug, exc)

    async def _observe(self, slug: str, tiles: Mapping[str, Mapping[str, Any]], now_us: int, zone: ZoneInfo) -> None:
        spells = self._open.get(slug)
        if spells is None:
            spells = await self._load(slug)
        writes: list[tuple[str, dict[str, Any]]] = []
        for tid, tile in tiles.items():
            if "kpi" not in tile or "status" not in tile:
                continue
            red = tile["status"] == "red"
            spell = spells.get(tid)
            value = tile.get("value")
            if red and spell is None:
                row = {
                    "id": secrets.token_hex(16),
                    "dashboard": slug,
                    "kpi": tile["kpi"],
                    "tile": tid,
                    "window": tile.get("window") or "",
                    "dims": msgspec.json.encode(tile.get("dims") or {}).decode(),
                    "source": "live",
                    "day": period_containing("day", now_us, zone).label,
                    "started_us": now_us,
                    "last_seen_us": now_us,
                    "ended_us": None,
                    "worst_value": value,
                    "worst_us": now_us,
                    "target": tile.get("target"),
                    "direction": tile.get("direction"),
                }
                writes.append(("insert", row))
                spells[tid] = {"id": row["id"], "worst": value, "written_us": now_us, "direction": row["direction"]}
            elif red and spell is not None:
                worse = _worse(spell["direction"], value, spell["worst"])
                if worse or now_us - spell["written_us"] >= SEEN_WRITE_US:
                    values: dict[str, Any] = {"last_seen_us": now_us}
                    if worse:
                        values.update(worst_value=value, worst_us=now_us)
                        spell["worst"] = value
                    spell["written_us"] = now_us
                    writes.append(("update", {"id": spell["id"], **values}))
            elif spell is not None:
                writes.append(("update", {"id": spell["id"], "ended_us": now_us, "last_seen_us": now_us}))
                del spells[tid]
        if not writes:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name="breach-log")
        self._queue.put_nowait((slug, writes))


async def record_snapshot(
    engine: AsyncEngine, slug: str, grain: str, label: str, start_us: int, end_us: int, kpis: Mapping[str, Any]
) -> int:
    """One spell per red KPI of a cut (or restated) day: started at the day's start, ended at its
    end, worst value the day's value.  Idempotent (one per KPI and day); months are not recorded
    (a red month needs a note on the scorecard).  Returns the number of spells added."""
    added = 0
    if grain != "day":
        return 0
    day = label
    for name, k in kpis.items():
        if k.get("status") != "red":
            continue
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    kpi_breach.insert(),
                    {
                        "id": secrets.token_hex(16),
                        "dashboard": slug,
                        "kpi": name,
                        "tile": f"snapshot:{grain}",
                        "window": grain,
                        "dims": "{}",
                        "source": "snapshot",
                        "day": day,
                        "started_us": start_us,
                        "last_seen_us": end_us,
                        "ended_us": end_us,
                        "worst_value": k.get("value"),
                        "worst_us": end_us,
                        "target": k.get("target"),
                        "direction": k.get("direction"),
                    },
                )
            added += 1
        except IntegrityError:
            continue
    return added


async def explained_days(conn: AsyncConnection, slug: str, days: list[str]) -> dict[tuple[str, str], list[Any]]:
    """``(kpi, day) -> day notes`` (oldest first) for ``days`` of dashboard ``slug``."""
    if not days:
        return {}
    t = commentary.c
    rows = await conn.execute(
        select(commentary).where(t.dashboard == slug, t.day.in_(sorted(set(days)))).order_by(t.created_us, t.id)
    )
    out: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        out.setdefault((r.kpi, r.day), []).append(r)
    return out


def note_json(row: Any, zone: ZoneInfo) -> dict[str, Any]:
    """The API form of a commentary row."""
    return {
        "id": row.id,
        "kpi": row.kpi,
        "day": row.day,
        "author": row.author,
        "text": row.text,
        "snapshot_version": row.snapshot_version,
        "created_at": from_us(row.created_us, zone).isoformat(),
    }


def breach_json(row: Any, zone: ZoneInfo, notes: list[Any], owner: Any | None) -> dict[str, Any]:
    """The API form of a breach row (CONTRACT §15): times in ``zone``, ``duration_s`` up to its end
    (or, while it lasts, up to when it was last seen red), its owner and explanation."""
    end = row.ended_us if row.ended_us is not None else row.last_seen_us
    return {
        "id": row.id,
        "kpi": row.kpi,
        "tile": row.tile,
        "window": row.window,
        "dims": msgspec.json.decode(row.dims) if row.dims else {},
        "source": row.source,
        "day": row.day,
        "started_at": from_us(row.started_us, zone).isoformat(),
        "ended_at": from_us(row.ended_us, zone).isoformat() if row.ended_us is not None else None,
        "ongoing": row.ended_us is None,
        "duration_s": (end - row.started_us) / 1_000_000,
        "worst_value": row.worst_value,
        "worst_at": from_us(row.worst_us, zone).isoformat() if row.worst_us is not None else None,
        "target": row.target,
        "direction": row.direction,
        "owner": owner,
        "explained": bool(notes),
        "explanation": [note_json(n, zone) for n in notes],
    }


async def breaches(
    conn: AsyncConnection,
    slug: str,
    zone: ZoneInfo,
    owners: Mapping[str, Any],
    day: str | None = None,
    month: str | None = None,
) -> list[dict[str, Any]]:
    """The breaches of dashboard ``slug`` that started on ``day`` (``YYYY-MM-DD``) or in ``month``
    (``YYYY-MM``), oldest first, each with its owner (``owners``: KPI ->
    owner JSON) and explanation."""
    t = kpi_breach.c
    where = [t.dashboard == slug]
    if day is not None:
        where.append(t.day == day)
    elif month is not None:
        where.append(t.day.like(f"{month}-%"))
    rows = list(await conn.execute(select(kpi_breach).where(*where).order_by(t.started_us, t.kpi, t.tile)))
    notes = await explained_days(conn, slug, [r.day for r in rows])
    return [breach_json(r, zone, notes.get((r.kpi, r.day), []), owners.get(r.kpi)) for r in rows]
