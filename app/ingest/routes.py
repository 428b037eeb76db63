"""``POST /api/v1/events`` (CONTRACT §2)."""

from __future__ import annotations

import zlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import RuntimeDep
from app.ingest import BadRequest, IngestError, PayloadTooLarge, UnsupportedMedia
from app.ingest.parse import Limits, parse_events
from app.metrics.calendar import to_us
from app.problems import problem
from app.store import StoreUnavailable

router = APIRouter()
ACCEPTED_TYPES = ("application/json", "application/x-ndjson")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing more than ``max_bytes`` on the wire and after decompression.

    Raises:
        PayloadTooLarge: ``Content-Length`` or the streamed body over the limit
            (checked before and while reading), or gzip expanding past it.
        UnsupportedMedia: a ``Content-Encoding`` other than identity or gzip.
        BadRequest: a corrupt gzip stream.
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
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, max_bytes + 1)
        except zlib.error as exc:
            raise BadRequest(f"corrupt gzip body: {exc}") from None
        if len(body) > max_bytes or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"gzip body expands past the limit of {max_bytes} bytes")
    return body


@router.post(
    "/api/v1/events",
    status_code=202,
    summary="Post events (JSON object, JSON array or NDJSON)",
    responses={400: {}, 409: {}, 413: {}, 415: {}, 422: {}, 503: {}},
)
async def post_events(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Store events all-or-nothing and answer ``202 {"accepted": N, "duplicates": D}`` after commit.

    ``accepted`` counts events newly stored; ``duplicates`` those whose
    ``(source, id)`` was stored before with the same body (they change nothing).
    """
    settings = runtime.settings
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if media_type not in ACCEPTED_TYPES:
            raise UnsupportedMedia(
                f"Content-Type {media_type or '(none)'!r} is not accepted; use {' or '.join(ACCEPTED_TYPES)}")
        body = await read_body(request, settings.max_body_bytes)
        limits = Limits(
            now_us=to_us(runtime.clock.now()),
            max_future_skew_s=settings.max_future_skew_s,
            max_lateness_s=settings.max_lateness_s,
            max_string_chars=settings.max_string_chars,
            max_dims=settings.max_dims,
            max_batch_events=settings.max_batch_events,
        )
        events = parse_events(body, media_type, limits)
        outcome = await runtime.writer.submit(events)
    except IngestError as exc:
        return problem(exc.status, exc.title, exc.detail, exc.errors, exc.headers or None)
    except StoreUnavailable as exc:
        return problem(503, "Store unavailable", str(exc), headers={"Retry-After": "2"})
    return JSONResponse({"accepted": outcome.accepted, "duplicates": outcome.duplicates}, status_code=202)
