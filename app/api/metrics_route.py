"""``GET /metrics`` (Prometheus text format) and the middleware counting HTTP requests.

Access: a key with the ``read`` or ``admin`` scope (``Authorization: Bearer ...``, as for every
read route), or nobody's key at all with ``PULSEBOARD_METRICS_PUBLIC=true``, meant for a server
bound to a private address that only the scraper reaches.  ``PULSEBOARD_METRICS_ENABLED=false``
answers 404.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import observability as obs
from app.auth.deps import SCOPE_KEY, authenticate, check_scope

router = APIRouter()
METRICS_SCOPES = ("read", "admin")


@router.get(
    "/metrics",
    summary="Prometheus metrics of every worker of this server",
    include_in_schema=False,
    openapi_extra={SCOPE_KEY: list(METRICS_SCOPES)},
)
async def metrics(request: Request) -> Response:
    """The scrape (``text/plain; version=0.0.4``).

    Raises:
        Unauthenticated, Forbidden: no usable key, or one without the ``read``/``admin`` scope
            (unless ``PULSEBOARD_METRICS_PUBLIC``).
        HTTPException: 404 when ``PULSEBOARD_METRICS_ENABLED`` is false.
    """
    settings = request.app.state.runtime.settings
    if not settings.metrics_enabled:
        raise HTTPException(404, "metrics are disabled (PULSEBOARD_METRICS_ENABLED=false)")
    if not settings.metrics_public:
        check_scope(await authenticate(request), METRICS_SCOPES)
    body, content_type = obs.render()
    return Response(body, media_type=content_type)


class RequestCounter:
    """Pure ASGI middleware: ``pulseboard_http_requests_total{route, status}`` per HTTP response
    (``route`` = the matched route's path template, ``other`` when none matched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [0]

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            obs.HTTP_REQUESTS.labels(route, str(status[0] or 500)).inc()
