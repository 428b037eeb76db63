"""The live tile endpoint ``/ws/dashboards/{slug}`` (CONTRACT §4).

Per screen: the handshake subscribes it, sends a ``snapshot`` (or, with
``?epoch=E&since=N`` and a covered gap, the missed ``update``s), then:

* on the direct path (``app.ws.transport.DirectWebSocketProtocol``, what
  ``pulseboard serve`` runs): updates are written by the broker straight to the
  socket as they are published (one encoded frame per update for all screens),
  heartbeats by the hub's sweep; the endpoint itself only reads what the screen
  sends (pings, close).  A screen whose socket stays over its write-buffer
  high-water mark for ``ws_send_timeout_s`` (its outbox = one merged update) is
  closed with 4008, and its TCP connection aborted if it does not finish the close.
* otherwise (another ASGI server): one sender task drains the bounded outbox and
  sends heartbeats while idle, one receiver task reads; a send that takes longer
  than ``ws_send_timeout_s`` closes that screen (4008).
"""

from __future__ import annotations

import asyncio
import logging
import re

import msgspec
from fastapi import APIRouter, WebSocket
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.api.codes import (
    CLOSE_KEY_REVOKED,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TRY_AGAIN_LATER,
    RETRY_AFTER_SCREENS_PER_KEY_S,
)
from app.auth import Forbidden, RateLimited, Unauthenticated
from app.auth.deps import authenticate, check_scope
from app.auth.keys import KeyStore
from app.auth.ratelimit import TokenBucket
from app.clock import Clock
from app.cluster.link import NoLeader
from app.config import Settings
from app.metrics.calendar import to_us
from app.store import StoreUnavailable
from app.ws.broker import Subscription
from app.ws.hub import Channel
from app.ws.transport import DIRECT_EXTENSION, DirectWebSocketProtocol

log = logging.getLogger(__name__)
router = APIRouter()
_encoder = msgspec.json.Encoder()
SLOW_REASON = "too slow; reconnect to resync"
RESUME_PARAMS = ("epoch", "since")  # every other query parameter narrows the dashboard (its params)
CLOSE_GRACE_S = (
    10.0  # a screen closed by us that does not finish the close is aborted after this (uvicorn's close timeout)
)


async def _send(ws: WebSocket, frame: bytes, timeout_s: float) -> None:
    await asyncio.wait_for(ws.send({"type": "websocket.send", "text": frame.decode()}), timeout_s)


def _direct(ws: WebSocket) -> DirectWebSocketProtocol | None:
    """The screen's direct write path, when the server provides one."""
    direct = ws.scope.get("extensions", {}).get(DIRECT_EXTENSION)
    return direct if isinstance(direct, DirectWebSocketProtocol) else None


class DirectScreen:
    """The ``FrameSink`` of one screen on the direct path: writes frames to its socket, flushes
    the pending update when the socket drains, and closes the screen with 4008 when an update
    stayed pending (socket over its high-water mark) for ``timeout_s``."""

    def __init__(self, proto: DirectWebSocketProtocol, sub: Subscription, timeout_s: float, slug: str) -> None:
        self._proto = proto
        self._sub = sub
        self._timeout_s = timeout_s
        self._slug = slug
        self._timer: asyncio.TimerHandle | None = None
        self.write_wire = proto.write_frame
        proto.on_drain = self._drained

    def blocked(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._too_slow)

    def unblocked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drained(self) -> None:
        self._sub.flush()

    def _too_slow(self) -> None:
        self._timer = None
        if self._sub.pending is None:
            return
        log.info("screen on %s too slow (socket blocked > %.1f s); closing", self._slug, self._timeout_s)
        self._sub.close()  # the pending update is freed now, the subscription removed on exit
        self._proto.close_now(CLOSE_SLOW_CONSUMER, SLOW_REASON, abort_after_s=CLOSE_GRACE_S)

    def detach(self) -> None:
        """Stop the timer and the drain callback (the screen is gone)."""
        self.unblocked()
        self._proto.on_drain = None


