"""Rebuild: recompute stored rollups from the raw event log (the source of truth, DESIGN.md).

``rebuild`` recomputes the minute and hour partials, sketch bins and distinct-count registers of
the chosen measures over ``[since, until)``, one chunk of whole UTC hours
(``PULSEBOARD_REBUILD_CHUNK_S``) per transaction:

1. take the rollup tables' write lock: PostgreSQL ``LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE``
   (reads go on; an ingest transaction that wants to add partials waits for this chunk's commit,
   and one that holds them is waited for); SQLite: the chunk's first statement is a write, so it
   holds the single writer lock from before its first read;
2. delete the measures' rows of the chunk, read the chunk's raw events, roll them up with the
   same pure code as ingest (``app.metrics.rollup``) and upsert them (``app.store.writes``);
3. move the job's ``cursor_us`` to the chunk's end, in the same transaction, and commit.

So every read sees either the chunk before or after (never a half), an event acknowledged
during the rebuild is counted once (its partials wait for the chunk, or it is read by it), a
second run gives the same rows (idempotent), and a run killed at any point (``kill -9``) is
resumed at its cursor by the same command (a job is identified by its measures, their
definition hashes and its range).

Lifecycle measures and gauges (``app.metrics.lifecycle``) and paired gauges (``gauge_item``)
are not recomputed here: they are folds over items that span chunks.

Periods before the raw-retention horizon (``PULSEBOARD_RAW_RETENTION_DAYS``) are refused: the
events they were computed from are gone.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from app.metrics.calendar import HOUR_US
from app.metrics.pack import Pack
from app.metrics.partials import Partial
from app.metrics.rollup import EventRow, GaugeChange, PartialKey, rollup
from app.store.schema import definition_state, rebuild_job
from app.store.upserts import upsert_gauge_changes, upsert_partials

log = logging.getLogger(__name__)
DAY_US = 86_400_000_000
ROLLUP_TABLES = (
    "rollup_minute",
    "rollup_sketch_bin",
    "rollup_hour",
    "rollup_hour_sketch_bin",
    "rollup_distinct_minute",
    "rollup_distinct_hour",
)
_dims = msgspec.json.Decoder(dict[str, Any])


class RebuildRefused(ValueError):
    """A rebuild that cannot run as asked (before the retention horizon, unknown pack or
    measure, an empty or reversed range); ``str(exc)`` says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """What one rebuild recomputes: ``(pack, measure names)`` pairs, and ``(pack, gauge names)``
    pairs of paired (open/close) gauges."""

    parts: tuple[tuple[Pack, tuple[str, ...]], ...]
    gauges: tuple[tuple[Pack, tuple[str, ...]], ...] = ()

    @property
    def gauge_keys(self) -> list[str]:
        """Storage keys (``pack/gauge``) of every gauge, sorted."""
        return sorted(pack.gauge_key(g) for pack, names in self.gauges for g in names)

    @property
    def gauge_event_types(self) -> list[str]:
        """Event types the gauges read (opens and closes), sorted."""
        types: set[str] = set()
        for pack, names in self.gauges:
            for g in names:
                types.add(pack.gauges[g].open_type)
                types.update(pack.gauges[g].close_types)
        return sorted(types)

    @property
    def keys(self) -> list[str]:
        """Storage keys (``pack/measure``) of every measure, sorted."""
        return sorted(pack.measure_key(m) for pack, names in self.parts for m in names)

    @property
    def event_types(self) -> list[str]:
        """Event types the measures read, sorted."""
        return sorted({pack.measures[m].event_type for pack, names in self.parts for m in names})

    def fingerprint(self) -> str:
        """The measures and gauges with their definition hashes (a job resumes only under the same)."""
        measures = sorted((pack.measure_key(m), pack.measure_hash(m)) for pack, names in self.parts for m in names)
        gauges = sorted((pack.gauge_key(g), pack.gauge_hash(g)) for pack, names in self.gauges for g in names)
        return json.dumps([measures, gauges] if gauges else measures)


