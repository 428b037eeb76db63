"""RFC 9457 problem details responses, and the one handler per exception tree that makes every
error one.

Routes raise; they do not build error answers.  ``install_handlers`` maps each tree to its
answers, here and nowhere else:

- ``HTTPException``: its status (404 for an unknown name, ...), titled by the status;
- ``RequestValidationError``: 422, ``errors`` naming every invalid parameter or body field;
- ``app.auth.AuthError``: 401 / 403 / 404 / 409 / 422 / 429 (``AUTH_ANSWERS``);
- ``app.ingest.IngestError``: the status and title each of its classes carries;
- ``app.snapshots.SnapshotError``: 404 / 409 / 422 (``SNAPSHOT_ANSWERS``; a period outside the supported
  calendar is 422);
- ``app.query.kpis.QueryError``: 422 naming the query parameter;
- ``app.store.StoreUnavailable``, a lost database connection, a pool timeout: 503 + ``Retry-After``;
- anything else: 500 problem+json without internal detail (the traceback goes to the log).

The same handlers answer a WebSocket handshake (as an HTTP denial response, before the socket
opens); an error after the socket opened closes it with 1011.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ExceptionHandler
from starlette.websockets import WebSocket, WebSocketState

from app.api.codes import CLOSE_INTERNAL_ERROR, RETRY_AFTER, RETRY_AFTER_STORE_S, retry_after
from app.api.jsonresp import FiniteJSONResponse as JSONResponse
from app.auth import (
    AlreadyApproved,
    AuthError,
    Forbidden,
    InvalidField,
    InvalidKey,
    InvalidPairing,
    NotVisible,
    RateLimited,
    TooManyPairings,
    Unauthenticated,
)
from app.ingest import IngestError
from app.query.errors import QueryError
from app.snapshots import InvalidNote, NotCut, PeriodNotClosed, PeriodOutOfRange, ScorecardLocked, SnapshotError
from app.store import StoreUnavailable

PROBLEM_MEDIA_TYPE = "application/problem+json"
UNAUTHENTICATED_DETAIL = "a valid API key is required: Authorization: Bearer <key>"
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="pulseboard"'}
STORE_RETRY = {RETRY_AFTER: str(RETRY_AFTER_STORE_S)}

E = TypeVar("E", bound=Exception)
Handler = Callable[[HTTPConnection, E], Awaitable[Response | None]]


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    type_: str = "about:blank",
) -> JSONResponse:
    """A ``application/problem+json`` response (RFC 9457) with ``type``, ``title``,
    ``status``, ``detail`` and, when given, ``errors``."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


async def _answer(conn: HTTPConnection, response: Response) -> Response | None:
    """``response`` for an HTTP request; for a WebSocket, the same as the handshake's denial
    (before it is accepted), else a close with 1011 (the socket is already open)."""
    if not isinstance(conn, WebSocket):
        return response
    if conn.application_state == WebSocketState.CONNECTING:
        await conn.send_denial_response(response)
    elif conn.application_state == WebSocketState.CONNECTED:
        await conn.close(code=CLOSE_INTERNAL_ERROR)
    return None