async def _sender(ws: WebSocket, sub: Subscription, channel: Channel, heartbeat_s: float, timeout_s: float) -> None:
    """ASGI path: drain the outbox, heartbeat while idle."""
    while True:
        last_seq = sub.last_seq
        update = await sub.get(heartbeat_s)
        if update is None:
            frame = channel.heartbeat_frame(last_seq)
        elif update.seq <= last_seq:
            continue
        else:
            frame = update.encode()
        await _send(ws, frame, timeout_s)


class TooChatty(Exception):
    """A screen sent more messages than allowed; it is closed with 1008."""


async def _receiver(ws: WebSocket, timeout_s: float, max_per_s: float) -> None:
    loop = asyncio.get_running_loop()
    bucket = TokenBucket(max_per_s, max_per_s, loop.time())  # max_per_s messages a second, bursts of max_per_s
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if bucket.take(loop.time()):
            raise TooChatty()
        text = message.get("text")
        if text is not None:
            try:
                kind = msgspec.json.decode(text).get("type")
            except (msgspec.DecodeError, AttributeError):
                kind = None
            if kind == "ping":
                await _send(ws, b'{"type":"pong"}', timeout_s)
                continue
        await _send(
            ws,
            _encoder.encode({"type": "error", "message": 'unknown message; screens only send {"type": "ping"}'}),
            timeout_s,
        )


async def _close(ws: WebSocket, code: int, reason: str, abort_after_s: float = CLOSE_GRACE_S) -> None:
    """Close ``ws`` with ``code`` without waiting behind a full socket (direct path), else through ASGI."""
    direct = _direct(ws)
    if direct is not None:
        direct.close_now(code, reason, abort_after_s)
    elif ws.application_state == WebSocketState.CONNECTED:
        await ws.close(code=code, reason=reason)


@router.websocket("/ws/dashboards/{slug}")
async def dashboard_socket(ws: WebSocket, slug: str) -> None:
    """Live tiles of dashboard ``slug``; see the module docstring for the protocol.

    Every refusal happens at the handshake, before the socket opens: a foreign ``Origin``, an
    unknown dashboard or the process's connection cap close it unaccepted (the client sees HTTP
    403); the errors raised here are answered by ``app.api.problems`` as HTTP denial responses.

    Raises:
        Unauthenticated, Forbidden: no usable key (401), or one that may not watch ``slug`` (403).
        RateLimited: the key holds ``PULSEBOARD_WS_MAX_CONNECTIONS_PER_KEY`` screens already (429).
        StoreUnavailable: the dashboard's tiles cannot be read (503).
    """
    state = ws.app.state
    hub, broker, settings = state.hub, state.broker, state.settings
    origin = ws.headers.get("origin")
    if origin is not None and not settings.origin_allowed(origin, ws.headers.get("host"), ws.url.scheme):
        log.warning("refused WebSocket from origin %r (not in the allow-list)", origin)
        await ws.close(code=CLOSE_POLICY_VIOLATION, reason="origin not allowed")  # before accept: HTTP 403
        return
    if slug not in hub.channels:
        await ws.close(code=CLOSE_POLICY_VIOLATION, reason="unknown dashboard")
        return
    try:
        access = await authenticate(ws)
        check_scope(access, ("read", "admin", "display"), slug)
    except (Unauthenticated, Forbidden) as exc:  # answered by app.api.problems (401 / 403 / 404)
        # Expected (an unpaired wall asks for its pairing code after this): not an error.
        log.info("refused a screen on %s: %s (%s)", slug, exc, type(exc).__name__)
        raise
    sockets = state.runtime.sockets
    if max(broker.total_subscribers(), sockets.total()) >= settings.ws_max_connections:
        log.warning("WebSocket connection cap (%d) reached; refusing a screen", settings.ws_max_connections)
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, reason="server at capacity; retry later")
        return
    per_key = settings.ws_max_connections_per_key
    if not settings.auth_disabled and sockets.count(access.key.id) >= per_key:
        log.warning("WebSocket cap per key (%d) reached for key %s; refusing a screen", per_key, access.key.id)
        raise RateLimited(
            f"this key already holds {per_key} open screens (PULSEBOARD_WS_MAX_CONNECTIONS_PER_KEY)",
            RETRY_AFTER_SCREENS_PER_KEY_S,
        )
    # Reserve the slot now, before the first await: concurrent handshakes of one key see it at once
    # (issue 10, item 8: checked and added apart, 1,000 of 1,000 got in under a cap of 100).
    sockets.add(access.key.id, ws)
    try:
        await _serve_screen(ws, slug, settings)
    finally:
        sockets.discard(access.key.id, ws)


