"""The write path: one transaction stores raw events, their rollup partials and gauge items.

``write_group`` is called by the ingest group-commit writer with the events of
several HTTP requests, on the writer's own thread with a synchronous connection: the
whole transaction is one hand-off from the event loop, not one per statement.
Deduplication by ``(source, event_id)`` costs one indexed query per source (the ids as
one array parameter on PostgreSQL, chunks of ``KEY_CHUNK`` on SQLite), never a round trip
per event.  Only events actually inserted are rolled up, so a retry never counts twice.
Rows go to the driver as tuples: SQLite ``executemany``; PostgreSQL binary ``COPY`` (events
straight into ``event``, rollup rows through a temp table and one upsert per table).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import select
from sqlalchemy.engine import Connection

from app.metrics.pack import Pack
from app.metrics.partials import Partial
from app.metrics.rollup import OTHER, DimensionCap, EventRow, GaugeChange, PartialKey, rollup
from app.store.lifecycles import apply_lifecycles
from app.store.schema import idempotency_key
from app.store.upserts import check_finite, insert_events, pg_driver, pg_errors, upsert_gauge_changes, upsert_partials

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
    failure: Exception | None = None  # set by the writer when this request alone failed (its answer)


@dataclass(slots=True)
class GroupResult:
    """Outcomes per request, and the partials written (for live tiles)."""

    outcomes: list[RequestOutcome]
    inserted: int = 0
    packs_touched: set[str] = field(default_factory=set)


def _existing_hashes(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """Stored body hashes of ``keys``: one indexed query per source (and per chunk of
    ``KEY_CHUNK`` ids on SQLite; PostgreSQL takes the ids as one array parameter)."""
    by_source: dict[str, list[str]] = {}
    for source, event_id in keys:
        by_source.setdefault(source, []).append(event_id)
    found: dict[tuple[str, str], bytes] = {}
    for source, ids in by_source.items():
        if conn.dialect.name == "postgresql":
            sql = "SELECT event_id, body_hash FROM event WHERE source = %s AND event_id = ANY(%s)"
            with pg_errors(sql), pg_driver(conn).cursor() as cur:
                cur.execute(sql, (source, ids))
                rows = cur.fetchall()
        else:
            rows = []
            for i in range(0, len(ids), KEY_CHUNK):
                chunk = ids[i : i + KEY_CHUNK]
                rows += conn.exec_driver_sql(
                    "SELECT event_id, body_hash FROM event WHERE source = ? AND event_id IN "
                    f"({', '.join('?' * len(chunk))})",
                    (source, *chunk),
                ).all()
        for event_id, body_hash in rows:
            found[(source, event_id)] = bytes(body_hash)
    return found


# Set-based writes.  Rows are built once as tuples and handed to the driver: SQLite gets one
# ``executemany`` per table (an ``INSERT ... ON CONFLICT DO UPDATE`` for the additive rollup
# tables); PostgreSQL gets binary ``COPY`` (events straight into ``event``, rollup rows into a
# session temp table, then one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table, in key
# order so that concurrent instances take row locks in the same order).


def _remembered(
    conn: Connection, records: Sequence[IdempotencyRecord]
) -> dict[tuple[str, str], tuple[int, str, bytes]]:
    """Stored answers of these idempotency keys: ``(owner, key) -> (status, body, request hash)``."""
    found: dict[tuple[str, str], tuple[int, str, bytes]] = {}
    t = idempotency_key.c
    for rec in records:
        row = (
            conn.execute(select(t.status, t.body, t.request_hash).where(t.owner == rec.owner, t.key == rec.key))
        ).first()
        if row is not None:
            found[(rec.owner, rec.key)] = (row.status, row.body, bytes(row.request_hash))
    return found


def load_dimension_values(conn: Connection, cap: DimensionCap) -> None:
    """Fill ``cap.values`` with the dimension values that have rollup rows of their own: one
    ``DISTINCT`` over the hour rollups' keys (``measure`` is ``pack/measure``) and the gauge items'."""
    rows = conn.exec_driver_sql(
        "SELECT DISTINCT measure, dim_key FROM rollup_hour WHERE dim_key <> '' "
        "UNION SELECT DISTINCT gauge, dim_key FROM gauge_item WHERE dim_key <> ''"
    ).all()
    for key, dim_key in rows:
        pack = str(key).split("/", 1)[0]
        name, _, text = str(dim_key).partition("=")
        if text == OTHER:
            cap.overflowed.add((pack, name))
        else:
            cap.add_known(pack, name, text)
    cap.loaded = True


def outcome_answer(outcome: RequestOutcome) -> tuple[int, str]:
    """HTTP status and JSON body a request's outcome is answered with (remembered for its key)."""
    if outcome.conflict is not None:
        index, source, event_id = outcome.conflict
        return 409, msgspec.json.encode(
            {
                "type": "about:blank",
                "title": "Event id conflict",
                "status": 409,
                "detail": f"event {index}: (source={source!r}, id={event_id!r}) was stored before with a different "
                "body; nothing from this request was stored",
                "errors": [{"index": index, "field": "id", "message": "same (source, id), different body"}],
            }
        ).decode()
    return 202, msgspec.json.encode({"accepted": outcome.accepted, "duplicates": outcome.duplicates}).decode()


