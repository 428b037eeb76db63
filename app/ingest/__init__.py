"""Ingest: parse, validate and de-duplicate posted events; group-commit them to the store.

Exception tree (each class carries its HTTP status and problem title; ``app.api.problems``
answers them)::

    IngestError                      carries an HTTP status and a problem title
     ├── BadRequest           400    empty body, malformed JSON / NDJSON line, bad Idempotency-Key
     ├── UnsupportedMedia     415    media type or content encoding not accepted
     ├── PayloadTooLarge      413    body, decompressed body or batch over its limit
     ├── RequestTimeout       408    the body arrived below the minimum rate (app.api.limits; closes)
     ├── InvalidEvents        422    one or more events invalid (lists every one)
     ├── EventConflict        409    an existing (source, id) posted with another body
     ├── RequestInFlight      409    a request with this Idempotency-Key is still being processed (Retry-After)
     └── Overloaded           503    the write queue is full (Retry-After)
"""

from __future__ import annotations

from typing import Any

from app.api.codes import RETRY_AFTER_IN_FLIGHT_S, RETRY_AFTER_OVERLOADED_S


class IngestError(Exception):
    """An ingest request that cannot be accepted; maps to one problem+json response.

    Args:
        detail: the problem's ``detail`` sentence.
        errors: the problem's ``errors`` list (``index``, ``line``, ``field``, ``message``), if any.
        headers: extra response headers.

    Attributes:
        status, title: the HTTP status and problem title of the class.
        retry_after_s: seconds the client should wait before retrying (``Retry-After``), or ``None``.
    """

    status = 400
    title = "Bad request"
    retry_after_s: float | None = None

    def __init__(
        self, detail: str, errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class BadRequest(IngestError):
    status, title = 400, "Malformed request body"


class UnsupportedMedia(IngestError):
    status, title = 415, "Unsupported media type"


class PayloadTooLarge(IngestError):
    status, title = 413, "Payload too large"


class RequestTimeout(IngestError):
    status, title = 408, "Request timeout"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})


class InvalidEvents(IngestError):
    status, title = 422, "Invalid events"


class EventConflict(IngestError):
    status, title = 409, "Event id conflict"


class RequestInFlight(IngestError):
    status, title = 409, "Request in flight"
    retry_after_s = RETRY_AFTER_IN_FLIGHT_S


class Overloaded(IngestError):
    status, title = 503, "Ingest overloaded"
    retry_after_s = RETRY_AFTER_OVERLOADED_S
