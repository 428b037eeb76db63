"""Wall-screen pairings, kept in the store (table ``pairing``, migration 0008).

Every instance on the same store sees the same pairings, and a restart keeps them: a code shown
by one instance can be approved through another, and the screen polling either collects its key.

Lifecycle of one pairing (all instants UTC epoch µs, from the server's wall clock):

1. ``create``: a screen asks; it gets a random pairing id (128 bits), a short ``code`` of
   ``PULSEBOARD_PAIRING_CODE_LENGTH`` symbols of ``CODE_ALPHABET`` (5 bits each; 40 bits by
   default) to show, and a poll ``secret`` (256 bits) only it holds.  Only ``sha256(secret)``
   is stored.  At most ``PULSEBOARD_PAIRING_MAX_PENDING`` pairings wait at once, and at most
   ``PULSEBOARD_PAIRING_MAX_PENDING_PER_IP`` from one client address, and at most
   ``PULSEBOARD_PAIRING_MAX_PENDING_PER_NETWORK`` from its /24 or /64 (``TooManyPairings``);
   the count and the insert are serialised across instances (PostgreSQL advisory transaction
   lock; SQLite's write lock), so the caps are exact.
2. ``approve``: an admin approves the code for a dashboard; the pairing records the admin key's
   id, the instant and a reserved display key id, and gets a fresh TTL for the screen to collect.
3. ``claim``: the screen presents its secret.  Pending: it keeps polling.  Approved: the display
   key is created (id reserved at approval) in the same transaction that marks the pairing
   claimed, so it is handed out once.  The key is never stored: only its hash, in ``api_key``.

Rows past ``expires_us`` answer nothing and are purged lazily (each ``create``).  Guessing:
a code only matters to an admin approving it (the route needs an admin key); with at most
``max_pending`` codes waiting, one guessed code hits one with probability
``max_pending / 32**length`` (9.1e-10 by default; settings allowing more than 1e-6 are refused).
The secret a screen polls with is 256 random bits.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.codes import RETRY_AFTER_PAIRINGS_MAX_S
from app.auth import TooManyPairings
from app.auth.keys import new_key_row
from app.config import Settings
from app.metrics.calendar import from_us
from app.store.schema import api_key, pairing

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # 32 symbols: no 0/O, no 1/I
SECRET_BYTES = 32  # 256 bits
ID_BYTES = 16  # 128 bits
CODE_TRIES = 5  # fresh codes drawn when one collides with a waiting pairing


def hash_secret(secret: str) -> bytes:
    """SHA-256 of a poll secret (any text; 256-bit secrets need no salt or slow hash)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def network_of(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The /24 (IPv4) or /64 (IPv6) network holding ``address``; ``None`` for no IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 64
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)


def normalise_code(code: str) -> str:
    """A code as typed by a person: surrounding blanks, inner spaces and dashes dropped, upper case."""
    return code.strip().replace(" ", "").replace("-", "").upper()