def write_group(
    conn: Connection,
    requests: Sequence[Sequence[NewEvent]],
    packs: Iterable[Pack],
    received_us: int,
    idempotency: Sequence[IdempotencyRecord | None] | None = None,
    cap: DimensionCap | None = None,
) -> GroupResult:
    """Store the events of several requests in the open transaction of ``conn``.

    With ``cap``, rolled-up dimension values past its cardinality cap roll up as ``__other__``
    (loaded from the store at the first call, ``load_dimension_values``).

    Each request is all-or-nothing: a request with a conflicting event stores
    nothing and gets ``conflict`` set; the others proceed.  The caller commits.

    Raises:
        sqlalchemy.exc.IntegrityError: when another writer inserted one of the
            keys between our check and insert; the caller rolls back and retries.
    """
    keys = list({(e.source, e.event_id) for req in requests for e in req})
    seen = _existing_hashes(conn, keys)
    answered = _remembered(conn, [rec for rec in (idempotency or ()) if rec is not None])
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

    if cap is not None and not cap.loaded:
        load_dimension_values(conn, cap)
    result = GroupResult(outcomes, inserted=len(to_insert))
    remembered = [
        {
            "owner": rec.owner,
            "key": rec.key,
            "request_hash": rec.request_hash,
            "status": status,
            "body": body,
            "created_us": received_us,
        }
        for rec, outcome in zip(idempotency or (), outcomes, strict=False)
        if rec is not None and outcome.remembered is None
        for status, body in [outcome_answer(outcome)]
    ]
    if remembered:
        conn.execute(idempotency_key.insert(), remembered)
    if not to_insert:
        return result
    insert_events(
        conn,
        [(e.source, e.event_id, e.type, e.ts_us, e.value, e.dims_json, e.body_hash, received_us) for e in to_insert],
    )
    rows = [EventRow(e.type, e.ts_us, e.value, e.dims) for e in to_insert]
    all_partials: dict[PartialKey, Partial] = {}
    all_changes: list[GaugeChange] = []
    for pack in packs:
        before = (len(all_partials), len(all_changes))
        rollup(pack, rows, all_partials, all_changes, cap)  # measure and gauge keys carry the pack's name
        if (len(all_partials), len(all_changes)) != before:
            result.packs_touched.add(pack.name)
    # The lifecycle deltas join the group's partials: one upsert per rollup table and transaction
    # (on PostgreSQL a second upsert of a table in one transaction would re-read its staged rows).
    result.packs_touched |= apply_lifecycles(conn, packs, rows, all_partials)
    check_finite(all_partials)
    upsert_partials(conn, all_partials)
    upsert_gauge_changes(conn, all_changes)
    return result