def select_measures(packs: dict[str, Pack], pack: str | None = None, measure: str | None = None) -> Target:
    """The measures and paired gauges of ``pack`` (default: every pack), or the one ``measure``
    (``name`` or ``pack/name``), that a rebuild recomputes (lifecycle measures and gauges are
    left out).

    Raises:
        RebuildRefused: an unknown pack or measure, or a measure two packs define without a pack.
    """
    if measure is not None and "/" in measure:
        qualifier, _, measure = measure.partition("/")
        if pack is not None and pack != qualifier:
            raise RebuildRefused(f"--measure {qualifier}/{measure} is not in --pack {pack}")
        pack = qualifier
    if pack is not None and pack not in packs:
        raise RebuildRefused(f"unknown pack {pack!r} (loaded: {', '.join(sorted(packs))})")
    chosen = [packs[pack]] if pack is not None else list(packs.values())
    parts: list[tuple[Pack, tuple[str, ...]]] = []
    for p in chosen:
        names = tuple(n for n, m in p.measures.items() if m.lifecycle is None and (measure is None or n == measure))
        if names:
            parts.append((p, names))
    gauges: list[tuple[Pack, tuple[str, ...]]] = []
    if measure is None:
        for p in chosen:
            names = tuple(n for n, g in p.gauges.items() if g.lifecycle is None)
            if names:
                gauges.append((p, names))
    if measure is not None:
        if not parts:
            raise RebuildRefused(f"unknown measure {measure!r}" + (f" in pack {pack!r}" if pack else ""))
        if len(parts) > 1:
            raise RebuildRefused(
                f"measure {measure!r} is defined by {' and '.join(p.origin for p, _ in parts)}: "
                f"name it {' or '.join(f'{p.name}/{measure}' for p, _ in parts)}"
            )
    return Target(tuple(parts), tuple(gauges))


