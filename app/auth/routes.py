"""Keys API (admin), browser sessions, and pairing of wall screens.

Pairing: a screen opens ``/pair``; it asks for a pairing and shows the short code; an admin
approves the code for a dashboard (``POST /api/v1/pairings/{code}/approve`` or
``pulseboard``-side tools); the screen, polling with its secret, receives its display key
as an HttpOnly cookie (never in a URL, never readable by scripts) and opens the wall.
Pairings live in this process's memory for ``PAIRING_TTL_S``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.deps import RuntimeDep
from app.api.text import StoredText
from app.auth import Unauthenticated
from app.auth.deps import COOKIE, Access, authenticate, public, require, scoped
from app.metrics.calendar import to_us
from app.problems import problem

router = APIRouter()
PAIRING_TTL_S = 600
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
COOKIE_MAX_AGE_S = 400 * 86400
KEY_ID_PATTERN = "^[0-9a-f]{32}$"  # secrets.token_hex(16), as app.auth.keys makes them


class KeyIn(BaseModel):
    """A key to create."""

    scope: Literal["ingest", "read", "display", "admin"]
    name: StoredText = Field(default="", max_length=128)
    source: StoredText | None = Field(default=None, min_length=1, max_length=64)
    event_types: list[StoredText] | None = Field(default=None, max_length=100)
    dashboard: StoredText | None = Field(default=None, min_length=1, max_length=128)


@router.get("/api/v1/keys", summary="Every API key (hashes are never shown)", **scoped("admin"))
async def list_keys(runtime: RuntimeDep) -> list[dict[str, Any]]:
    return await runtime.keys.list()


@router.post("/api/v1/keys", status_code=201, summary="Create a key (shown once)", **scoped("admin"))
async def create_key(body: KeyIn, runtime: RuntimeDep) -> JSONResponse:
    if body.dashboard is not None and runtime.find_dashboard(body.dashboard) is None:
        return problem(422, "Invalid key", f"no dashboard {body.dashboard!r}", [{"field": "dashboard", "message": "unknown"}])
    try:
        key, info = await runtime.keys.create(body.scope, body.name, to_us(runtime.clock.now()), body.source,
                                              body.event_types, body.dashboard)
    except ValueError as exc:
        return problem(422, "Invalid key", str(exc), [{"field": "scope", "message": str(exc)}])
    return JSONResponse({**info, "key": key}, status_code=201, headers={"Cache-Control": "no-store"})


@router.delete("/api/v1/keys/{key_id}", summary="Revoke a key (its open sockets close within seconds)",
               **scoped("admin"))
async def revoke_key(key_id: Annotated[str, Path(pattern=KEY_ID_PATTERN)], runtime: RuntimeDep) -> JSONResponse:
    info = await runtime.keys.revoke(key_id, to_us(runtime.clock.now()))
    if info is None:
        return problem(404, "Not found", "no such key")
    return JSONResponse(info)


class SessionIn(BaseModel):
    """A key to sign a browser in with (read, display or admin)."""

    key: str = Field(min_length=1, max_length=200)


def _set_cookie(response: JSONResponse, request: Request, key: str) -> None:
    response.set_cookie(COOKIE, key, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")


@router.post("/api/v1/session", summary="Sign this browser in with a key (HttpOnly cookie)", **public())
async def sign_in(body: SessionIn, request: Request, runtime: RuntimeDep) -> JSONResponse:
    info = await runtime.keys.find(body.key)
    if info is None or not info.usable(to_us(runtime.clock.now())) or info.scope == "ingest":
        raise Unauthenticated("missing, unknown, revoked or expired key")
    response = JSONResponse({"scope": info.scope, "name": info.name, "dashboard": info.dashboard},
                            headers={"Cache-Control": "no-store"})
    _set_cookie(response, request, body.key)
    return response


@router.get("/api/v1/session", summary="Who this browser is signed in as", **public())
async def whoami(request: Request) -> JSONResponse:
    access = await authenticate(request)
    return JSONResponse({"scope": access.key.scope, "name": access.key.name, "dashboard": access.key.dashboard})


@router.delete("/api/v1/session", summary="Sign this browser out", **public())
async def sign_out() -> JSONResponse:
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(COOKIE, path="/")
    return response


@dataclass
class Pairing:
    """A screen waiting to be paired: its code (shown), secret (kept by the screen) and outcome."""

    code: str
    secret: str
    expires_at: float
    key: str | None = None
    dashboard: str | None = None
    claimed: bool = False


@dataclass
class Pairings:
    """Pairings of this process, by code and by secret."""

    by_code: dict[str, Pairing] = field(default_factory=dict)

    def new(self) -> Pairing:
        self.expire()
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
        pairing = Pairing(code, secrets.token_urlsafe(32), time.monotonic() + PAIRING_TTL_S)
        self.by_code[code] = pairing
        return pairing

    def expire(self) -> None:
        now = time.monotonic()
        for code in [c for c, p in self.by_code.items() if p.expires_at < now or p.claimed]:
            del self.by_code[code]

    def by_secret(self, secret: str) -> Pairing | None:
        """The pairing whose secret is ``secret`` (constant-time compare; any text, even non-ASCII)."""
        self.expire()
        presented = secret.encode("utf-8", "surrogatepass")  # compare_digest refuses non-ASCII str
        for pairing in self.by_code.values():
            if secrets.compare_digest(pairing.secret.encode(), presented):
                return pairing
        return None

    def preapproved(self, key: str, dashboard: str) -> Pairing:
        """A pairing already approved (for ``pulseboard demo``'s own screen link)."""
        pairing = self.new()
        pairing.key, pairing.dashboard = key, dashboard
        return pairing


@router.post("/api/v1/pairings", status_code=201, summary="A screen asks to be paired", **public())
async def new_pairing(runtime: RuntimeDep) -> JSONResponse:
    if len(runtime.pairings.by_code) >= 1000:
        return problem(429, "Too many pairings", "too many screens are waiting; retry later",
                       headers={"Retry-After": "30"})
    pairing = runtime.pairings.new()
    return JSONResponse({"code": pairing.code, "secret": pairing.secret, "expires_in_s": PAIRING_TTL_S},
                        status_code=201, headers={"Cache-Control": "no-store"})


class ClaimIn(BaseModel):
    """The screen's pairing secret."""

    secret: str = Field(min_length=10, max_length=100)


@router.post("/api/v1/pairings/claim", summary="A screen collects its display key once approved", **public())
async def claim_pairing(body: ClaimIn, request: Request, runtime: RuntimeDep) -> JSONResponse:
    pairing = runtime.pairings.by_secret(body.secret)
    if pairing is None:
        return problem(404, "Not found", "no such pairing (expired?): start again")
    if pairing.key is None:
        return JSONResponse({"status": "pending", "code": pairing.code}, headers={"Cache-Control": "no-store"})
    pairing.claimed = True
    response = JSONResponse({"status": "approved", "dashboard": pairing.dashboard}, headers={"Cache-Control": "no-store"})
    _set_cookie(response, request, pairing.key)
    runtime.pairings.expire()
    return response


class ApproveIn(BaseModel):
    """Which dashboard the screen will show, and a name for its key."""

    dashboard: StoredText = Field(min_length=1, max_length=128)
    name: StoredText = Field(default="wall screen", max_length=128)


@router.post("/api/v1/pairings/{code}/approve", summary="An admin approves a screen's code", **scoped("admin"))
async def approve_pairing(code: str, body: ApproveIn, runtime: RuntimeDep,
                          _admin: Annotated[Access, Depends(require("admin"))]) -> JSONResponse:
    runtime.pairings.expire()
    pairing = runtime.pairings.by_code.get(code.strip().upper())
    if pairing is None or pairing.key is not None:
        return problem(404, "Not found", "no such pairing code waiting (expired?)")
    if runtime.find_dashboard(body.dashboard) is None:
        return problem(422, "Invalid pairing", f"no dashboard {body.dashboard!r}",
                       [{"field": "dashboard", "message": "unknown"}])
    key, info = await runtime.keys.create("display", body.name, to_us(runtime.clock.now()),
                                          dashboard=body.dashboard)
    pairing.key, pairing.dashboard = key, body.dashboard
    return JSONResponse({"paired": True, "dashboard": body.dashboard, "key_id": info["id"]})