SINCE_RE = re.compile(r"[0-9]{1,18}")
"""``?since=``: 1-18 ASCII digits (fits a signed 64-bit sequence); anything else is ignored (a snapshot)."""


async def _serve_screen(ws: WebSocket, slug: str, settings: Settings) -> None:
    """The rest of the handshake and the screen's life, its slot in the socket registry held."""
    state = ws.app.state
    hub, broker = state.hub, state.broker
    epoch = ws.query_params.get("epoch")
    since_raw = ws.query_params.get("since")
    params = {k: v for k, v in ws.query_params.items() if k not in RESUME_PARAMS}
    try:  # ?KEY=VALUE: the dashboard narrowed to a dimension value (its declared params)
        slug = hub.view(slug, params, settings.max_dashboard_views).dashboard.slug
    except ValueError as exc:
        await ws.close(code=CLOSE_POLICY_VIOLATION, reason=str(exc)[:120])
        return
    try:  # before accepting: a store that cannot be read refuses the handshake, leaving nothing behind
        channel = await hub.ensure_fresh(slug)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("refused a screen on %s: its tiles cannot be read (%s)", slug, exc)
        raise StoreUnavailable("the store is unavailable; retry later") from exc
    except NoLeader as exc:  # a cluster follower with no leader's state to show
        log.warning("refused a screen on %s: %s", slug, exc)
        raise StoreUnavailable(f"no tile state available ({exc}); retry later") from exc
    await ws.accept()
    timeout_s = settings.ws_send_timeout_s
    direct = _direct(ws)
    async with broker.subscribe(slug) as sub:
        try:
            missed = None
            if epoch == channel.epoch and since_raw is not None and SINCE_RE.fullmatch(since_raw):
                missed = channel.missed_since(int(since_raw))
                if missed is None and hub.cluster is not None:  # another process's screen: the Redis stream
                    missed = await hub.cluster.missed(channel, epoch, int(since_raw))
            last_seq = channel.seq
            if missed is None:
                extras = {
                    "stale_after_s": settings.stale_after_s,
                    "heartbeat_interval_s": settings.heartbeat_interval_s,
                    "clock": settings.clock,  # "event": the wall's clock shows event time (replays)
                }
                await _send(ws, channel.snapshot_frame(extras), timeout_s)
            else:
                for update in missed:
                    await _send(ws, update.encode(), timeout_s)
                # Tell the screen at once that it is current (it may have missed nothing).
                await _send(ws, channel.heartbeat_frame(last_seq), timeout_s)
            if direct is not None:
                await _serve_direct(ws, direct, sub, slug, last_seq, timeout_s, settings)
            else:
                await _serve_asgi(ws, sub, channel, slug, last_seq, timeout_s, settings)
        except (WebSocketDisconnect, OSError, TimeoutError):
            log.debug("screen on %s went away", slug)


