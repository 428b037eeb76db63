"""Keys API (admin), browser sessions, and pairing of wall screens.

Pairing: a screen opens ``/pair``; it asks for a pairing and shows the short code; an admin
approves the code for a dashboard (``POST /api/v1/pairings/{code}/approve`` or
``pulseboard``-side tools); the screen, polling with its secret, receives its display key
as an HttpOnly cookie (never in a URL, never readable by scripts) and opens the wall.
Pairings live in the store (``app.auth.pairing``): any instance on it approves or answers a
claim, and a restart keeps them for ``PULSEBOARD_PAIRING_TTL_S``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.api.deps import RuntimeDep
from app.api.routes import FRONTEND_DIR
from app.api.text import StoredText
from app.auth import AlreadyApproved, InvalidPairing, Unauthenticated
from app.auth.deps import COOKIE, Access, authenticate, client_address, public, require, scoped
from app.auth.keys import check_binding
from app.metrics.calendar import from_us, to_us

router = APIRouter()
COOKIE_MAX_AGE_S = 400 * 86400
KEY_ID_PATTERN = "^[0-9a-f]{32}$"  # secrets.token_hex(16), as app.auth.keys makes them


class KeyIn(BaseModel):
    """A key to create.  Unknown fields are refused (422), and so is a binding that does not fit
    the scope (``app.auth.keys.check_binding``): nothing asked for is silently dropped."""

    model_config = ConfigDict(extra="forbid")

    scope: Literal["ingest", "read", "display", "admin", "comment"]
    name: StoredText = Field(default="", max_length=128)
    holder: StoredText | None = Field(default=None, min_length=1, max_length=128)
    source: StoredText | None = Field(default=None, min_length=1, max_length=64)
    event_types: list[StoredText] | None = Field(default=None, max_length=100)
    packs: list[StoredText] | None = Field(
        default=None, max_length=100, description="ingest: feed only these loaded packs' event types (issue 10 item 18)"
    )
    dashboard: StoredText | None = Field(default=None, min_length=1, max_length=128)
    expires_at: AwareDatetime | None = Field(
        default=None, description="RFC 3339 instant with an offset after which the key stops working"
    )


@router.get("/api/v1/keys", summary="Every API key (hashes are never shown)", **scoped("admin"))
async def list_keys(runtime: RuntimeDep) -> list[dict[str, Any]]:
    return await runtime.keys.list()


@router.post("/api/v1/keys", status_code=201, summary="Create a key (shown once)", **scoped("admin"))
async def create_key(body: KeyIn, runtime: RuntimeDep) -> JSONResponse:
    now_us = to_us(runtime.clock.now())
    expires_us = to_us(body.expires_at) if body.expires_at is not None else None
    check_binding(
        body.scope,
        source=body.source,
        event_types=body.event_types,
        dashboard=body.dashboard,
        expires_us=expires_us,
        now_us=now_us,
        dashboards=frozenset(d for p in runtime.packs.values() for d in p.dashboards),
        known_types=frozenset(t for p in runtime.packs.values() for t in p.event_types),
        packs=body.packs,
        known_packs=frozenset(runtime.packs),
    )
    key, info = await runtime.keys.create(
        body.scope,
        body.name,
        now_us,
        body.source,
        body.event_types,
        body.dashboard,
        expires_us,
        holder=body.holder,
        packs=body.packs,
    )
    return JSONResponse({**info, "key": key}, status_code=201, headers={"Cache-Control": "no-store"})


@router.delete(
    "/api/v1/keys/{key_id}", summary="Revoke a key (its open sockets close within seconds)", **scoped("admin")
)
async def revoke_key(key_id: Annotated[str, Path(pattern=KEY_ID_PATTERN)], runtime: RuntimeDep) -> JSONResponse:
    info = await runtime.keys.revoke(key_id, to_us(runtime.clock.now()))
    if info is None:
        raise HTTPException(404, "no such key")
    return JSONResponse(info)


class SessionIn(BaseModel):
    """A key to sign a browser in with (read, display or admin)."""

    key: str = Field(min_length=1, max_length=200)


def _set_cookie(response: JSONResponse, request: Request, key: str) -> None:
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


@router.post(
    "/api/v1/session", summary="Sign this browser in with a key (HttpOnly cookie)", **public(rate_limited=True)
)
async def sign_in(body: SessionIn, request: Request, runtime: RuntimeDep) -> JSONResponse:
    info = await runtime.keys.find(body.key)
    if info is None or not info.usable(to_us(runtime.clock.now())) or info.scope == "ingest":
        raise Unauthenticated("missing, unknown, revoked or expired key")
    response = JSONResponse(
        {"scope": info.scope, "name": info.name, "dashboard": info.dashboard}, headers={"Cache-Control": "no-store"}
    )
    _set_cookie(response, request, body.key)
    return response


@router.get("/api/v1/session", summary="Who this browser is signed in as", **public())
async def whoami(request: Request) -> JSONResponse:
    access = await authenticate(request)
    return JSONResponse(
        {
            "scope": access.key.scope,
            "name": access.key.name,
            "holder": access.key.holder,
            "dashboard": access.key.dashboard,
        }
    )


@router.delete("/api/v1/session", summary="Sign this browser out", **public())
async def sign_out() -> JSONResponse:
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(COOKIE, path="/")
    return response


def _client_ip(request: Request) -> str:
    return client_address(request)


def _now_us(runtime: Any) -> int:
    return to_us(runtime.clock.now())


class PairingIn(BaseModel):
    """What a screen may say when it asks: the dashboard it is meant to show (optional)."""

    dashboard: StoredText | None = Field(default=None, min_length=1, max_length=128)


@router.post("/api/v1/pairings", status_code=201, summary="A screen asks to be paired", **public(rate_limited=True))
async def new_pairing(request: Request, runtime: RuntimeDep, body: PairingIn | None = None) -> JSONResponse:
    dashboard = body.dashboard if body is not None else None
    if dashboard is not None and runtime.find_dashboard(dashboard) is None:
        raise InvalidPairing(f"no dashboard {dashboard!r}", "dashboard", "unknown")
    made = await runtime.pairings.create(_now_us(runtime), _client_ip(request), dashboard)
    return JSONResponse(
        {
            "code": made.code,
            "secret": made.secret,
            "expires_in_s": runtime.settings.pairing_ttl_s,
            "expires_at": from_us(made.expires_us).isoformat(),
        },
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/pairings", include_in_schema=False, **public())
async def pairings_page() -> FileResponse:
    """The admins' page approving waiting screens (its API calls need an admin key)."""
    return FileResponse(FRONTEND_DIR / "pairings" / "index.html", media_type="text/html")


