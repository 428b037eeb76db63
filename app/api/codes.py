"""Status constants of the HTTP and WebSocket edge, named once: WebSocket close codes and
``Retry-After`` (the header's name and the delays the server asks for).

Close codes (RFC 6455 §7.4.1; 4000-4999 are private to the application, CONTRACT §4)::

    code  name                     sent by     when
    1008  CLOSE_POLICY_VIOLATION   Pulseboard  a screen sent more than PULSEBOARD_WS_MAX_INBOUND_PER_S messages
                                               a second (before the handshake completes, a foreign Origin or an
                                               unknown dashboard: the client sees HTTP 403)
    1009  CLOSE_MESSAGE_TOO_BIG    websockets  an inbound frame over PULSEBOARD_WS_MAX_INBOUND_BYTES
    1011  CLOSE_INTERNAL_ERROR     websockets  no pong within PULSEBOARD_WS_PING_TIMEOUT_S (keepalive)
    1012  CLOSE_SERVICE_RESTART    uvicorn     SIGTERM: the process is stopping; reconnect and resync
    1013  CLOSE_TRY_AGAIN_LATER    Pulseboard  the process holds PULSEBOARD_WS_MAX_CONNECTIONS sockets
    4008  CLOSE_SLOW_CONSUMER      Pulseboard  the screen's socket took no frame for PULSEBOARD_WS_SEND_TIMEOUT_S
    4401  CLOSE_KEY_REVOKED        Pulseboard  the screen's key was revoked or expired

The codes websockets and uvicorn send are listed so that tests and clients name them the same way.
"""

from __future__ import annotations

import math

CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_SLOW_CONSUMER = 4008
CLOSE_KEY_REVOKED = 4401

RETRY_AFTER = "Retry-After"
"""The header of a 429 or 503 (and of a 409 for a request still in flight): whole seconds to wait."""

RETRY_AFTER_STORE_S = 2
"""The store did not answer (503): a database that is down, hangs or has no free connection."""
RETRY_AFTER_OVERLOADED_S = 1
"""The ingest queue holds ``PULSEBOARD_INGEST_QUEUE_MAX_EVENTS`` events already (503)."""
RETRY_AFTER_IN_FLIGHT_S = 1
"""A request with the same ``Idempotency-Key`` is still being processed (409)."""
RETRY_AFTER_SCREENS_PER_KEY_S = 30
"""The key holds ``PULSEBOARD_WS_MAX_CONNECTIONS_PER_KEY`` open screens (429 at the handshake)."""
RETRY_AFTER_PAIRINGS_MAX_S = 30
"""Too many pairings wait (429): until the oldest one expires, but at most this long."""


def retry_after(wait_s: float) -> str:
    """A ``Retry-After`` value: ``wait_s`` (seconds, any float) as whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