async def _serve_direct(
    ws: WebSocket,
    direct: DirectWebSocketProtocol,
    sub: Subscription,
    slug: str,
    last_seq: int,
    timeout_s: float,
    settings: Settings,
) -> None:
    """Direct path: the broker writes updates; this coroutine only reads until the screen goes."""
    screen = DirectScreen(direct, sub, timeout_s, slug)
    sub.closer = lambda code, reason: direct.close_now(code, reason, abort_after_s=CLOSE_GRACE_S)
    sub.start(last_seq, screen)
    try:
        await _receiver(ws, timeout_s, settings.ws_max_inbound_per_s)
    except TooChatty:
        log.info("screen on %s sent too many messages; closing", slug)
        direct.close_now(CLOSE_POLICY_VIOLATION, "too many messages", abort_after_s=CLOSE_GRACE_S)
    except TimeoutError:
        log.info("screen on %s too slow (send > %.1f s); closing", slug, timeout_s)
        direct.close_now(CLOSE_SLOW_CONSUMER, SLOW_REASON, abort_after_s=CLOSE_GRACE_S)
    finally:
        screen.detach()


async def _serve_asgi(
    ws: WebSocket, sub: Subscription, channel: Channel, slug: str, last_seq: int, timeout_s: float, settings: Settings
) -> None:
    """ASGI path: a sender and a receiver task; the first to end ends the screen."""
    sub.start(last_seq)
    sub.closer = lambda code, reason: _close_later(ws, code, reason)
    tasks = {
        asyncio.create_task(_sender(ws, sub, channel, settings.heartbeat_interval_s, timeout_s)),
        asyncio.create_task(_receiver(ws, timeout_s, settings.ws_max_inbound_per_s)),
    }
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        exc = task.exception()
        if isinstance(exc, TooChatty):
            log.info("screen on %s sent too many messages; closing", slug)
            await ws.close(code=CLOSE_POLICY_VIOLATION, reason="too many messages")
        elif isinstance(exc, TimeoutError):
            log.info("screen on %s too slow (send > %.1f s); closing", slug, timeout_s)
            if ws.application_state == WebSocketState.CONNECTED:
                await ws.close(code=CLOSE_SLOW_CONSUMER, reason=SLOW_REASON)
        elif exc is not None and not isinstance(exc, (WebSocketDisconnect, OSError, RuntimeError)):
            raise exc


_closing: set[asyncio.Task[None]] = set()


def _close_later(ws: WebSocket, code: int, reason: str) -> None:
    """Close ``ws`` with ``code`` from synchronous code (ASGI path)."""
    task = asyncio.get_running_loop().create_task(_close(ws, code, reason))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class SocketRegistry:
    """Open sockets by key id, so revoking a key closes its screens within seconds."""

    def __init__(self) -> None:
        self._by_key: dict[str, set[WebSocket]] = {}

    def add(self, key_id: str, ws: WebSocket) -> None:
        self._by_key.setdefault(key_id, set()).add(ws)

    def count(self, key_id: str) -> int:
        """Open (or reserved, mid-handshake) sockets of key ``key_id``."""
        return len(self._by_key.get(key_id, ()))

    def total(self) -> int:
        """Open (or reserved) sockets of every key."""
        return sum(len(s) for s in self._by_key.values())

    def discard(self, key_id: str, ws: WebSocket) -> None:
        sockets = self._by_key.get(key_id)
        if sockets is not None:
            sockets.discard(ws)
            if not sockets:
                del self._by_key[key_id]

    async def close_revoked(self, keys: KeyStore, now_us: int) -> int:
        """Close the sockets of keys no longer usable; return how many were closed."""
        closed = 0
        for key_id in list(self._by_key):
            if key_id == "anonymous" or await keys.still_usable(key_id, now_us):
                continue
            for ws in list(self._by_key.pop(key_id, ())):
                try:
                    await _close(ws, CLOSE_KEY_REVOKED, "key revoked")
                except RuntimeError:
                    pass
                closed += 1
        return closed


async def watch_revocations(sockets: SocketRegistry, keys: KeyStore, clock: Clock, interval_s: float = 2.0) -> None:
    """Forever: every ``interval_s``, close ``sockets`` whose key was revoked or expired (at
    ``clock``'s now), and write the keys' ``last_used_at``."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            closed = await sockets.close_revoked(keys, to_us(clock.now()))
            if closed:
                log.info("closed %d screen(s) whose key was revoked", closed)
            await keys.flush_last_used()
        except (OSError, SQLAlchemyError) as exc:
            log.warning("revocation check failed: %s", exc)