@dataclass(slots=True)
class Summary:
    """What a rebuild did: the range, the chunks and events recomputed, whether it resumed an
    interrupted run (and from where), and the rows deleted and written."""

    job_id: str
    since_us: int
    until_us: int
    measures: int
    gauges: int = 0
    gauge_items: int = 0
    chunks: int = 0
    events: int = 0
    rows_deleted: int = 0
    rows_written: int = 0
    resumed_from_us: int | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The summary a person reads, one fact a line."""
        gauges = f"{self.gauges} gauge(s) ({self.gauge_items} items)"
        out = [
            f"rebuilt {self.measures} measure(s) over {_iso(self.since_us)} .. {_iso(self.until_us)}"
            + (f" and {gauges}" if self.gauges else "")
            if self.measures
            else f"rebuilt {gauges}",
            f"chunks: {self.chunks}, events read: {self.events}, rows deleted: {self.rows_deleted}, "
            f"rows written: {self.rows_written}",
        ]
        if self.resumed_from_us is not None:
            out.append(f"resumed interrupted job {self.job_id} at {_iso(self.resumed_from_us)}")
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        out.append(f"time: {self.seconds:.2f} s ({rate:,.0f} events/s)")
        return out


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def horizon_us(retention_days: float | None, now_us: int) -> int | None:
    """The raw-retention horizon: raw events before it may be deleted (``None``: kept forever)."""
    return None if retention_days is None else now_us - int(retention_days * DAY_US)


def _hour_floor(us: int) -> int:
    return us - us % HOUR_US


def _hour_ceil(us: int) -> int:
    return -(-us // HOUR_US) * HOUR_US


def plan_range(
    conn: Connection,
    target: Target,
    since_us: int | None,
    until_us: int | None,
    retention_days: float | None,
    now_us: int,
) -> tuple[int, int]:
    """``[since, until)`` of a rebuild in whole UTC hours: the given bounds (rounded out to the
    hour), by default the stored events of the measures' types (from the horizon on).

    Raises:
        RebuildRefused: ``since`` before the retention horizon (the message names it), or an
            empty or reversed range.
    """
    horizon = horizon_us(retention_days, now_us)
    if since_us is not None and horizon is not None and _hour_floor(since_us) < horizon:
        raise RebuildRefused(
            f"raw events are retained from {_iso(horizon)} (PULSEBOARD_RAW_RETENTION_DAYS={retention_days:g}): "
            f"a rebuild from {_iso(_hour_floor(since_us))} would recompute periods whose events may be gone; "
            f"use --since {_iso(_hour_ceil(horizon))} or later"
        )
    if since_us is None or until_us is None:
        types = target.event_types
        if not types:
            raise RebuildRefused("no measure to rebuild")
        marks = ", ".join("?" * len(types))
        sql = f"SELECT min(ts_us), max(ts_us) FROM event WHERE type IN ({marks})"
        params: tuple[Any, ...] = tuple(types)
        if horizon is not None:
            sql += " AND ts_us >= ?"
            params += (_hour_ceil(horizon),)
        if conn.dialect.paramstyle != "qmark":
            sql = sql.replace("?", "%s")
        lo, hi = conn.exec_driver_sql(sql, params).one()
        if since_us is None:
            since_us = _hour_ceil(horizon) if horizon is not None and lo is None else (lo if lo is not None else 0)
            if horizon is not None:
                since_us = max(since_us, _hour_ceil(horizon))
        if until_us is None:
            until_us = hi + 1 if hi is not None else since_us
    since_us, until_us = _hour_floor(since_us), _hour_ceil(until_us)
    if until_us <= since_us:
        raise RebuildRefused(f"nothing to rebuild: the range {_iso(since_us)} .. {_iso(until_us)} is empty")
    return since_us, until_us


def _lock(conn: Connection) -> None:
    """Hold the rollup tables' write lock until the transaction ends (see the module doc)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"LOCK TABLE {', '.join(ROLLUP_TABLES)} IN SHARE ROW EXCLUSIVE MODE")


def _sql(conn: Connection, sql: str) -> str:
    return sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


def rebuild_chunk(conn: Connection, target: Target, lo_us: int, hi_us: int) -> tuple[int, int, int]:
    """Recompute the measures of ``target`` over ``[lo_us, hi_us)`` (whole hours) inside the open
    transaction of ``conn``: lock, delete, read the raw events, roll up, write.

    Returns:
        ``(events read, rows deleted, rows written)``.
    """
    _lock(conn)
    keys = target.keys
    marks = ", ".join("?" * len(keys))
    deleted = 0
    for table in ROLLUP_TABLES:
        result = conn.exec_driver_sql(
            _sql(conn, f"DELETE FROM {table} WHERE measure IN ({marks}) AND bucket_us >= ? AND bucket_us < ?"),
            (*keys, lo_us, hi_us),
        )
        deleted += max(result.rowcount, 0)
    types = target.event_types
    rows = conn.exec_driver_sql(
        _sql(
            conn,
            f"SELECT type, ts_us, value, dims FROM event WHERE type IN ({', '.join('?' * len(types))}) "
            "AND ts_us >= ? AND ts_us < ?",
        ),
        (*types, lo_us, hi_us),
    ).all()
    events = [EventRow(t, ts, v, _dims.decode(d) if d else None) for t, ts, v, d in rows]
    partials: dict[PartialKey, Partial] = {}
    for pack, names in target.parts:
        only = replace(pack, measures={n: pack.measures[n] for n in names}, gauges={}, lifecycles={})
        rollup(only, events, partials)
    written = upsert_partials(conn, partials)
    return len(events), deleted, written