@dataclass(frozen=True, slots=True)
class NewPairing:
    """What a screen is given: the code to show, its poll secret, and when both expire (µs)."""

    code: str
    secret: str
    expires_us: int


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a screen's claim: ``status`` 'pending' (with ``code``) or 'approved'
    (with ``key``, the new display key, and ``dashboard``)."""

    status: str
    code: str | None = None
    key: str | None = None
    dashboard: str | None = None


class PairingStore:
    """Pairings in the store.

    Args:
        engine: the store (SQLite or PostgreSQL; the ``pairing`` table is migrated).
        settings: TTL, limits and code length (``pairing_*``).
    """

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self.ttl_us = int(settings.pairing_ttl_s * 1_000_000)
        self.max_pending = settings.pairing_max_pending
        self.max_pending_per_ip = settings.pairing_max_pending_per_ip
        self.max_pending_per_network = settings.pairing_max_pending_per_network
        self.code_length = settings.pairing_code_length

    def _new_code(self) -> str:
        return "".join(secrets.choice(CODE_ALPHABET) for _ in range(self.code_length))

    async def create(self, now_us: int, client_ip: str, dashboard: str | None = None) -> NewPairing:
        """A new waiting pairing for a screen at ``client_ip`` that asks for ``dashboard``.

        Purges expired pairings first.

        Raises:
            TooManyPairings: ``max_pending`` pairings wait already, or ``max_pending_per_ip``
                from ``client_ip``.
        """
        client_ip = client_ip[:64]
        for attempt in range(CODE_TRIES):
            try:
                return await self._create(now_us, client_ip, dashboard)
            except IntegrityError:  # the code collided with a waiting one (or raced a purge)
                if attempt == CODE_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _create(self, now_us: int, client_ip: str, dashboard: str | None) -> NewPairing:
        waiting = pairing.c.claimed_us.is_(None)
        async with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # count-then-insert, one at a time across instances
                await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.pairing'))"))
            # (SQLite: the DELETE takes the file's write lock first, which serialises the same way.)
            await conn.execute(delete(pairing).where(pairing.c.expires_us <= now_us))
            total, oldest = (
                await conn.execute(select(func.count(), func.min(pairing.c.expires_us)).where(waiting))
            ).one()
            if total >= self.max_pending:
                raise TooManyPairings(self._retry_after(oldest, now_us), per_ip=False)
            mine, oldest_mine = (
                await conn.execute(
                    select(func.count(), func.min(pairing.c.expires_us)).where(
                        waiting, pairing.c.client_ip == client_ip
                    )
                )
            ).one()
            if mine >= self.max_pending_per_ip:
                raise TooManyPairings(self._retry_after(oldest_mine, now_us), per_ip=True)
            net = network_of(client_ip)
            if net is not None:  # at most max_pending rows: counted here, in the same lock
                rows = (await conn.execute(select(pairing.c.client_ip, pairing.c.expires_us).where(waiting))).all()
                near = [expires for ip, expires in rows if network_of(ip) == net]
                if len(near) >= self.max_pending_per_network:
                    raise TooManyPairings(self._retry_after(min(near), now_us), per_ip=True, network=str(net))
            made = NewPairing(self._new_code(), secrets.token_urlsafe(SECRET_BYTES), now_us + self.ttl_us)
            await conn.execute(
                pairing.insert(),
                {
                    "id": secrets.token_hex(ID_BYTES),
                    "code": made.code,
                    "secret_hash": hash_secret(made.secret),
                    "requested_dashboard": dashboard,
                    "client_ip": client_ip,
                    "created_us": now_us,
                    "expires_us": made.expires_us,
                },
            )
        return made

    @staticmethod
    def _retry_after(oldest_expires_us: int | None, now_us: int) -> int:
        if oldest_expires_us is None:
            return RETRY_AFTER_PAIRINGS_MAX_S
        return max(1, min(RETRY_AFTER_PAIRINGS_MAX_S, math.ceil((oldest_expires_us - now_us) / 1e6)))

    async def preapproved(self, dashboard: str, name: str, now_us: int, approved_by: str | None = None) -> NewPairing:
        """An approved pairing whose secret hands out a new display key of ``dashboard`` once
        (``pulseboard demo``'s one-time wall link).  Not subject to the waiting limits."""
        made = NewPairing(self._new_code(), secrets.token_urlsafe(SECRET_BYTES), now_us + self.ttl_us)
        async with self._engine.begin() as conn:
            await conn.execute(
                pairing.insert(),
                {
                    "id": secrets.token_hex(ID_BYTES),
                    "code": made.code,
                    "secret_hash": hash_secret(made.secret),
                    "requested_dashboard": dashboard,
                    "client_ip": "local",
                    "created_us": now_us,
                    "expires_us": made.expires_us,
                    "approved_by": approved_by,
                    "approved_us": now_us,
                    "dashboard": dashboard,
                    "key_name": name,
                    "key_id": secrets.token_hex(16),
                },
            )
        return made

    async def find_code(self, code: str, now_us: int) -> Any | None:
        """The unexpired pairing row showing ``code`` (approved or claimed ones too), or ``None``."""
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    select(pairing).where(pairing.c.code == normalise_code(code)[:16], pairing.c.expires_us > now_us)
                )
            ).first()

    async def approve(self, pairing_id: str, dashboard: str, name: str, approved_by: str, now_us: int) -> str | None:
        """Approve waiting pairing ``pairing_id`` for ``dashboard``; return the display key id
        the screen's claim will create, or ``None`` if it is no longer waiting (approved,
        claimed or expired meanwhile: another admin or instance was first)."""
        key_id = secrets.token_hex(16)
        async with self._engine.begin() as conn:
            done = await conn.execute(
                update(pairing)
                .where(
                    pairing.c.id == pairing_id,
                    pairing.c.approved_us.is_(None),
                    pairing.c.expires_us > now_us,
                )
                .values(
                    approved_by=approved_by,
                    approved_us=now_us,
                    dashboard=dashboard,
                    key_name=name,
                    key_id=key_id,
                    expires_us=now_us + self.ttl_us,
                )
            )
        return key_id if done.rowcount == 1 else None

    async def claim(self, secret: str, now_us: int) -> Claim | None:
        """The screen holding ``secret`` collects its pairing: ``None`` when there is no such
        unexpired, unclaimed pairing; pending; or approved with the new display key (once)."""
        digest = hash_secret(secret)
        live = and_(pairing.c.secret_hash == digest, pairing.c.expires_us > now_us, pairing.c.claimed_us.is_(None))
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(pairing).where(live))).first()
        if row is None:
            return None
        if row.approved_us is None:
            return Claim("pending", code=row.code)
        key, key_row = new_key_row(
            "display", row.key_name or "wall screen", now_us, dashboard=row.dashboard, key_id=row.key_id
        )
        async with self._engine.begin() as conn:
            taken = await conn.execute(update(pairing).where(pairing.c.id == row.id, live).values(claimed_us=now_us))
            if taken.rowcount != 1:
                return None  # claimed meanwhile (a second poll of the same screen)
            await conn.execute(api_key.insert(), key_row)
        return Claim("approved", key=key, dashboard=row.dashboard)

    async def waiting(self, now_us: int) -> list[dict[str, Any]]:
        """Pairings waiting for approval, oldest first (for admins: code, requested dashboard,
        client address, created and expiry instants)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(pairing)
                .where(pairing.c.expires_us > now_us, pairing.c.approved_us.is_(None))
                .order_by(pairing.c.created_us)
            )
            return [
                {
                    "code": r.code,
                    "dashboard": r.requested_dashboard,
                    "client_ip": r.client_ip,
                    "created_at": from_us(r.created_us).isoformat(),
                    "expires_at": from_us(r.expires_us).isoformat(),
                }
                for r in rows
            ]
