"""One body limit for every route, and a minimum body rate (issue 10, items 3 and 5).

``BodyLimits`` is a pure ASGI middleware in front of every HTTP route:

- ``POST /api/v1/events`` may send ``PULSEBOARD_MAX_BODY_BYTES`` (its handler, ``read_body``,
  also enforces it while streaming and after gzip); every other route (sign-in, pairings, keys,
  notes, approvals: small JSON) ``PULSEBOARD_CONTROL_MAX_BODY_BYTES``.
- The limit is checked from ``Content-Length`` before anything is read, and while the body
  streams in (chunked bodies): ``413`` problem+json with ``Connection: close`` as soon as it
  is crossed.  A control body is read whole here (it is small) before the route runs, so a
  route never sees more than the limit; an ingest body streams through, counted.
- A JSON control body that names a key twice is refused (422 naming it): ``json`` would keep
  the last one silently, and another parser in front (a proxy, a WAF) may keep the first.
- **Minimum body rate**: after ``PULSEBOARD_BODY_GRACE_S`` a body must have arrived at
  ``PULSEBOARD_MIN_BODY_BYTES_PER_S`` on average (the time spent waiting for the client may be at
  most grace + received / rate; time the server itself takes before reading does not count),
  else ``408`` problem+json and the connection is closed: a client trickling bytes cannot hold
  a request (and its memory) forever.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem
from app.config import Settings
from app.ingest import PayloadTooLarge, RequestTimeout

INGEST_PATH = "/api/v1/events"


class _Refused(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


class _Waited:
    """Seconds one request's body reading has spent waiting for the client."""

    __slots__ = ("waited_s",)

    def __init__(self) -> None:
        self.waited_s = 0.0


class BodyLimits:
    """Pure ASGI middleware: body size limits by route and the minimum body rate (module docstring).

    Args:
        app: the wrapped application.
        settings: ``max_body_bytes`` (ingest), ``control_max_body_bytes`` (every other route),
            ``body_grace_s`` and ``min_body_bytes_per_s``.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.ingest_max = settings.max_body_bytes
        self.control_max = settings.control_max_body_bytes
        self.grace_s = settings.body_grace_s
        self.min_rate = settings.min_body_bytes_per_s

    def limit_for(self, scope: Scope) -> int:
        """The body limit (bytes) of the request ``scope``."""
        return self.ingest_max if scope["path"] == INGEST_PATH else self.control_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        length = _content_length(scope)
        if length is not None and length > limit:
            await self._refuse(scope, receive, send, 413, "Payload too large", _over(length, limit))
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and length in (None, 0) and not _chunked(scope):
            await self.app(scope, receive, send)
            return
        waited = _Waited()
        if scope["path"] == INGEST_PATH:
            await self.app(scope, self._streaming(receive, limit, waited), send)
            return
        try:
            body = await self._read_all(receive, limit, waited)
        except _Refused as refused:
            await self._refuse(scope, receive, send, refused.status, refused.title, refused.detail)
            return
        duplicate = _duplicate_key(scope, body)
        if duplicate is not None:
            response = problem(
                422,
                "Invalid request parameters",
                f"the JSON body names {duplicate!r} twice",
                [{"field": duplicate, "message": "duplicate key"}],
            )
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _next(self, receive: Receive, clock: _Waited, received: int) -> Message:
        """The next message, refused (408) once the time spent waiting for the client passes
        ``grace + received / min_rate``.  Only waiting counts: time the server takes before it
        reads (authentication, a busy store) is not the client's."""
        budget_s = self.grace_s + received / self.min_rate - clock.waited_s
        t0 = time.monotonic()
        try:
            return await asyncio.wait_for(receive(), max(budget_s, 0.001))
        except TimeoutError:
            raise _Refused(408, "Request timeout", self._slow_detail()) from None
        finally:
            clock.waited_s += time.monotonic() - t0

    def _slow_detail(self) -> str:
        return (
            f"the body arrived slower than {self.min_rate} bytes a second "
            f"(after a grace of {self.grace_s:g} s); send it at once"
        )

    async def _read_all(self, receive: Receive, limit: int, waited: _Waited) -> bytes:
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await self._next(receive, waited, received)
            if message["type"] != "http.request":
                raise _Refused(400, "Bad request", "the client went away before the body was complete")
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise _Refused(413, "Payload too large", f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _streaming(self, receive: Receive, limit: int, waited: _Waited) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            try:
                message = await self._next(receive, waited, received)
            except _Refused as refused:
                raise RequestTimeout(refused.detail) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"body is over the limit of {limit} bytes", headers={"Connection": "close"})
            return message

        return counted

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, title: str, detail: str) -> None:
        response = problem(status, title, detail, headers={"Connection": "close"})
        await response(scope, receive, send)


def _over(length: int, limit: int) -> str:
    return f"body of {length} bytes is over the limit of {limit} bytes for this route"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    if raw is None:
        return None
    text = raw.strip()
    return int(text) if text.isdigit() and len(text) <= 18 else None


def _chunked(scope: Scope) -> bool:
    raw = _header(scope, b"transfer-encoding")
    return raw is not None and b"chunked" in raw.lower()


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def _duplicate_key(scope: Scope, body: bytes) -> str | None:
    """The first key a JSON control body names twice (``{"scope": "read", "scope": "admin"}``),
    else ``None`` (also for bodies that are not JSON: the route answers those)."""
    media = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
    if not body or not (media == b"application/json" or media.endswith(b"+json")):
        return None
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        return str(dup.args[0])
    except (ValueError, RecursionError):
        return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` giving ``body`` whole once, then whatever the connection says next (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
