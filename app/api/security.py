"""Security headers on every HTTP response (OWASP secure headers).

- ``Content-Security-Policy``: scripts only from this origin (no inline script, no eval),
  connections only to this origin (its WebSockets included), ``frame-ancestors`` from
  ``PULSEBOARD_FRAME_ANCESTORS`` (default ``'none'``; set it to a kiosk's origin to embed a
  wall).  Styles allow ``'unsafe-inline'`` because the charting library writes style elements.
  The interactive API docs (``/docs``, ``/redoc``) load their UI from a CDN and are left out;
  they are off unless ``PULSEBOARD_DOCS_ENABLED`` is set (then only on a trusted network).
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``Cross-Origin-Opener-Policy: same-origin``.
- ``Cache-Control: private`` on every answer to a request carrying a key (``Authorization`` or
  the session cookie) that sets no ``Cache-Control`` of its own (issue 10, item 20).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")


def content_security_policy(frame_ancestors: str) -> str:
    """The CSP header value (see the module docstring)."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
        ]
    )


class SecurityHeaders:
    """Pure ASGI middleware adding the headers above to HTTP responses (not WebSockets)."""

    def __init__(self, app: ASGIApp, frame_ancestors: str = "'none'", docs_enabled: bool = False) -> None:
        self.app = app
        self._docs_paths = DOCS_PATHS if docs_enabled else ()
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        self._headers = common + [(b"content-security-policy", content_security_policy(frame_ancestors).encode())]
        self._docs_headers = common

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._docs_headers if scope["path"] in self._docs_paths else self._headers
        credentialed = any(
            k == b"authorization" or (k == b"cookie" and b"pb_key=" in v) for k, v in scope.get("headers", ())
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + extra
                if credentialed and not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"private"))  # a shared cache never keeps a keyed answer
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
