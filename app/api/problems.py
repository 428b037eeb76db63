"""RFC 9457 problem details responses, and the handlers that make every error one."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth import Forbidden, NotVisible, Unauthenticated

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    type_: str = "about:blank",
) -> JSONResponse:
    """A ``application/problem+json`` response (RFC 9457) with ``type``, ``title``,
    ``status``, ``detail`` and, when given, ``errors``."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def install_handlers(app: FastAPI) -> None:
    """Make HTTP and validation errors answer problem+json."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(_request: Request, _exc: Unauthenticated) -> JSONResponse:
        # One body for every reason (no key, malformed, unknown, revoked, expired, in the URL).
        return problem(
            401,
            "Unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="pulseboard"'},
        )

    @app.exception_handler(NotVisible)
    async def _not_visible(_request: Request, exc: NotVisible) -> JSONResponse:
        return problem(404, "Not found", str(exc))

    @app.exception_handler(Forbidden)
    async def _forbidden(_request: Request, exc: Forbidden) -> JSONResponse:
        return problem(403, "Forbidden", str(exc))

    @app.exception_handler(DBAPIError)
    async def _store_down(_request: Request, exc: DBAPIError) -> JSONResponse:
        # A read that hit a down or overloaded database: tell clients to come back (not a 500).
        if (
            exc.connection_invalidated
            or isinstance(exc, OperationalError)
            or isinstance(exc.orig, OSError)
            or "connect" in str(exc.orig).lower()
        ):
            return problem(
                503, "Store unavailable", "the database did not answer; retry later", headers={"Retry-After": "2"}
            )
        raise exc

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_request: Request, _exc: PoolTimeout) -> JSONResponse:
        # Every pooled connection is busy past the pool timeout (e.g. a database that hangs).
        return problem(
            503,
            "Store unavailable",
            "no database connection came free in time; retry later",
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "$", "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return problem(422, "Invalid request parameters", "one or more parameters are invalid", errors)


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
