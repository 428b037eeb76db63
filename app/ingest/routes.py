"""``POST /api/v1/events`` (CONTRACT §2)."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import delete, select

from app.api.deps import RuntimeDep
from app.api.problems import PROBLEM_MEDIA_TYPE
from app.auth import Forbidden, RateLimited
from app.auth.deps import SCOPE_KEY, Access, require
from app.ingest import BadRequest, InvalidEvents, PayloadTooLarge, RequestInFlight, UnsupportedMedia
from app.ingest.parse import Limits, event_schema, parse_events
from app.metrics.calendar import to_us
from app.metrics.pack import Pack
from app.metrics.rollup import oversized_dims
from app.runtime import Runtime
from app.store.schema import idempotency_key
from app.store.writes import IdempotencyRecord, NewEvent

router = APIRouter()
ACCEPTED_TYPES = ("application/json", "application/x-ndjson")
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotency_key_of(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, validated.

    Raises:
        BadRequest: empty, over 255 characters, or with non-visible characters (BAD_INPUTS 21).
    """
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    if not IDEMPOTENCY_KEY_RE.match(raw):
        raise BadRequest("Idempotency-Key must be 1-255 visible ASCII characters (no spaces or control characters)")
    return raw


async def remembered_answer(runtime: Runtime, owner: str, key: str, request_hash: bytes) -> Response | None:
    """The stored answer of an earlier request with this key, if it is still kept.

    Raises:
        InvalidEvents: the key was used with a different request body (422).
    """
    oldest = to_us(runtime.clock.now()) - int(runtime.settings.idempotency_ttl_s * 1e6)
    t = idempotency_key.c
    async with runtime.engine.connect() as conn:
        row = (await conn.execute(select(idempotency_key).where(t.owner == owner, t.key == key))).first()
    if row is not None and row.created_us < oldest:  # expired: the key may be used afresh
        async with runtime.engine.begin() as conn:
            await conn.execute(delete(idempotency_key).where(t.owner == owner, t.key == key, t.created_us < oldest))
        row = None
    if row is None:
        return None
    if bytes(row.request_hash) != request_hash:
        raise InvalidEvents(
            "this Idempotency-Key was used before with a different request body",
            errors=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
        )
    return _replayed(row.status, row.body)