def _find(table: dict[type[Exception], tuple[int, str]], exc: Exception) -> tuple[int, str] | None:
    """The ``(status, title)`` of ``exc``'s nearest class in ``table``."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return None


AUTH_ANSWERS: dict[type[Exception], tuple[int, str]] = {
    Unauthenticated: (401, "Unauthorized"),
    NotVisible: (404, "Not found"),
    Forbidden: (403, "Forbidden"),
    InvalidKey: (422, "Invalid key"),
    InvalidPairing: (422, "Invalid pairing"),
    InvalidField: (422, "Invalid request parameters"),
    AlreadyApproved: (409, "Already approved"),
    TooManyPairings: (429, "Too many pairings"),
    RateLimited: (429, "Too many requests"),
}
SNAPSHOT_ANSWERS: dict[type[Exception], tuple[int, str]] = {
    NotCut: (404, "Not found"),
    PeriodNotClosed: (409, "Period not closed"),
    PeriodOutOfRange: (422, "Period out of range"),
    ScorecardLocked: (409, "Scorecard published"),
    InvalidNote: (422, "Invalid note"),
}


async def _auth(conn: HTTPConnection, exc: AuthError) -> Response | None:
    found = _find(AUTH_ANSWERS, exc)
    if found is None:
        raise exc  # a class without an answer is a bug: the server error handler reports it
    status, title = found
    if isinstance(exc, Unauthenticated):
        # One body for every reason (no key, malformed, unknown, revoked, expired, in the URL).
        return await _answer(conn, problem(status, title, UNAUTHENTICATED_DETAIL, headers=WWW_AUTHENTICATE))
    if isinstance(exc, NotVisible) and isinstance(conn, WebSocket):
        status, title = AUTH_ANSWERS[Forbidden]  # at a handshake (BAD_INPUTS 30)
    errors = [{"field": exc.field, "message": exc.reason}] if isinstance(exc, InvalidField) else None
    headers = {RETRY_AFTER: retry_after(exc.retry_after_s)} if isinstance(exc, RateLimited) else None
    return await _answer(conn, problem(status, title, str(exc), errors, headers))


async def _ingest(conn: HTTPConnection, exc: IngestError) -> Response | None:
    headers = dict(exc.headers)
    if exc.retry_after_s is not None:
        headers[RETRY_AFTER] = retry_after(exc.retry_after_s)
    return await _answer(conn, problem(exc.status, exc.title, exc.detail, exc.errors, headers or None))


async def _snapshot(conn: HTTPConnection, exc: SnapshotError) -> Response | None:
    if isinstance(exc, ScorecardLocked) and exc.missing:
        missing = [
            {"field": "commentary", "kpi": k, "message": exc.reasons.get(k, f"{k} is red and has no note")}
            for k in exc.missing
        ]
        return await _answer(conn, problem(422, "Notes required", str(exc), missing))
    found = _find(SNAPSHOT_ANSWERS, exc)
    if found is None:
        raise exc
    status, title = found
    errors = (
        [{"field": "text", "message": str(exc)}]
        if isinstance(exc, InvalidNote)
        else [{"field": "period", "message": str(exc)}]
        if isinstance(exc, PeriodOutOfRange)
        else None
    )
    return await _answer(conn, problem(status, title, str(exc), errors))


async def _query(conn: HTTPConnection, exc: QueryError) -> Response | None:
    errors = [{"field": exc.field, "message": exc.message}]
    return await _answer(conn, problem(422, "Invalid request parameters", str(exc), errors))


async def _store_unavailable(conn: HTTPConnection, exc: StoreUnavailable) -> Response | None:
    return await _answer(conn, problem(503, "Store unavailable", str(exc), headers=STORE_RETRY))


async def _store_down(conn: HTTPConnection, exc: DBAPIError) -> Response | None:
    # A read that hit a down or overloaded database: tell clients to come back (not a 500).
    if (
        exc.connection_invalidated
        or isinstance(exc, OperationalError)
        or isinstance(exc.orig, OSError)
        or "connect" in str(exc.orig).lower()
    ):
        detail = "the database did not answer; retry later"
        return await _answer(conn, problem(503, "Store unavailable", detail, headers=STORE_RETRY))
    raise exc


async def _pool_timeout(conn: HTTPConnection, _exc: PoolTimeout) -> Response | None:
    # Every pooled connection is busy past the pool timeout (e.g. a database that hangs).
    detail = "no database connection came free in time; retry later"
    return await _answer(conn, problem(503, "Store unavailable", detail, headers=STORE_RETRY))


async def _http(conn: HTTPConnection, exc: StarletteHTTPException) -> Response | None:
    return await _answer(conn, problem(exc.status_code, _title(exc.status_code), str(exc.detail), headers=exc.headers))


async def _validation(conn: HTTPConnection, exc: RequestValidationError) -> Response | None:
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "$", "message": e.get("msg", "")}
        for e in exc.errors()
    ]
    return await _answer(conn, problem(422, "Invalid request parameters", "one or more parameters are invalid", errors))


async def _server_error(conn: HTTPConnection, exc: Exception) -> Response:
    # Anything no other handler answers: a 500 problem+json (never a plain-text body), with no
    # internal detail; Starlette logs the traceback (issue 10 item 11: every 5xx is problem+json).
    return problem(500, "Internal server error", "the server failed to answer this request; it was logged")


HANDLERS: list[tuple[type[Exception], Handler[Any]]] = [
    (StarletteHTTPException, _http),
    (RequestValidationError, _validation),
    (AuthError, _auth),
    (IngestError, _ingest),
    (SnapshotError, _snapshot),
    (QueryError, _query),
    (StoreUnavailable, _store_unavailable),
    (DBAPIError, _store_down),
    (PoolTimeout, _pool_timeout),
]
"""One handler per exception tree (looked up along each exception's MRO, nearest first)."""


def install_handlers(app: FastAPI) -> None:
    """Make every error of ``HANDLERS``' trees, on HTTP and at a WebSocket handshake, a
    problem+json answer."""
    for exc_class, handler in HANDLERS:
        app.add_exception_handler(exc_class, cast(ExceptionHandler, handler))
    app.add_exception_handler(Exception, cast(ExceptionHandler, _server_error))


def _title(status: int) -> str:
    return {
        400: "Bad request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        409: "Conflict",
        413: "Payload too large",
        415: "Unsupported media type",
        422: "Unprocessable content",
        429: "Too many requests",
        503: "Service unavailable",
    }.get(status, "Error")