def rebuild_gauges(conn: Connection, target: Target, horizon: int | None) -> int:
    """Recompute the paired gauges of ``target`` whole (every item, from every retained raw
    event of their types) inside the open transaction of ``conn``, under ``gauge_item``'s write
    lock: an item's row folds events of any time (earliest open, earliest close), so it is
    rebuilt in one transaction, not per chunk.  Returns the rows written."""
    keys = target.gauge_keys
    if not keys:
        return 0
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE gauge_item IN SHARE ROW EXCLUSIVE MODE")
    conn.exec_driver_sql(
        _sql(conn, f"DELETE FROM gauge_item WHERE gauge IN ({', '.join('?' * len(keys))})"), tuple(keys)
    )
    types = target.gauge_event_types
    sql = f"SELECT type, ts_us, value, dims FROM event WHERE type IN ({', '.join('?' * len(types))})"
    params: tuple[Any, ...] = tuple(types)
    if horizon is not None:
        sql += " AND ts_us >= ?"
        params += (horizon,)
    rows = conn.exec_driver_sql(_sql(conn, sql), params).all()
    events = [EventRow(t, ts, v, _dims.decode(d) if d else None) for t, ts, v, d in rows]
    changes: list[GaugeChange] = []
    for pack, names in target.gauges:
        only = replace(pack, measures={}, gauges={n: pack.gauges[n] for n in names}, lifecycles={})
        rollup(only, events, None, changes)
    return upsert_gauge_changes(conn, changes)


def _open_job(conn: Connection, spec: str, since_us: int, until_us: int, now_us: int) -> tuple[str, int, bool]:
    """The unfinished job of ``spec`` (resumed at its cursor) or a new one: ``(id, cursor, resumed)``."""
    t = rebuild_job.c
    row = conn.execute(
        select(t.id, t.cursor_us).where(t.spec == spec, t.status == "running").order_by(t.started_us.desc()).limit(1)
    ).first()
    if row is not None:
        return row.id, int(row.cursor_us), True
    job_id = secrets.token_hex(16)
    conn.execute(
        rebuild_job.insert().values(
            id=job_id,
            spec=spec,
            status="running",
            since_us=since_us,
            until_us=until_us,
            cursor_us=since_us,
            events=0,
            chunks=0,
            started_us=now_us,
            updated_us=now_us,
        )
    )
    return job_id, since_us, False


def rebuild(
    engine: Engine,
    target: Target,
    since_us: int | None = None,
    until_us: int | None = None,
    *,
    now_us: int,
    retention_days: float | None = None,
    chunk_s: int = 3600,
    pause_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
    clock_s: Callable[[], float] = time.monotonic,
) -> Summary:
    """Recompute the rollups of ``target`` from raw events over ``[since_us, until_us)`` (UTC µs;
    default: every stored event of its types), ``chunk_s`` seconds per transaction, resuming an
    interrupted run of the same measures, definitions and range.

    Args:
        now_us: the present (UTC µs), for the retention horizon and the job's times.
        retention_days: ``PULSEBOARD_RAW_RETENTION_DAYS``.
        pause_s: a pause between chunks (lets a busy store breathe; 0 by default).
        progress: called as ``progress(done_us, total_us)`` after each committed chunk.

    Returns:
        the ``Summary``.

    Raises:
        RebuildRefused: see ``plan_range``.
    """
    started = clock_s()
    if not target.parts:  # paired gauges only: rebuilt whole, no chunks
        summary = Summary("", 0, 0, 0)
        with engine.begin() as conn:
            summary.gauge_items = rebuild_gauges(conn, target, horizon_us(retention_days, now_us))
        summary.gauges = len(target.gauge_keys)
        summary.seconds = clock_s() - started
        return summary
    with engine.begin() as conn:
        since_us, until_us = plan_range(conn, target, since_us, until_us, retention_days, now_us)
        spec = json.dumps({"measures": target.fingerprint(), "since_us": since_us, "until_us": until_us})
        job_id, cursor_us, resumed = _open_job(conn, spec, since_us, until_us, now_us)
    summary = Summary(job_id, since_us, until_us, len(target.keys), resumed_from_us=cursor_us if resumed else None)
    chunk_us = chunk_s * 1_000_000
    t = rebuild_job.c
    if progress is not None:
        progress(cursor_us - since_us, until_us - since_us)
    while cursor_us < until_us:
        hi = min(cursor_us + chunk_us, until_us)
        with engine.begin() as conn:
            events, deleted, written = rebuild_chunk(conn, target, cursor_us, hi)
            conn.execute(
                update(rebuild_job)
                .where(t.id == job_id)
                .values(
                    cursor_us=hi,
                    events=t.events + events,
                    chunks=t.chunks + 1,
                    updated_us=now_us,
                    status="done" if hi >= until_us else "running",
                    finished_us=now_us if hi >= until_us else None,
                )
            )
        summary.chunks += 1
        summary.events += events
        summary.rows_deleted += deleted
        summary.rows_written += written
        cursor_us = hi
        if progress is not None:
            progress(cursor_us - since_us, until_us - since_us)
        if pause_s > 0 and cursor_us < until_us:
            time.sleep(pause_s)
    if target.gauges:
        with engine.begin() as conn:
            summary.gauge_items = rebuild_gauges(conn, target, horizon_us(retention_days, now_us))
        summary.gauges = len(target.gauge_keys)
    summary.seconds = clock_s() - started
    log.info("rebuild %s: %s", job_id, "; ".join(summary.lines()))
    return summary