@router.get("/api/v1/pairings", summary="Screens waiting for approval (codes, requested dashboards)", **scoped("admin"))
async def waiting_pairings(runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse(await runtime.pairings.waiting(_now_us(runtime)), headers={"Cache-Control": "no-store"})


class ClaimIn(BaseModel):
    """The screen's pairing secret."""

    secret: str = Field(min_length=10, max_length=100)


@router.post(
    "/api/v1/pairings/claim",
    summary="A screen collects its display key once approved",
    **public(rate_limited=True),
)
async def claim_pairing(body: ClaimIn, request: Request, runtime: RuntimeDep) -> JSONResponse:
    claim = await runtime.pairings.claim(body.secret, _now_us(runtime))
    if claim is None:
        raise HTTPException(404, "no such pairing (expired or already used?): start again")
    if claim.status == "pending" or claim.key is None:  # only an approved claim carries its key
        return JSONResponse({"status": "pending", "code": claim.code}, headers={"Cache-Control": "no-store"})
    response = JSONResponse({"status": "approved", "dashboard": claim.dashboard}, headers={"Cache-Control": "no-store"})
    _set_cookie(response, request, claim.key)
    return response


class ApproveIn(BaseModel):
    """Which dashboard the screen will show (default: the one it asked for), and a name for its key."""

    dashboard: StoredText | None = Field(default=None, min_length=1, max_length=128)
    name: StoredText = Field(default="wall screen", max_length=128)


@router.post("/api/v1/pairings/{code}/approve", summary="An admin approves a screen's code", **scoped("admin"))
async def approve_pairing(
    code: Annotated[str, Path(max_length=64)],
    body: ApproveIn,
    runtime: RuntimeDep,
    admin: Annotated[Access, Depends(require("admin"))],
) -> JSONResponse:
    now_us = _now_us(runtime)
    row = await runtime.pairings.find_code(code, now_us)
    if row is None:
        raise HTTPException(404, "no such pairing code waiting (expired?)")
    if row.approved_us is not None:
        raise AlreadyApproved("this code was approved already; a screen pairs once")
    dashboard = body.dashboard or row.requested_dashboard
    if dashboard is None or runtime.find_dashboard(dashboard) is None:
        reason = "unknown" if dashboard else "required (the screen asked for none)"
        raise InvalidPairing(f"dashboard {reason}", "dashboard", reason)
    key_id = await runtime.pairings.approve(row.id, dashboard, body.name, admin.key.id, now_us)
    if key_id is None:
        raise AlreadyApproved("this code was approved meanwhile; a screen pairs once")
    return JSONResponse({"paired": True, "dashboard": dashboard, "key_id": key_id})
