"""The write path: one transaction stores raw events, their rollup partials and gauge items.

``write_group`` is called by the ingest group-commit writer with the events of
several HTTP requests.  Deduplication by ``(source, event_id)`` costs one
``SELECT ... WHERE (source, event_id) IN (...)`` per chunk of keys, never a
round trip per event.  Only events actually inserted are rolled up, so a retry
never counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence

import msgspec
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.pack import Pack
from app.metrics.partials import Partial
from app.metrics.rollup import EventRow, GaugeChange, PartialKey, merge_into, rollup
from app.metrics.sketch import Sketch
from app.store.schema import event, gauge_item, idempotency_key, rollup_minute

KEY_CHUNK = 1000


class IdempotencyRecord(NamedTuple):
    """An ``Idempotency-Key`` to remember with the answer of its request (same transaction)."""

    owner: str
    key: str
    request_hash: bytes


class NewEvent(NamedTuple):
    """A validated event ready to store.  ``ts_us`` is UTC epoch µs; ``body_hash`` 16 bytes."""

    source: str
    event_id: str
    type: str
    ts_us: int
    value: float | None
    dims: dict[str, Any] | None
    dims_json: str | None
    body_hash: bytes


@dataclass(slots=True)
class RequestOutcome:
    """What happened to one request's events in a group.

    ``conflict`` holds ``(index, source, event_id)`` of the first event whose
    ``(source, id)`` exists with a different body; then nothing of it was stored.
    """

    accepted: int = 0
    duplicates: int = 0
    conflict: tuple[int, str, str] | None = None
    max_ts_us: int | None = None
    remembered: tuple[int, str, bytes] | None = None  # (status, body, request hash) stored for its key


@dataclass(slots=True)
class GroupResult:
    """Outcomes per request, and the partials written (for live tiles)."""

    outcomes: list[RequestOutcome]
    inserted: int = 0
    packs_touched: set[str] = field(default_factory=set)


async def _existing_hashes(conn: AsyncConnection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """Stored body hashes of ``keys``: one indexed ``source = ? AND event_id IN (...)`` query per
    source and chunk (row-value ``IN`` lists defeat PostgreSQL's index)."""
    by_source: dict[str, list[str]] = {}
    for source, event_id in keys:
        by_source.setdefault(source, []).append(event_id)
    found: dict[tuple[str, str], bytes] = {}
    for source, ids in by_source.items():
        for i in range(0, len(ids), KEY_CHUNK):
            rows = await conn.execute(
                select(event.c.event_id, event.c.body_hash).where(
                    event.c.source == source, event.c.event_id.in_(ids[i:i + KEY_CHUNK]))
            )
            for event_id, body_hash in rows:
                found[(source, event_id)] = bytes(body_hash)
    return found


def _insert(conn: AsyncConnection, table):
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


def _least(conn: AsyncConnection, a, b):
    name = "least" if conn.dialect.name == "postgresql" else "min"
    return getattr(func, name)(func.coalesce(a, b), func.coalesce(b, a))


def _greatest(conn: AsyncConnection, a, b):
    name = "greatest" if conn.dialect.name == "postgresql" else "max"
    return getattr(func, name)(func.coalesce(a, b), func.coalesce(b, a))


async def upsert_partials(conn: AsyncConnection, partials: dict[PartialKey, Partial]) -> None:
    """Add ``partials`` to the stored minute partials (count/sum add, min/max, sketch merge)."""
    if not partials:
        return
    sketched = [k for k, p in partials.items() if p.sketch is not None]
    if sketched:
        # Sketches merge in Python: read the stored ones under a row lock.
        merged = {k: partials[k].sketch.copy() for k in sketched}  # type: ignore[union-attr]
        # One range query per measure (index-friendly), filtered to the wanted keys here.
        t = rollup_minute.c
        by_measure: dict[str, list[PartialKey]] = {}
        for key in sketched:
            by_measure.setdefault(key[0], []).append(key)
        for measure, keys in by_measure.items():
            stmt = select(t.measure, t.dim_key, t.bucket_us, t.sketch).where(
                t.measure == measure, t.dim_key.in_({k[1] for k in keys}),
                t.bucket_us >= min(k[2] for k in keys), t.bucket_us <= max(k[2] for k in keys))
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            for m, d, b, blob in await conn.execute(stmt):
                if blob is not None and (m, d, b) in merged:
                    merged[(m, d, b)].merge(Sketch.from_bytes(bytes(blob)))
    else:
        merged = {}
    rows = [
        {"measure": m, "dim_key": d, "bucket_us": b, "count": p.count, "sum": p.sum, "min": p.min, "max": p.max,
         "sketch": merged[(m, d, b)].to_bytes() if (m, d, b) in merged else None}
        for (m, d, b), p in partials.items()
    ]
    ins = _insert(conn, rollup_minute)
    ex = ins.excluded
    t = rollup_minute.c
    stmt = ins.on_conflict_do_update(
        index_elements=[t.measure, t.dim_key, t.bucket_us],
        set_={
            "count": t.count + ex.count,
            "sum": t.sum + ex.sum,
            "min": _least(conn, t.min, ex.min),
            "max": _greatest(conn, t.max, ex.max),
            "sketch": func.coalesce(ex.sketch, t.sketch),
        },
    )
    await conn.execute(stmt, rows)


async def upsert_gauge_changes(conn: AsyncConnection, changes: Iterable[GaugeChange]) -> None:
    """Record opens and closes of gauge items: the earliest open and the earliest close per
    item (an incident resolved and later closed stops counting at its resolution)."""
    merged: dict[tuple[str, str, str], list[int | None]] = {}
    for ch in changes:
        slot = merged.setdefault((ch.gauge_key, ch.dim_key, ch.item_key), [None, None])
        idx = 0 if ch.kind == "open" else 1
        current = slot[idx]
        if current is None or ch.ts_us < current:
            slot[idx] = ch.ts_us
    if not merged:
        return
    rows = [{"gauge": g, "dim_key": d, "item_key": i, "opened_us": o, "closed_us": c}
            for (g, d, i), (o, c) in merged.items()]
    ins = _insert(conn, gauge_item)
    ex = ins.excluded
    t = gauge_item.c
    stmt = ins.on_conflict_do_update(
        index_elements=[t.gauge, t.dim_key, t.item_key],
        set_={"opened_us": _least(conn, t.opened_us, ex.opened_us),
              "closed_us": _least(conn, t.closed_us, ex.closed_us)},
    )
    await conn.execute(stmt, rows)


async def _remembered(conn: AsyncConnection, records: Sequence[IdempotencyRecord]) -> dict[tuple[str, str], tuple[int, str, bytes]]:
    """Stored answers of these idempotency keys: ``(owner, key) -> (status, body, request hash)``."""
    found: dict[tuple[str, str], tuple[int, str, bytes]] = {}
    t = idempotency_key.c
    for rec in records:
        row = (await conn.execute(select(t.status, t.body, t.request_hash).where(
            t.owner == rec.owner, t.key == rec.key))).first()
        if row is not None:
            found[(rec.owner, rec.key)] = (row.status, row.body, bytes(row.request_hash))
    return found


def outcome_answer(outcome: RequestOutcome) -> tuple[int, str]:
    """HTTP status and JSON body a request's outcome is answered with (remembered for its key)."""
    if outcome.conflict is not None:
        index, source, event_id = outcome.conflict
        return 409, msgspec.json.encode({
            "type": "about:blank", "title": "Event id conflict", "status": 409,
            "detail": f"event {index}: (source={source!r}, id={event_id!r}) was stored before with a different "
                      "body; nothing from this request was stored",
            "errors": [{"index": index, "field": "id", "message": "same (source, id), different body"}]}).decode()
    return 202, msgspec.json.encode({"accepted": outcome.accepted, "duplicates": outcome.duplicates}).decode()


async def write_group(conn: AsyncConnection, requests: Sequence[Sequence[NewEvent]], packs: Iterable[Pack],
                      received_us: int, idempotency: Sequence[IdempotencyRecord | None] | None = None) -> GroupResult:
    """Store the events of several requests in the open transaction of ``conn``.

    Each request is all-or-nothing: a request with a conflicting event stores
    nothing and gets ``conflict`` set; the others proceed.  The caller commits.

    Raises:
        sqlalchemy.exc.IntegrityError: when another writer inserted one of the
            keys between our check and insert; the caller rolls back and retries.
    """
    keys = list({(e.source, e.event_id) for req in requests for e in req})
    seen = await _existing_hashes(conn, keys)
    answered = await _remembered(conn, [rec for rec in (idempotency or ()) if rec is not None])
    outcomes: list[RequestOutcome] = []
    to_insert: list[NewEvent] = []
    for position, req in enumerate(requests):
        outcome = RequestOutcome()
        rec = idempotency[position] if idempotency else None
        if rec is not None and (rec.owner, rec.key) in answered:
            # A retry whose first request committed while this one waited: answer as the first did.
            outcome.remembered = answered[(rec.owner, rec.key)]
            outcomes.append(outcome)
            continue
        local: dict[tuple[str, str], bytes] = {}
        fresh: list[NewEvent] = []
        for index, ev in enumerate(req):
            key = (ev.source, ev.event_id)
            known = local.get(key) or seen.get(key)
            if known is not None:
                if known != ev.body_hash:
                    outcome.conflict = (index, ev.source, ev.event_id)
                    break
                outcome.duplicates += 1
                continue
            local[key] = ev.body_hash
            fresh.append(ev)
        if outcome.conflict is None:
            seen.update(local)
            to_insert.extend(fresh)
            outcome.accepted = len(fresh)
            outcome.duplicates = len(req) - len(fresh)
            outcome.max_ts_us = max((e.ts_us for e in req), default=None)
        else:
            outcome.duplicates = 0
        outcomes.append(outcome)

    result = GroupResult(outcomes, inserted=len(to_insert))
    remembered = [
        {"owner": rec.owner, "key": rec.key, "request_hash": rec.request_hash, "status": status, "body": body,
         "created_us": received_us}
        for rec, outcome in zip(idempotency or (), outcomes) if rec is not None and outcome.remembered is None
        for status, body in [outcome_answer(outcome)]
    ]
    if remembered:
        await conn.execute(idempotency_key.insert(), remembered)
    if not to_insert:
        return result
    await conn.execute(
        event.insert(),
        [{"source": e.source, "event_id": e.event_id, "type": e.type, "ts_us": e.ts_us, "value": e.value,
          "dims": e.dims_json, "body_hash": e.body_hash, "received_us": received_us} for e in to_insert],
    )
    rows = [EventRow(e.type, e.ts_us, e.value, e.dims) for e in to_insert]
    all_partials: dict[PartialKey, Partial] = {}
    all_changes: list[GaugeChange] = []
    for pack in packs:
        partials, changes = rollup(pack, rows)
        if partials or changes:
            result.packs_touched.add(pack.name)
        merge_into(all_partials, partials)
        all_changes.extend(changes)
    await upsert_partials(conn, all_partials)
    await upsert_gauge_changes(conn, all_changes)
    return result