def stored_definitions(conn: Connection) -> dict[str, str]:
    """``KIND:pack/name`` -> the definition hash the stored rollups follow."""
    t = definition_state.c
    return {row.key: row.hash for row in conn.execute(select(t.key, t.hash))}


def record_definitions(conn: Connection, definitions: dict[str, str], now_us: int) -> None:
    """Store ``definitions`` as the hashes the rollups now follow (replacing those keys)."""
    if not definitions:
        return
    t = definition_state.c
    conn.execute(definition_state.delete().where(t.key.in_(sorted(definitions))))
    conn.execute(
        definition_state.insert(), [{"key": k, "hash": h, "updated_us": now_us} for k, h in definitions.items()]
    )


def changed_measures(packs: Iterable[Pack], stored: dict[str, str]) -> list[tuple[Pack, str, str | None, str]]:
    """Measures whose definition differs from the stored one: ``(pack, measure, old, new)``
    (``old`` is ``None`` for a measure never recorded).  Lifecycle measures are left out."""
    out = []
    for pack in packs:
        for name, m in pack.measures.items():
            if m.lifecycle is not None:
                continue
            new = pack.measure_hash(name)
            old = stored.get(f"measure:{pack.measure_key(name)}")
            if old != new:
                out.append((pack, name, old, new))
    return out


def changed_gauges(packs: Iterable[Pack], stored: dict[str, str]) -> list[tuple[Pack, str, str | None, str]]:
    """Paired gauges whose definition differs from the stored one: ``(pack, gauge, old, new)``."""
    out = []
    for pack in packs:
        for name, g in pack.gauges.items():
            if g.lifecycle is None and stored.get(f"gauge:{pack.gauge_key(name)}") != pack.gauge_hash(name):
                out.append((pack, name, stored.get(f"gauge:{pack.gauge_key(name)}"), pack.gauge_hash(name)))
    return out


def target_of(
    changes: Sequence[tuple[Pack, str, str | None, str]], gauges: Sequence[tuple[Pack, str, str | None, str]] = ()
) -> Target:
    """The ``Target`` of the measures in ``changes`` and the gauges in ``gauges``."""

    def grouped(items: Sequence[tuple[Pack, str, str | None, str]]) -> tuple[tuple[Pack, tuple[str, ...]], ...]:
        by_pack: dict[str, tuple[Pack, list[str]]] = {}
        for pack, name, _, _ in items:
            by_pack.setdefault(pack.name, (pack, []))[1].append(name)
        return tuple((p, tuple(names)) for p, names in by_pack.values())

    return Target(grouped(changes), grouped(gauges))
