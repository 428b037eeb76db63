"""Creating, finding, listing and revoking API keys.

A key is ``<prefix><token>``: the prefix names the scope (``pbi_`` ingest, ``pbr_`` read,
``pbd_`` display, ``pba_`` admin, ``pbc_`` comment: read, plus writing commentary) so a
leaked key is recognisable, and the token is 240 random bits (``secrets.token_urlsafe(30)``).
Only ``sha256(key)`` is stored: a key is
found by its hash, so the lookup costs the same whatever key is presented, and a dump of
the database holds no usable key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import InvalidKey
from app.clock import Clock
from app.metrics.calendar import from_us, to_us
from app.store.schema import api_key

Scope = Literal["ingest", "read", "display", "admin", "comment"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "display", "admin", "comment")
PREFIX: dict[str, str] = {"ingest": "pbi_", "read": "pbr_", "display": "pbd_", "admin": "pba_", "comment": "pbc_"}
TOKEN_BYTES = 30  # 240 bits
CACHE_TTL_S = 2.0  # a key revoked elsewhere stops working here within this (plus a socket check interval)


def hash_key(key: str) -> bytes:
    """SHA-256 of the key text (keys are high-entropy: no salt or slow hash needed)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A stored key as the access checks see it (never the key itself)."""

    id: str
    scope: Scope
    name: str
    source: str | None
    event_types: tuple[str, ...] | None
    dashboard: str | None
    expires_us: int | None
    revoked_us: int | None
    holder: str | None = None  # the person the key belongs to: the author of its notes
    packs: tuple[str, ...] | None = None  # ingest keys: the packs it may feed (None: any)

    @property
    def person(self) -> str:
        """Who writes with this key: its holder, else its name (a label)."""
        return self.holder or self.name

    def usable(self, now_us: int) -> bool:
        """Not revoked and not expired at ``now_us``."""
        return self.revoked_us is None and (self.expires_us is None or now_us < self.expires_us)


def _info(row: Any) -> KeyInfo:
    types = tuple(msgspec.json.decode(row.event_types)) if row.event_types else None
    packs = tuple(msgspec.json.decode(row.packs)) if row.packs else None
    return KeyInfo(
        row.id, row.scope, row.name, row.source, types, row.dashboard, row.expires_us, row.revoked_us, row.holder, packs
    )


def key_json(row: Any) -> dict[str, Any]:
    """The listing form of a key: never the key, only its prefix and last four characters."""
    return {
        "id": row.id,
        "scope": row.scope,
        "name": row.name,
        "holder": row.holder,
        "hint": f"{row.prefix}…{row.last4}",
        "source": row.source,
        "event_types": msgspec.json.decode(row.event_types) if row.event_types else None,
        "packs": msgspec.json.decode(row.packs) if row.packs else None,
        "dashboard": row.dashboard,
        "created_at": from_us(row.created_us).isoformat(),
        "expires_at": from_us(row.expires_us).isoformat() if row.expires_us else None,
        "revoked_at": from_us(row.revoked_us).isoformat() if row.revoked_us else None,
        "last_used_at": from_us(row.last_used_us).isoformat() if row.last_used_us else None,
    }


MAX_KEY_LIFETIME_US = 100 * 366 * 86_400 * 1_000_000
TYPE_RE = re.compile(r"^[a-z0-9_.-]{1,128}$")  # app.ingest.parse.TYPE_PATTERN


def check_binding(
    scope: str,
    *,
    source: str | None,
    event_types: list[str] | None,
    dashboard: str | None,
    expires_us: int | None,
    now_us: int,
    dashboards: frozenset[str],
    known_types: frozenset[str],
    packs: list[str] | None = None,
    known_packs: frozenset[str] = frozenset(),
) -> None:
    """Refuse a key whose bindings do not fit its scope (issue 10, item 14): nothing a caller asked
    for is silently dropped.

    - ``source`` and ``event_types`` bind ingest keys only; every event type matches
      ``[a-z0-9_.-]{1,128}``, is read by a loaded pack (``known_types``) and is listed once;
    - ``packs`` binds ingest keys only (issue 10 item 18): each names a loaded pack (``known_packs``),
      once; the key then feeds only events whose type one of those packs reads;
    - ``dashboard`` binds display keys only and names a loaded dashboard (``dashboards``);
    - ``expires_us`` (UTC epoch µs) is after ``now_us``.

    Raises:
        InvalidKey: the first misfit, naming the field (HTTP 422; the CLI prints it).
    """
    if scope not in SCOPES:
        raise InvalidKey(f"scope must be one of {', '.join(SCOPES)}", "scope")
    if source is not None and scope != "ingest":
        raise InvalidKey(f"a {scope} key has no source (only ingest keys are bound to one)", "source", "not allowed")
    if event_types is not None:
        if scope != "ingest":
            raise InvalidKey(f"a {scope} key has no event types (only ingest keys)", "event_types", "not allowed")
        if not event_types:
            raise InvalidKey("event_types lists at least one type (or leave it out)", "event_types", "empty")
        for i, t in enumerate(event_types):
            if not TYPE_RE.match(t):
                raise InvalidKey(f"event type {t!r} is not 1-128 of [a-z0-9_.-]", f"event_types.{i}", "malformed")
            if t not in known_types:
                raise InvalidKey(f"no loaded pack reads event type {t!r}", f"event_types.{i}", "unknown")
        if len(set(event_types)) != len(event_types):
            raise InvalidKey("event_types lists a type twice", "event_types", "duplicate")
    if packs is not None:
        if scope != "ingest":
            raise InvalidKey(f"a {scope} key feeds no packs (only ingest keys)", "packs", "not allowed")
        if not packs:
            raise InvalidKey("packs lists at least one pack (or leave it out)", "packs", "empty")
        for i, p in enumerate(packs):
            if p not in known_packs:
                raise InvalidKey(f"no loaded pack {p!r}", f"packs.{i}", "unknown")
        if len(set(packs)) != len(packs):
            raise InvalidKey("packs lists a pack twice", "packs", "duplicate")
    if dashboard is not None:
        if scope != "display":
            raise InvalidKey(
                f"a {scope} key is not bound to a dashboard (only display keys are)", "dashboard", "not allowed"
            )
        if dashboard not in dashboards:
            raise InvalidKey(f"no dashboard {dashboard!r}", "dashboard", "unknown")
    if expires_us is not None and expires_us <= now_us:
        raise InvalidKey("expires_at is not in the future", "expires_at", "in the past")
    if expires_us is not None and expires_us - now_us > MAX_KEY_LIFETIME_US:
        raise InvalidKey("expires_at is more than 100 years away", "expires_at", "too far")


def new_key_row(
    scope: str,
    name: str,
    now_us: int,
    source: str | None = None,
    event_types: list[str] | None = None,
    dashboard: str | None = None,
    expires_us: int | None = None,
    key_id: str | None = None,
    holder: str | None = None,
    packs: list[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """A new random key and the ``api_key`` row that stores it (its hash), not yet inserted.

    Lets a caller insert the key in its own transaction (a screen's pairing claim).
    ``key_id``: the row's id (default: 128 random bits as hex).  ``holder``: the person the key
    belongs to (recorded as the author of the notes it writes).  ``packs``: an ingest key's pack
    binding (``None``: any pack).

    Raises:
        InvalidKey: unknown scope, an ingest key without a source, a display key without a dashboard
            (a ``ValueError``).
    """
    if scope not in SCOPES:
        raise InvalidKey(f"scope must be one of {', '.join(SCOPES)}", "scope")
    if scope == "ingest" and not source:
        raise InvalidKey("an ingest key is bound to one source: give --source", "source")
    if scope == "display" and not dashboard:
        raise InvalidKey("a display key is bound to one dashboard: give --dashboard", "dashboard")
    key = PREFIX[scope] + secrets.token_urlsafe(TOKEN_BYTES)
    row = {
        "id": key_id or secrets.token_hex(16),
        "scope": scope,
        "prefix": PREFIX[scope],
        "last4": key[-4:],
        "key_hash": hash_key(key),
        "name": name or scope,
        "source": source if scope == "ingest" else None,
        "event_types": msgspec.json.encode(event_types).decode() if event_types and scope == "ingest" else None,
        "dashboard": dashboard if scope == "display" else None,
        "created_us": now_us,
        "expires_us": expires_us,
        "revoked_us": None,
        "last_used_us": None,
        "holder": holder or None,
        "packs": msgspec.json.encode(packs).decode() if packs and scope == "ingest" else None,
    }
    return key, row


class KeyStore:
    """Keys in the store, with a short-lived cache of lookups.

    A lookup (found or not) is kept for ``CACHE_TTL_S`` seconds of ``clock`` time; revoking
    through this store clears the cache at once, so only a key revoked by another process
    (instance, CLI) may keep working here for up to ``CACHE_TTL_S``.

    Args:
        engine: the store.
        clock: the app's wall clock (tests pass a ``ManualClock`` and advance it past the TTL).
    """

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._cache: dict[bytes, tuple[int, KeyInfo | None]] = {}  # digest -> (looked up at, µs; info)
        self._used: dict[str, int] = {}

    async def create(
        self,
        scope: str,
        name: str,
        now_us: int,
        source: str | None = None,
        event_types: list[str] | None = None,
        dashboard: str | None = None,
        expires_us: int | None = None,
        holder: str | None = None,
        packs: list[str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Create a key; return ``(the key, its listing)``.  The key is not kept: show it once.
        ``holder``: the person it belongs to (the author of its notes).  ``packs``: the packs an
        ingest key may feed (``None``: any).

        Raises:
            InvalidKey: unknown scope, an ingest key without a source, a display key without a dashboard
                (a ``ValueError``).
        """
        key, row = new_key_row(
            scope, name, now_us, source, event_types, dashboard, expires_us, holder=holder, packs=packs
        )
        async with self._engine.begin() as conn:
            await conn.execute(api_key.insert(), row)
            stored = (await conn.execute(select(api_key).where(api_key.c.id == row["id"]))).one()
        return key, key_json(stored)

    async def find(self, key: str) -> KeyInfo | None:
        """The key's info (usable or not), or ``None`` if no such key exists."""
        digest = hash_key(key)
        now_us = to_us(self._clock.now())
        hit = self._cache.get(digest)
        if hit is not None and 0 <= now_us - hit[0] < CACHE_TTL_S * 1_000_000:
            return hit[1]
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(api_key).where(api_key.c.key_hash == digest))).first()
        info = _info(row) if row is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now_us, info)
        return info

    async def still_usable(self, key_id: str, now_us: int) -> bool:
        """Whether key ``key_id`` is still usable (read fresh: open sockets are re-checked with it)."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(api_key.c.revoked_us, api_key.c.expires_us).where(api_key.c.id == key_id))
            ).first()
        return row is not None and row[0] is None and (row[1] is None or now_us < row[1])

    def touch(self, key_id: str, now_us: int) -> None:
        """Note a use; written by ``flush_last_used`` (at most once a minute per key)."""
        self._used[key_id] = now_us

    async def flush_last_used(self) -> None:
        """Write the noted ``last_used_at`` times."""
        used, self._used = self._used, {}
        if not used:
            return
        async with self._engine.begin() as conn:
            for key_id, at in used.items():
                await conn.execute(update(api_key).where(api_key.c.id == key_id).values(last_used_us=at))

    async def list(self) -> list[dict[str, Any]]:
        """Every key (revoked ones too), newest first."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(api_key).order_by(api_key.c.created_us.desc(), api_key.c.id))
            return [key_json(r) for r in rows]

    async def revoke(self, key_id: str, now_us: int) -> dict[str, Any] | None:
        """Revoke key ``key_id`` (idempotent); ``None`` if there is no such key."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(api_key).where(api_key.c.id == key_id, api_key.c.revoked_us.is_(None)).values(revoked_us=now_us)
            )
            row = (await conn.execute(select(api_key).where(api_key.c.id == key_id))).first()
        self._cache.clear()
        return key_json(row) if row is not None else None
