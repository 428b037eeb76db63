"""The WebSocket transport screens are served on: uvicorn's websockets (sans-I/O) protocol
plus a direct write path for pre-encoded frames.

Through ASGI every frame a screen gets costs an awaited ``send`` (a wait on the
connection's ``writable`` event, a text re-encode, a frame build and a write) per
screen.  A tile update is the same bytes for every screen of a dashboard, and a
server's frames are not masked, so the whole wire frame (header + JSON) can be built
once (``text_frame``) and written to each screen's transport as is, without awaiting
anything - what ``websockets.broadcast()`` does, minus its per-connection framing.

``DirectWebSocketProtocol`` (passed to uvicorn as ``ws=``, see ``app.cli.uvicorn_options``)
puts itself in the ASGI scope under ``scope["extensions"][DIRECT_EXTENSION]`` so the
endpoint can use ``write_frame`` / ``close_now``.  Everything else (handshake, pings,
reads, the ASGI ``send`` path, close on shutdown with 1012) is uvicorn's.
"""

from __future__ import annotations

import logging
from asyncio import BaseTransport
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State

from app.api.codes import CLOSE_POLICY_VIOLATION
from app.api.edge import AddressCounter
from app.auth.ratelimit import TokenBucket

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent  # the parameter type of the method overridden

DIRECT_EXTENSION = "pulseboard.direct_send"
FLOOD_ABORT_AFTER_S = 1.0
"""A screen closed for flooding that does not finish the close is aborted after this (s)."""
log = logging.getLogger(__name__)