def check_binding(access: Access, events: list[NewEvent], packs: Mapping[str, Pack] | None = None) -> None:
    """An ingest key posts only its own source (and its event types, when bound), and, when bound
    to packs (issue 10 item 18), only events whose type one of those packs reads.

    ``packs``: the loaded packs by name (a bound pack no longer loaded reads no type).

    Raises:
        Forbidden: listing the first events that fall outside the binding (the whole request is
            refused: nothing of it is stored).
    """
    key = access.key
    if key.scope != "ingest":
        return
    bad = [
        (i, e)
        for i, e in enumerate(events)
        if e.source != key.source or (key.event_types is not None and e.type not in key.event_types)
    ]
    if bad:
        i, e = bad[0]
        what = f"source {e.source!r}" if e.source != key.source else f"type {e.type!r}"
        raise Forbidden(
            f"{len(bad)} event(s) outside this key's binding (source {key.source!r}"
            + (f", types {list(key.event_types)}" if key.event_types else "")
            + f"); event {i} has {what}"
        )
    if key.packs is not None:
        loaded = packs or {}
        fed = {t for name in key.packs if name in loaded for t in loaded[name].event_types}
        outside = [i for i, e in enumerate(events) if e.type not in fed]
        if outside:
            i = outside[0]
            raise Forbidden(
                f"{len(outside)} event(s) of types no pack of this key reads (packs {list(key.packs)}); "
                f"event {i} has type {events[i].type!r}; nothing was stored"
            )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing more than ``max_bytes`` on the wire and after decompression.

    Raises:
        PayloadTooLarge: ``Content-Length`` or the streamed body over the limit
            (checked before and while reading), or gzip expanding past it.
        UnsupportedMedia: a ``Content-Encoding`` other than identity or gzip.
        BadRequest: a corrupt or incomplete gzip stream, or trailing bytes (``gunzip``).
    """
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMedia(f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"body of {length} bytes is over the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"body is over the limit of {max_bytes} bytes", headers={"Connection": "close"})
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding == "gzip":
        body = gunzip(body, max_bytes)
    return body


GZIP_MAGIC = b"\x1f\x8b"


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Every member of a gzip body (RFC 1952 §2.2: a gzip file is a series of members), each
    complete: its final deflate block, CRC-32 and length checked by zlib.  Nothing is decoded
    partially, so nothing is acknowledged that was not sent whole (issue 10 item 6).

    Raises:
        BadRequest: a member is corrupt, or ends before its final block and trailer (a flushed
            but unfinished stream, a cut trailer), or bytes that are not a gzip member follow
            the last one.
        PayloadTooLarge: the members together expand past ``max_bytes``.
    """
    out: list[bytes] = []
    total = 0
    rest = data
    member = 0
    while True:
        member += 1
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            piece = inflater.decompress(rest, max_bytes - total + 1)
        except zlib.error as exc:
            raise BadRequest(f"corrupt gzip body (member {member}): {exc}; nothing was stored") from None
        total += len(piece)
        if total > max_bytes or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"gzip body expands past the limit of {max_bytes} bytes")
        if not inflater.eof:
            raise BadRequest(
                f"gzip body ends inside member {member} (no final block, CRC-32 or length): the stream is "
                "incomplete; nothing was stored"
            )
        out.append(piece)
        rest = inflater.unused_data
        if not rest:
            return b"".join(out)
        if rest[:2] != GZIP_MAGIC:
            raise BadRequest(f"{len(rest)} bytes after gzip member {member} are not a gzip member; nothing was stored")


_JSON_BODY_SCHEMA, _NDJSON_BODY_SCHEMA = event_schema()
EVENTS_REQUEST_BODY = {
    "required": True,
    "description": "One event object or a JSON array of them (`application/json`), or NDJSON: one event "
    "object a line (`application/x-ndjson`, shown here as the sequence of its lines). At most "
    "`PULSEBOARD_MAX_BATCH_EVENTS` events, `PULSEBOARD_MAX_BODY_BYTES` bytes (also after gzip). "
    "The schema is generated from the parser's own types (`app/ingest/parse.py`); limits shown are the defaults.",
    "content": {
        "application/json": {"schema": _JSON_BODY_SCHEMA},
        "application/x-ndjson": {"schema": _NDJSON_BODY_SCHEMA},
    },
}
ACCEPTED_SCHEMA = {
    "type": "object",
    "required": ["accepted", "duplicates"],
    "additionalProperties": False,
    "properties": {"accepted": {"type": "integer", "minimum": 0}, "duplicates": {"type": "integer", "minimum": 0}},
}
IDEMPOTENCY_KEY_PARAM = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "replays of the same key and body get the stored answer (kept `PULSEBOARD_IDEMPOTENCY_TTL_S`)",
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_RE.pattern},
}


