"""``/ws/screens``: one WebSocket carrying several dashboards (CONTRACT §4, "Multiplexed socket").

A rotating wall (``/wall/playlist/{name}``) keeps one socket and changes what it watches with
messages, so a rotation never reconnects::

    screen -> {"type": "subscribe", "dashboard": "noc", "params": {"site": "X"}, "epoch": E?, "since": N?}
    server -> {"type": "subscribed", "dashboard": "noc?site=X"}
              then that view's "snapshot" (or, with a covered epoch/since, its missed "update"s and a
              "heartbeat"), "update"s and "heartbeat"s, each carrying "dashboard": "noc?site=X"
    screen -> {"type": "unsubscribe", "dashboard": "noc?site=X"}
    server -> {"type": "unsubscribed", "dashboard": "noc?site=X"}   (no frame of it follows)
    screen -> {"type": "ping"}   server -> {"type": "pong"}

Each view has its own ``epoch``/``seq`` (the same as on ``/ws/dashboards/{slug}``); a refused
subscription gets ``{"type": "error", "dashboard": ..., "status": 403|404|422|429, "message": ...}``
and leaves the others as they are.  The session lives in this socket layer only: it takes
``Subscription``s from whatever ``Broker`` the server runs (in-memory or another) and frames
their ``TileUpdate``s itself, one sender task per subscribed view (the ASGI send path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec
from fastapi import APIRouter, WebSocket
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.api.codes import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TRY_AGAIN_LATER,
    RETRY_AFTER_SCREENS_PER_KEY_S,
)
from app.auth import Forbidden, RateLimited, Unauthenticated
from app.auth.deps import Access, authenticate, check_scope
from app.auth.ratelimit import TokenBucket
from app.cluster.link import NoLeader
from app.config import Settings
from app.ws.broker import Broker, Subscription, TileUpdate
from app.ws.hub import Channel, TileHub, view_key
from app.ws.routes import SLOW_REASON

log = logging.getLogger(__name__)
router = APIRouter()
_encoder = msgspec.json.Encoder()


def update_frame(view: str, update: TileUpdate) -> bytes:
    """An ``update`` frame of ``view`` on the multiplexed socket (CONTRACT §4 plus ``dashboard``)."""
    body: dict[str, Any] = {
        "type": "update",
        "dashboard": view,
        "epoch": update.epoch,
        "seq": update.seq,
        "as_of": update.as_of,
        "tiles": update.tiles,
    }
    if update.notices is not None:
        body["notices"] = update.notices
    return _encoder.encode(body)


def heartbeat_frame(view: str, channel: Channel, seq: int) -> bytes:
    """A ``heartbeat`` frame of ``view`` for a screen that has everything up to ``seq``."""
    body = msgspec.json.decode(channel.heartbeat_frame(seq))
    return _encoder.encode({**body, "dashboard": view})


class _Watch:
    """One subscribed view of a session: its broker subscription and its sender task."""

    def __init__(self, stack: contextlib.AsyncExitStack, sub: Subscription, task: asyncio.Task[None]) -> None:
        self.stack = stack
        self.sub = sub
        self.task = task

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.stack.aclose()


class ScreenSession:
    """The views one multiplexed socket watches (see the module docstring).

    Args:
        ws: the accepted socket.
        hub: the tile hub (channels, views).
        broker: where subscriptions come from.
        settings: limits (``ws_max_views_per_socket``, ``max_dashboard_views``, send timeout, heartbeats).
        access: the socket's key (each subscription is checked against it, as the single-dashboard socket is).
    """

    def __init__(self, ws: WebSocket, hub: TileHub, broker: Broker, settings: Settings, access: Access) -> None:
        self._ws = ws
        self._hub = hub
        self._broker = broker
        self._settings = settings
        self._access = access
        self._watches: dict[str, _Watch] = {}
        self._send_lock = asyncio.Lock()
        self.failed: BaseException | None = None

    async def send(self, frame: bytes) -> None:
        """Send one frame (frames of several views never interleave), within the send timeout.

        Raises:
            TimeoutError: the screen did not take it within ``ws_send_timeout_s``.
        """
        async with self._send_lock:
            await asyncio.wait_for(
                self._ws.send({"type": "websocket.send", "text": frame.decode()}), self._settings.ws_send_timeout_s
            )

    async def error(self, view: str | None, status: int, message: str) -> None:
        await self.send(_encoder.encode({"type": "error", "dashboard": view, "status": status, "message": message}))

    async def subscribe(self, msg: dict[str, Any]) -> None:
        """Handle a ``subscribe`` message (refusals are answered with an ``error`` frame)."""
        slug, params = msg.get("dashboard"), msg.get("params") or {}
        if (
            not isinstance(slug, str)
            or not isinstance(params, dict)
            or not all(
                isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
                for k, v in params.items()
            )
        ):
            await self.error(None, 422, 'subscribe needs "dashboard" (a slug) and "params" (an object of texts)')
            return
        params = {k: str(v) for k, v in params.items()}
        view = view_key(slug, params)
        if slug not in self._hub.channels or self._hub.channels[slug].dashboard.base is not None:
            await self.error(view, 404, f"no dashboard {slug!r}")
            return
        try:
            check_scope(self._access, ("read", "admin", "display"), slug)
        except Forbidden as exc:
            await self.error(view, 403, str(exc))
            return
        if view not in self._watches and len(self._watches) >= self._settings.ws_max_views_per_socket:
            limit = self._settings.ws_max_views_per_socket
            await self.error(
                view, 429, f"this socket watches {limit} dashboards already (PULSEBOARD_WS_MAX_VIEWS_PER_SOCKET)"
            )
            return
        try:
            view = self._hub.view(slug, params, self._settings.max_dashboard_views).dashboard.slug
        except ValueError as exc:
            await self.error(view, 422, str(exc))
            return
        old = self._watches.pop(view, None)
        if old is not None:
            await old.close()
        try:
            channel = await self._hub.ensure_fresh(view)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("refused a view %s: its tiles cannot be read (%s)", view, exc)
            await self.error(view, 503, "the store is unavailable; retry later")
            return
        except NoLeader as exc:  # a cluster follower with no leader's state to show
            log.warning("refused a view %s: %s", view, exc)
            await self.error(view, 503, f"no tile state available ({exc}); retry later")
            return
        stack = contextlib.AsyncExitStack()
        sub: Subscription = await stack.enter_async_context(self._broker.subscribe(view))
        try:
            await self.send(_encoder.encode({"type": "subscribed", "dashboard": view}))
            epoch, since = msg.get("epoch"), msg.get("since")
            missed = None
            if epoch == channel.epoch and isinstance(since, int) and not isinstance(since, bool) and since >= 0:
                missed = channel.missed_since(since)
                if missed is None and self._hub.cluster is not None:  # another process's screen: the Redis stream
                    missed = await self._hub.cluster.missed(channel, epoch, since)
            last_seq = channel.seq
            if missed is None:
                extras = {
                    "stale_after_s": self._settings.stale_after_s,
                    "heartbeat_interval_s": self._settings.heartbeat_interval_s,
                    "clock": self._settings.clock,
                }
                await self.send(channel.snapshot_frame(extras))
            else:
                for update in missed:
                    await self.send(update_frame(view, update))
                await self.send(heartbeat_frame(view, channel, last_seq))
            sub.start(last_seq)
        except BaseException:
            await stack.aclose()
            raise
        task = asyncio.create_task(self._sender(view, sub, channel), name=f"screen view {view}")
        self._watches[view] = _Watch(stack, sub, task)

    async def unsubscribe(self, msg: dict[str, Any]) -> None:
        """Handle an ``unsubscribe`` message: no frame of that view follows the answer."""
        view = msg.get("dashboard")
        watch = self._watches.pop(view, None) if isinstance(view, str) else None
        if watch is None:
            await self.error(view if isinstance(view, str) else None, 404, "not subscribed to this dashboard")
            return
        await watch.close()
        await self.send(_encoder.encode({"type": "unsubscribed", "dashboard": view}))

    async def _sender(self, view: str, sub: Subscription, channel: Channel) -> None:
        try:
            while True:
                last_seq = sub.last_seq
                update = await sub.get(self._settings.heartbeat_interval_s)
                if update is None:
                    await self.send(heartbeat_frame(view, channel, last_seq))
                elif update.seq > last_seq:
                    await self.send(update_frame(view, update))
        except asyncio.CancelledError:
            raise
        except (TimeoutError, OSError, RuntimeError, WebSocketDisconnect) as exc:  # the socket is going
            self.failed = exc
            with contextlib.suppress(RuntimeError, OSError):
                if self._ws.application_state == WebSocketState.CONNECTED:
                    await self._ws.close(code=CLOSE_SLOW_CONSUMER, reason=SLOW_REASON)

    async def run(self) -> None:
        """Read the screen's messages until it goes (then every view is unsubscribed)."""
        loop = asyncio.get_running_loop()
        rate = self._settings.ws_max_inbound_per_s
        bucket = TokenBucket(rate, rate, loop.time())
        try:
            while True:
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if bucket.take(loop.time()):
                    log.info("multiplexed screen sent too many messages; closing")
                    await self._ws.close(code=CLOSE_POLICY_VIOLATION, reason="too many messages")
                    return
                try:
                    msg = msgspec.json.decode(message.get("text") or "")
                except msgspec.DecodeError:
                    msg = None
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "ping":
                    await self.send(b'{"type":"pong"}')
                elif kind == "subscribe":
                    assert isinstance(msg, dict)
                    await self.subscribe(msg)
                elif kind == "unsubscribe":
                    assert isinstance(msg, dict)
                    await self.unsubscribe(msg)
                else:
                    await self.error(None, 422, 'unknown message; send "subscribe", "unsubscribe" or "ping"')
        finally:
            for watch in list(self._watches.values()):
                await watch.close()
            self._watches.clear()


