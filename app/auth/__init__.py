"""Access: API keys with scopes, checked on every route.

Scopes: ``ingest`` (post events; bound to one source, optionally to event types),
``read`` (every read), ``display`` (one dashboard, read-only: its WebSocket and its
dashboard read), ``admin`` (everything but ingest: keys, cuts, commentary, publishing,
and all reads).  Keys are random (240 bits) with a typed prefix per scope, shown once,
stored as a SHA-256 hash with the prefix and the last four characters.

Exception tree (each maps to one problem+json answer, ``app.api.problems``)::

    AuthError
     ├── Unauthenticated       401  no, malformed, unknown, revoked or expired key (one answer for all)
     ├── Forbidden             403  a valid key of the wrong scope or binding
     │    └── NotVisible       404  a display key asking for another dashboard: as for an unknown one
     │                              (BAD_INPUTS 28: another dashboard's id is not confirmed);
     │                              403 at a WebSocket handshake (BAD_INPUTS 30)
     ├── InvalidField          422  one field of the request is refused (``errors`` names it)
     │    ├── InvalidKey            a key that cannot be made as asked
     │    └── InvalidPairing        a pairing for an unknown dashboard, or approved for none
     ├── AlreadyApproved       409  a pairing code approved before (a screen pairs once)
     └── RateLimited           429  over a per-key rate or a cap (``Retry-After``)
          └── TooManyPairings       too many pairings wait (all screens, or this client address)
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of access errors."""


class Unauthenticated(AuthError):
    """The request carries no usable key.  The message is the same whatever the reason."""


class Forbidden(AuthError):
    """The key is valid but may not do this; the message says why."""


class NotVisible(Forbidden):
    """A display key asked for a dashboard other than its own (answered like an unknown one)."""


class InvalidField(AuthError):
    """One field of the request is refused.

    Args:
        detail: the sentence for the whole request.
        field: the field at fault (``scope``, ``dashboard``...).
        reason: what is wrong with it (default: ``detail``).
    """

    def __init__(self, detail: str, field: str, reason: str | None = None) -> None:
        super().__init__(detail)
        self.field = field
        self.reason = detail if reason is None else reason


class InvalidKey(InvalidField, ValueError):
    """A key cannot be created as asked: an unknown scope or dashboard, an ingest key without a
    source, a display key without a dashboard.  Also a ``ValueError`` (what the CLI reports)."""


class InvalidPairing(InvalidField):
    """A pairing names an unknown dashboard, or none where one is needed."""


class AlreadyApproved(AuthError):
    """The code was approved before (or meanwhile): a screen pairs once."""


class RateLimited(AuthError):
    """Over a rate or a cap; retry later.

    Args:
        detail: which limit, in a sentence.
        retry_after_s: seconds to wait before retrying (answered as whole seconds, at least 1).
    """

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class TooManyPairings(RateLimited):
    """Too many pairings are waiting (all clients, or this client address).

    Attributes:
        retry_after_s: whole seconds until the oldest of them expires (at least 1, at most
            ``app.api.codes.RETRY_AFTER_PAIRINGS_MAX_S``).
        per_ip: whether this client's own limit was hit (else the total).
    """

    def __init__(self, retry_after_s: int, per_ip: bool, network: str | None = None) -> None:
        what = "too many pairings from this address are waiting" if per_ip else "too many screens are waiting"
        if network is not None:
            what = f"too many pairings from the network {network} are waiting"
        super().__init__(f"{what}; retry later", retry_after_s)
        self.per_ip = per_ip