@router.post(
    "/api/v1/events",
    status_code=202,
    summary="Post events (JSON object, JSON array or NDJSON)",
    responses={
        202: {"content": {"application/json": {"schema": ACCEPTED_SCHEMA}}},
        400: {},
        401: {},
        403: {},
        409: {},
        413: {},
        415: {},
        422: {},
        429: {},
        503: {},
    },
    # The body is read and parsed by msgspec below, not by FastAPI: its schema (generated from the parser's
    # types) is declared here.
    openapi_extra={SCOPE_KEY: ["ingest"], "requestBody": EVENTS_REQUEST_BODY, "parameters": [IDEMPOTENCY_KEY_PARAM]},
)
async def post_events(
    request: Request, runtime: RuntimeDep, access: Annotated[Access, Depends(require("ingest"))]
) -> Response:
    """Store events all-or-nothing and answer ``202 {"accepted": N, "duplicates": D}`` after commit.

    ``accepted`` counts events newly stored; ``duplicates`` those whose
    ``(source, id)`` was stored before with the same body (they change nothing).
    Needs an ``ingest`` key; events without ``source`` get the key's source, and an
    event of another source (or of a type the key is not bound to) refuses the request (403).

    Raises:
        RateLimited: the key is over its rate (429).
        IngestError: any refusal of ``app.ingest``'s tree (400, 409, 413, 415, 422, 503).
        Forbidden: an event outside the key's binding (403).
        StoreUnavailable: the database failed or did not answer (503).
    """
    settings = runtime.settings
    owner = access.key.id
    wait_s = runtime.rate_limiter.try_acquire(owner)
    if wait_s:
        raise RateLimited(
            f"this key is over {settings.ingest_rate_per_key_per_s:g} requests a second; "
            "retry after the indicated delay",
            wait_s,
        )
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise UnsupportedMedia(
            f"Content-Type {media_type or '(none)'!r} is not accepted; use {' or '.join(ACCEPTED_TYPES)}"
        )
    key = idempotency_key_of(request)
    body = await read_body(request, settings.max_body_bytes)
    record = None
    if key is not None:
        request_hash = hashlib.sha256(b"\0".join((media_type.encode(), body))).digest()
        replay = await remembered_answer(runtime, owner, key, request_hash)
        if replay is not None:
            return replay
        slot = (owner, key)
        if slot in runtime.idempotency.in_flight:
            raise RequestInFlight(
                "a request with this Idempotency-Key is still being processed; retry after it finishes"
            )
        runtime.idempotency.in_flight.add(slot)
        record = IdempotencyRecord(owner, key, request_hash)
    limits = Limits(
        now_us=to_us(runtime.clock.now()),
        max_future_skew_s=settings.max_future_skew_s,
        max_lateness_s=settings.max_lateness_s,
        max_string_chars=settings.max_string_chars,
        max_dims=settings.max_dims,
        max_batch_events=settings.max_batch_events,
        default_source=access.key.source or "default",
        max_abs_value=settings.max_abs_value,
        min_ts_us=to_us(settings.min_event_time),
        max_ts_us=to_us(settings.max_event_time),
    )
    try:
        events = parse_events(body, media_type, limits)
        oversized = oversized_dims(runtime.packs.values(), events)
        if oversized:
            raise InvalidEvents(
                f"{len({p['index'] for p in oversized})} of {len(events)} events are invalid; nothing was stored",
                errors=oversized,
            )
        check_binding(access, events, runtime.packs)
        outcome = await runtime.writer.submit(events, record)
        if runtime.hub.feeds is not None and outcome.conflict is None:  # feed silence: these sources are alive
            runtime.hub.feeds.arrived(
                {e.source for e in events}, to_us(runtime.clock.now()), to_us(runtime.view_clock.now())
            )
    finally:
        if record is not None:
            runtime.idempotency.in_flight.discard((record.owner, record.key))
    if outcome.remembered is not None:  # a retry raced its first request, which committed
        status, stored_body, stored_hash = outcome.remembered
        if record is not None and stored_hash != record.request_hash:
            raise InvalidEvents(
                "this Idempotency-Key was used before with a different request body",
                errors=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
            )
        return _replayed(status, stored_body)
    return JSONResponse({"accepted": outcome.accepted, "duplicates": outcome.duplicates}, status_code=202)


def _replayed(status: int, body: str | bytes) -> Response:
    """A stored answer, sent again for a retry with the same Idempotency-Key."""
    media = "application/json" if status < 400 else PROBLEM_MEDIA_TYPE
    return Response(body, status_code=status, media_type=media, headers={"Idempotent-Replayed": "true"})