def text_frame(payload: bytes) -> bytes:
    """The wire bytes of one final, unmasked text frame carrying ``payload`` (UTF-8 JSON),
    as a server sends it (RFC 6455 §5.2); identical for every connection without extensions."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with a non-blocking write path.

    ``write_frame(wire)`` writes a frame built by ``text_frame`` straight to the
    transport when the connection is open and its write buffer is under the
    transport's high-water mark (the kernel took the previous frames); otherwise it
    returns ``False`` and writes nothing.  ``on_drain`` (set by the endpoint) is called
    when the buffer drains below the low-water mark after having been over the high one.
    """

    on_drain: Callable[[], None] | None = None
    write_buffer_high_bytes: int | None = None
    inbound_frames_per_s: float | None = None
    inbound_bytes_per_s: float | None = None
    inbound_bytes_burst: float = 0.0
    addresses: AddressCounter | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._frames: TokenBucket | None = None
        self._bytes: TokenBucket | None = None
        self._counted: str | None = None
        self.flooded = False

    def connection_made(self, transport: BaseTransport) -> None:
        super().connection_made(transport)
        if self.write_buffer_high_bytes is not None:
            self.transport.set_write_buffer_limits(high=self.write_buffer_high_bytes)
        now = self.loop.time()
        if self.inbound_frames_per_s is not None:
            self._frames = TokenBucket(self.inbound_frames_per_s, 2 * self.inbound_frames_per_s, now)
        if self.inbound_bytes_per_s is not None:
            self._bytes = TokenBucket(self.inbound_bytes_per_s, self.inbound_bytes_burst, now)
        address = self.client[0] if self.client else None
        if self.addresses is not None and address is not None and self.addresses.add(address):
            self._counted = address  # the HTTP protocol let it in and forgot it at the upgrade

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted is not None and self.addresses is not None:
            self.addresses.discard(self._counted)
            self._counted = None
        super().connection_lost(exc)

    # Inbound limits (issue 10, item 4): every byte and every frame a peer sends, control frames
    # included, is taken from a token bucket before it is parsed; past either the connection is
    # closed with 1008 and reading stops, so one peer cannot keep the event loop busy answering pings.

    def data_received(self, data: bytes) -> None:
        if self.flooded:
            return
        if self._bytes is not None and self.handshake_complete and self._bytes.take(self.loop.time(), len(data)):
            self._flood(f"more than {self.inbound_bytes_per_s:g} bytes a second")
            return
        super().data_received(data)

    def _frame_allowed(self) -> bool:
        if self.flooded:
            return False
        if self._frames is not None and self._frames.take(self.loop.time()):
            self._flood(f"more than {self.inbound_frames_per_s:g} frames a second")
            return False
        return True

    def _flood(self, what: str) -> None:
        self.flooded = True
        log.warning("WebSocket peer %s sent %s; closing with 1008", self.client[0] if self.client else "?", what)
        self.transport.pause_reading()
        self.read_paused = True
        if self.handshake_complete and not self.close_sent:
            self.close_now(CLOSE_POLICY_VIOLATION, "too much inbound traffic", abort_after_s=FLOOD_ABORT_AFTER_S)
            self.transport.pause_reading()  # close_now resumes reading for the close handshake: not here
        else:
            self.transport.abort()

    def handle_ping(self) -> None:
        if self._frame_allowed():
            super().handle_ping()

    def handle_pong(self, event: Frame) -> None:
        if self._frame_allowed():
            super().handle_pong(event)

    def handle_text(self, event: Frame) -> None:
        if self._frame_allowed():
            super().handle_text(event)

    def handle_bytes(self, event: Frame) -> None:
        if self._frame_allowed():
            super().handle_bytes(event)

    def handle_cont(self, event: Frame) -> None:
        if self._frame_allowed():
            super().handle_cont(event)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        # Only without extensions (no permessage-deflate): then frames are the same bytes for all.
        if scope is not None and not self.conn.extensions:
            scope["extensions"][DIRECT_EXTENSION] = self

    def is_open(self) -> bool:
        """The handshake is done and neither side started closing."""
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.conn.state is State.OPEN
            and not self.transport.is_closing()
        )

    def backlogged(self) -> bool:
        """The write buffer is over the high-water mark (the screen is not reading fast enough)."""
        return not self.writable.is_set()

    def write_frame(self, wire: bytes) -> bool:
        """Write one pre-built frame (``text_frame``) now; ``False`` (nothing written) when the
        connection is not open or its write buffer is over the high-water mark."""
        if not self.writable.is_set() or not self.is_open():
            return False
        self.transport.write(wire)
        return True

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        # uvicorn's websockets-sansio protocol (0.54) never marks the handshake done after a
        # denial response (the ASGI websocket.http.response extension), so every screen refused
        # at the handshake (an unpaired wall: 401) was logged at ERROR as "ASGI callable returned
        # without completing handshake" (uvicorn PR #3138 does the same fix; wsproto does it).
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_drain is not None:
            self.on_drain()

    def close_now(self, code: int, reason: str, abort_after_s: float) -> None:
        """Start the closing handshake with ``code`` without waiting for the buffer to drain:
        the close frame is queued behind what is already buffered, the app's ``receive``
        gets ``websocket.disconnect`` at once, and the TCP connection is aborted (its
        buffer freed) if the peer has not completed the close within ``abort_after_s``."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.conn.state is State.OPEN:
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.on_drain = None
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(abort_after_s, self.transport.abort)


def direct_protocol(
    write_buffer_high_bytes: int,
    inbound_frames_per_s: float | None = None,
    inbound_bytes_per_s: float | None = None,
    max_frame_bytes: int = 65_536,
    addresses: AddressCounter | None = None,
) -> type[DirectWebSocketProtocol]:
    """``DirectWebSocketProtocol`` with its transport's write-buffer high-water mark at
    ``write_buffer_high_bytes`` (a screen's socket takes no new frame past it: its updates
    merge in its one-update outbox), the inbound limits (frames a second, any kind; bytes a
    second, with a burst of two largest frames; ``None``: unlimited) and the per-address counter
    shared with the HTTP protocol; pass it to uvicorn as ``ws=``."""
    burst = max(float(inbound_bytes_per_s or 0), 2.0 * (max_frame_bytes + 14))
    return type(
        "DirectWebSocketProtocol",
        (DirectWebSocketProtocol,),
        {
            "write_buffer_high_bytes": write_buffer_high_bytes,
            "inbound_frames_per_s": inbound_frames_per_s,
            "inbound_bytes_per_s": inbound_bytes_per_s,
            "inbound_bytes_burst": burst,
            "addresses": addresses,
        },
    )
