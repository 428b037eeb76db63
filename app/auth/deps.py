"""Route access: every route declares its scopes with ``scoped(...)`` or ``public()``.

Keys come in ``Authorization: Bearer KEY`` (API clients, screens' sockets) or in the
``pb_key`` cookie a browser gets from ``POST /api/v1/session`` or a pairing (HttpOnly,
SameSite=Strict, so never readable by page scripts nor sent cross-site).  A key in the
query string is refused: keys never travel in URLs, which end up in logs.  Every failure
to authenticate gets the same 401 body and the same work (one hash and one lookup).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from app.auth import Forbidden, InvalidField, NotVisible, RateLimited, Unauthenticated
from app.auth.keys import KeyInfo
from app.metrics.calendar import to_us
from app.query.kpis import SCAN_BUDGET, ScanBudget

COOKIE = "pb_key"
SCOPE_KEY = "x-pulseboard-scope"
KEY_PARAMS = ("key", "api_key", "apikey", "token", "access_token", "auth")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
ANONYMOUS = KeyInfo("anonymous", "admin", "auth disabled", None, None, None, None, None)


@dataclass(frozen=True, slots=True)
class Access:
    """Who is calling: the key's info and whether it came in a cookie."""

    key: KeyInfo
    via_cookie: bool = False


def presented_key(conn: HTTPConnection) -> tuple[str | None, bool]:
    """``(key, via_cookie)`` from the Authorization header or the cookie.

    Raises:
        Unauthenticated: a key-like query parameter is present (keys never in URLs).
    """
    if any(p in conn.query_params for p in KEY_PARAMS):
        raise Unauthenticated("keys go in the Authorization header, never in the URL")
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return (value.strip() or None if scheme.lower() == "bearer" else ""), False
    cookie = conn.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


async def authenticate(conn: HTTPConnection) -> Access:
    """The caller's usable key.

    Raises:
        Unauthenticated: no, malformed, unknown, revoked or expired key (one answer for all).
    """
    runtime = conn.app.state.runtime
    if runtime.settings.auth_disabled:
        return Access(ANONYMOUS)
    key, via_cookie = presented_key(conn)
    info = await runtime.keys.find(key or "\x00no key\x00")  # same work whatever was presented
    now_us = to_us(runtime.clock.now())
    if not key or info is None or not info.usable(now_us):
        raise Unauthenticated("missing, unknown, revoked or expired key")
    runtime.keys.touch(info.id, now_us)
    return Access(info, via_cookie)


def check_scope(access: Access, scopes: tuple[str, ...], dashboard: str | None = None) -> None:
    """Raise ``Forbidden`` unless the key's scope is in ``scopes``, and ``NotVisible`` unless a
    display key's dashboard is ``dashboard`` (with access checks disabled, everything passes)."""
    key = access.key
    if key is ANONYMOUS:
        return
    if key.scope not in scopes:
        raise Forbidden(f"a {key.scope} key may not do this; it needs one of: {', '.join(scopes)}")
    if key.scope == "display" and dashboard != key.dashboard:
        raise NotVisible(f"no dashboard {dashboard!r} for this key")


def require(*scopes: str, dashboard_param: str | None = None) -> Callable[[Request], Awaitable[Access]]:
    """Dependency: authenticate, check the scope (and a display key's dashboard), and for
    cookie-authenticated unsafe methods require a same-origin ``Origin`` (CSRF)."""

    async def dependency(request: Request) -> Access:
        access = await authenticate(request)
        dashboard = request.path_params.get(dashboard_param) if dashboard_param else None
        check_scope(access, scopes, dashboard)
        settings = request.app.state.runtime.settings
        SCAN_BUDGET.set(ScanBudget(settings.raw_scan_max_events, time.monotonic() + settings.raw_scan_timeout_s))
        limiter = request.app.state.runtime.read_limiter
        if access.key.scope == "read" and limiter is not None:
            wait_s = limiter.try_acquire(access.key.id)
            if wait_s:
                raise RateLimited("this read key is over PULSEBOARD_READ_RATE_PER_KEY_PER_S; slow down", wait_s)
        if access.via_cookie and request.method in UNSAFE:
            origin = request.headers.get("origin")
            settings = request.app.state.runtime.settings
            if origin is None or not settings.origin_allowed(origin, request.headers.get("host"), request.url.scheme):
                raise Forbidden("a browser session may change things only from this site's own pages")
        return access

    return dependency


def client_address(conn: HTTPConnection) -> str:
    """The client's address: the peer's, or the one a trusted proxy put in ``X-Forwarded-For``
    (uvicorn's proxy headers, peers in ``FORWARDED_ALLOW_IPS``), normalised.

    Raises:
        InvalidField: the address is not an IP address (a proxy passing a spoofed header on
            unchanged); 422 naming ``X-Forwarded-For``.
    """
    host = conn.client.host if conn.client else ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise InvalidField(
            "the client address (X-Forwarded-For from a trusted proxy) is not an IP address",
            "X-Forwarded-For",
            "not an IP address",
        ) from None


async def public_rate_limit(request: Request) -> None:
    """Dependency of the unauthenticated POST routes (sign-in, pairing, claim): one token bucket per
    route and client address (``PULSEBOARD_PUBLIC_RATE_PER_IP_PER_S``, ``..._BURST_PER_IP``).

    Raises:
        RateLimited: over it (429 + ``Retry-After``).
        InvalidField: the client address is not an IP address (``client_address``).
    """
    address = client_address(request)
    limiter = request.app.state.runtime.public_limiter
    if limiter is None:
        return
    wait_s = limiter.try_acquire(f"{request.url.path} {address}")
    if wait_s:
        raise RateLimited("too many requests from this address; retry later", wait_s)


def scoped(*scopes: str, dashboard_param: str | None = None) -> dict[str, Any]:
    """Route keyword arguments that require one of ``scopes`` (and declare them)."""
    return {
        "dependencies": [Depends(require(*scopes, dashboard_param=dashboard_param))],
        "openapi_extra": {SCOPE_KEY: list(scopes)},
    }


def public(rate_limited: bool = False) -> dict[str, Any]:
    """Route keyword arguments declaring a route open to anyone (pages, health); with
    ``rate_limited``, rate limited per client address (``public_rate_limit``)."""
    extra: dict[str, Any] = {"openapi_extra": {SCOPE_KEY: ["public"]}}
    if rate_limited:
        extra["dependencies"] = [Depends(public_rate_limit)]
    return extra