@router.websocket("/ws/screens")
async def screens_socket(ws: WebSocket) -> None:
    """One socket, several dashboards (subscribe / unsubscribe messages); see the module docstring.

    Refusals at the handshake are those of ``/ws/dashboards/{slug}``: a foreign ``Origin`` or
    the process's connection cap close it unaccepted (HTTP 403).

    Raises:
        Unauthenticated: no usable key (401).
        RateLimited: the key holds ``PULSEBOARD_WS_MAX_CONNECTIONS_PER_KEY`` screens already (429).
    """
    state = ws.app.state
    hub, broker, settings = state.hub, state.broker, state.settings
    origin = ws.headers.get("origin")
    if origin is not None and not settings.origin_allowed(origin, ws.headers.get("host")):
        log.warning("refused WebSocket from origin %r (not in the allow-list)", origin)
        await ws.close(code=CLOSE_POLICY_VIOLATION, reason="origin not allowed")
        return
    try:
        access = await authenticate(ws)
    except Unauthenticated as exc:
        log.info("refused a multiplexed screen: %s", exc)
        raise
    if broker.total_subscribers() >= settings.ws_max_connections:
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, reason="server at capacity; retry later")
        return
    per_key = settings.ws_max_connections_per_key
    if not settings.auth_disabled and state.runtime.sockets.count(access.key.id) >= per_key:
        raise RateLimited(
            f"this key already holds {per_key} open screens (PULSEBOARD_WS_MAX_CONNECTIONS_PER_KEY)",
            RETRY_AFTER_SCREENS_PER_KEY_S,
        )
    await ws.accept()
    state.runtime.sockets.add(access.key.id, ws)
    try:
        await ScreenSession(ws, hub, broker, settings, access).run()
    except (WebSocketDisconnect, OSError, TimeoutError, RuntimeError):
        log.debug("multiplexed screen went away")
    finally:
        state.runtime.sockets.discard(access.key.id, ws)
