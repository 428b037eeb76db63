"""Access: API keys with scopes, checked on every route.

Scopes: ``ingest`` (post events; bound to one source, optionally to event types),
``read`` (every read), ``display`` (one dashboard, read-only: its WebSocket and its
dashboard read), ``admin`` (everything but ingest: keys, cuts, commentary, publishing,
and all reads).  Keys are random (240 bits) with a typed prefix per scope, shown once,
stored as a SHA-256 hash with the prefix and the last four characters.

Exception tree::

    AuthError
     ├── Unauthenticated   no, malformed, unknown, revoked or expired key (401, one answer for all)
     └── Forbidden         a valid key of the wrong scope or binding (403)
          └── NotVisible   a display key asking for another dashboard: 404 on HTTP, as for an
                           unknown one (BAD_INPUTS 28: another dashboard's id is not confirmed);
                           403 at a WebSocket handshake (BAD_INPUTS 30)
"""


class AuthError(Exception):
    """Base of access errors."""


class Unauthenticated(AuthError):
    """The request carries no usable key.  The message is the same whatever the reason."""


class Forbidden(AuthError):
    """The key is valid but may not do this; the message says why."""


class NotVisible(Forbidden):
    """A display key asked for a dashboard other than its own (answered like an unknown one)."""
