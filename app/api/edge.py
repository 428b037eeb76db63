"""The HTTP connection edge: uvicorn's httptools protocol with the limits a server facing
untrusted clients needs before a request reaches the app (issue 10, items 3 and 5).

``EdgeHttpProtocol`` (passed to uvicorn as ``http=``, built by ``edge_protocol``) adds:

- **header size caps**: a request target over ``max_url_bytes`` is answered ``414 URI Too Long``,
  more than ``max_headers`` headers, one header over ``max_header_line_bytes`` or all headers
  over ``max_header_bytes`` ``431 Request Header Fields Too Large`` (RFC 9110 §15.5.15, RFC 6585
  §5); both close the connection.  The caps are checked as the parser delivers the bytes, so
  at most one read buffer more than the cap is ever held.  A WebSocket handshake goes through
  the same parser first, so an oversize handshake gets the same answer (the ``websockets``
  parser behind it would otherwise fail on a line over 8 KiB without answering).
- **a header-read timeout**: the request line and headers must arrive within
  ``header_timeout_s`` of the connection opening (or of the previous response on a kept-alive
  connection, whose idle time ``timeout_keep_alive`` bounds), else ``408 Request Timeout`` and
  the connection is closed (slowloris).
- **a per-address connection cap**: past ``max_connections_per_ip`` open connections from one
  peer address, a new one gets ``503`` and is closed.  Peers listed in uvicorn's
  ``forwarded_allow_ips`` (the reverse proxy) are not capped: behind a proxy, every client
  shares its address.

The process-wide cap is uvicorn's own ``limit_concurrency`` (503 past it); the body limits and
the minimum body rate are ``app.api.limits.BodyLimits`` (ASGI).  Answers are
``application/problem+json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import Settings

log = logging.getLogger(__name__)

PHRASES = {
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class AddressCounter:
    """Open connections by peer address (shared by the HTTP and WebSocket protocols of one server).

    Args:
        cap: most connections from one address.
        exempt: addresses never capped (the trusted proxies); ``"*"`` exempts everyone.
    """

    def __init__(self, cap: int, exempt: frozenset[str] = frozenset()) -> None:
        self.cap = cap
        self.exempt = exempt
        self.open: dict[str, int] = {}

    def add(self, address: str) -> bool:
        """Count one connection from ``address``; ``False`` (nothing counted) when it is at its cap."""
        if "*" in self.exempt or address in self.exempt:
            return True
        held = self.open.get(address, 0)
        if held >= self.cap:
            return False
        self.open[address] = held + 1
        return True

    def discard(self, address: str) -> None:
        """Forget one connection of ``address`` (counted by ``add``)."""
        if "*" in self.exempt or address in self.exempt:
            return
        held = self.open.get(address, 0) - 1
        if held > 0:
            self.open[address] = held
        else:
            self.open.pop(address, None)


class _Refused(Exception):
    """Raised from a parser callback: answer ``status`` and close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def refusal_bytes(status: int, detail: str) -> bytes:
    """A complete ``status`` response with a problem+json body and ``Connection: close``."""
    body = json.dumps(
        {"type": "about:blank", "title": PHRASES.get(status, "Error"), "status": status, "detail": detail}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {PHRASES.get(status, 'Error')}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n" + ("retry-after: 5\r\n" if status == 503 else "") + "\r\n"
    )
    return head.encode("ascii") + body


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header caps, a header-read timeout and a per-address
    connection cap (see the module docstring).  Configure through ``edge_protocol``."""

    max_url_bytes = 8000
    max_header_bytes = 16_384
    max_header_line_bytes = 8000
    max_headers = 100
    header_timeout_s = 10.0
    addresses: AddressCounter | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._refusal: _Refused | None = None
        self._counted: str | None = None
        self._in_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        if self.addresses is not None and address is not None:
            if not self.addresses.add(address):
                log.warning("connection cap per address (%d) reached for %s; refusing", self.addresses.cap, address)
                transport.write(refusal_bytes(503, "too many connections from this address; retry later"))
                transport.close()
                return
            self._counted = address
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._counted is not None and self.addresses is not None:
            self.addresses.discard(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        cycle: Any = self.cycle  # None before the first request
        if cycle is not None and not cycle.response_complete and not self._in_headers:
            return  # a request is being served (its body has its own rate limit)
        log.info("headers not complete within %.1f s; closing", self.header_timeout_s)
        self.transport.write(
            refusal_bytes(408, f"the request headers did not arrive within {self.header_timeout_s:g} s")
        )
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        refusal = self._refusal
        if refusal is None:
            super().send_400_response(msg)
            return
        log.info("refused a request: %d %s", refusal.status, refusal.detail)
        self._cancel_header_timer()
        self.transport.write(refusal_bytes(refusal.status, refusal.detail))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._in_headers = True
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_url_bytes:
            self._refuse(414, f"the request target is over {self.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        line = len(name) + len(value) + 4
        self._header_bytes += line
        if line > self.max_header_line_bytes:
            self._refuse(431, f"a header is over {self.max_header_line_bytes} bytes")
        if len(self.headers) > self.max_headers:
            self._refuse(431, f"more than {self.max_headers} headers")
        if self._header_bytes > self.max_header_bytes:
            self._refuse(431, f"the headers are over {self.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # the next request's headers (keep-alive idle is timeout_keep_alive)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_header_timer()
        super().handle_websocket_upgrade()
        # The transport now belongs to the WebSocket protocol, which counts its address itself.
        if self._counted is not None and self.addresses is not None:
            self.addresses.discard(self._counted)
            self._counted = None

    def _refuse(self, status: int, detail: str) -> None:
        self._refusal = _Refused(status, detail)
        raise self._refusal  # httptools turns it into HttpParserCallbackError: send_400_response answers


def edge_protocol(
    *,
    max_url_bytes: int,
    max_header_bytes: int,
    max_header_line_bytes: int,
    max_headers: int,
    header_timeout_s: float,
    addresses: AddressCounter | None,
) -> type[EdgeHttpProtocol]:
    """``EdgeHttpProtocol`` with these limits (bytes, a count, seconds); pass it to uvicorn as ``http=``."""
    return type(
        "EdgeHttpProtocol",
        (EdgeHttpProtocol,),
        {
            "max_url_bytes": max_url_bytes,
            "max_header_bytes": max_header_bytes,
            "max_header_line_bytes": max_header_line_bytes,
            "max_headers": max_headers,
            "header_timeout_s": header_timeout_s,
            "addresses": addresses,
        },
    )


def address_counter(settings: Settings) -> AddressCounter:
    """The per-address connection counter of one server process: ``max_connections_per_ip``, the
    trusted proxies of ``FORWARDED_ALLOW_IPS`` (uvicorn's own variable and default, ``127.0.0.1``)
    exempt."""
    trusted = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    return AddressCounter(
        settings.max_connections_per_ip, frozenset(a.strip() for a in trusted.split(",") if a.strip())
    )


def configured_protocol(settings: Settings, addresses: AddressCounter | None) -> type[EdgeHttpProtocol]:
    """``edge_protocol`` with the limits of ``settings`` counting connections in ``addresses``."""
    return edge_protocol(
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_header_line_bytes=settings.max_header_line_bytes,
        max_headers=settings.max_headers,
        header_timeout_s=settings.header_timeout_s,
        addresses=addresses,
    )
