"""Keys never reach a log line: a logging filter that blanks anything shaped like a key.

uvicorn at ``--log-level debug`` logs each WebSocket handshake's headers (``cookie: pb_key=...``,
``authorization: Bearer ...``) through ``uvicorn.error``; this filter, installed on the servers'
loggers, rewrites such records before any handler sees them.  A key is a scope prefix
(``pbi_``/``pbr_``/``pbd_``/``pba_``) and its URL-safe token (``app.auth.keys``).
"""

from __future__ import annotations

import logging
import re

KEY_RE = re.compile(r"\b(pb[irda]_)[A-Za-z0-9_\-]{8,}")
REDACTED = r"\1[redacted]"
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "websockets", "websockets.server", "app")


class RedactKeys(logging.Filter):
    """Replace every key in a record's message with ``<prefix>[redacted]`` (the record is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        if KEY_RE.search(message):
            record.msg, record.args = KEY_RE.sub(REDACTED, message), None
        return True


def install_key_redaction(names: tuple[str, ...] = LOGGERS) -> None:
    """Attach one ``RedactKeys`` to each named logger (idempotent).  Logger filters see only
    records logged at that logger, so each logger that may carry request headers is listed."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(RedactKeys())
