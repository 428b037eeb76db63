"""Fan-out of tile updates to subscribers.

A ``Broker`` delivers ``TileUpdate``s published on a channel (one per
dashboard) to every ``Subscription`` of that channel.  ``InMemoryBroker`` is
the single-process backend; a Redis pub/sub backend plugs in behind the same
interface for several instances.

Two ways out of a subscription:

* a ``FrameSink`` (the screen's socket, ``app.ws.transport``): ``deliver`` writes
  the update's wire frame - encoded once per update, the same bytes for every
  screen - straight to the socket, with no task, event or await per screen;
* no sink: ``get`` waits for the pending update (an ASGI sender task per screen,
  for servers without the direct path).

A subscription's outbox is bounded by construction: when its socket cannot take
a frame (write buffer over its high-water mark) it holds at most one pending
update whose tiles are merged latest-value-wins (a tile appears once, with its
newest value), so a screen that stops reading costs at most one copy of the
dashboard plus one socket buffer, never a growing queue; the sink closes it when
it stays blocked (``app.ws.routes``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from app import observability as obs
from app.ws.transport import text_frame

_encoder = msgspec.json.Encoder()
log = logging.getLogger(__name__)


@dataclass(slots=True)
class TileUpdate:
    """One channel update: ``seq``-numbered changed tiles, with the frame encoded once.

    ``frame`` is the JSON text of the frame sent to screens and ``wire`` the whole
    WebSocket frame (header + ``frame``); both ``None`` until first asked for (a merged
    update is encoded for its one screen when sent).
    """

    epoch: str
    seq: int
    tiles: dict[str, dict[str, Any]]
    as_of: str
    frame: bytes | None = None
    notices: list[dict[str, Any]] | None = None
    wire: bytes | None = None

    def encode(self) -> bytes:
        """The frame's JSON (CONTRACT §4 ``update``, plus ``notices`` when they changed); cached."""
        if self.frame is None:
            body: dict[str, Any] = {
                "type": "update",
                "epoch": self.epoch,
                "seq": self.seq,
                "as_of": self.as_of,
                "tiles": self.tiles,
            }
            if self.notices is not None:
                body["notices"] = self.notices
            self.frame = _encoder.encode(body)
        return self.frame

    def wire_frame(self) -> bytes:
        """The unmasked WebSocket text frame of ``encode()`` (what goes on every screen's socket); cached."""
        if self.wire is None:
            self.wire = text_frame(self.encode())
        return self.wire


class FrameSink(Protocol):
    """Where a subscription writes frames without awaiting (a screen's socket)."""

    def write_wire(self, wire: bytes) -> bool:
        """Write one pre-built WebSocket frame now; ``False`` when the socket cannot take it
        (buffer over its high-water mark, or closed): then nothing was written."""
        ...

    def blocked(self) -> None:
        """An update is pending because ``write_wire`` refused it (start the slow-screen clock)."""
        ...

    def unblocked(self) -> None:
        """The pending update went out (stop the slow-screen clock)."""
        ...


class SubscriptionState:
    """States of a ``Subscription``."""

    OPEN = "open"
    CLOSED = "closed"


@dataclass(eq=False)
class Subscription:
    """A subscriber's bounded outbox (at most one merged pending update).

    Until ``start`` (while the endpoint sends the snapshot or the missed updates)
    every delivery waits in the outbox.  After ``start(last_seq, sink)`` updates are
    written straight to ``sink``; without a sink ``get`` hands them to a sender task.
    Updates with ``seq <= last_seq`` (already covered by what the screen got) are dropped.

    Attributes:
        last_seq: the newest ``seq`` the screen has (-1 before ``start``).
        last_sent_s: ``time.monotonic()`` of the last frame written through the sink
            (heartbeats go to screens idle longer than the heartbeat interval).
        merged_updates: how many updates were merged into a pending one (slow screen).
    """

    channel: str
    pending: TileUpdate | None = None
    merged_updates: int = 0
    state: str = SubscriptionState.OPEN
    last_seq: int = -1
    last_sent_s: float = 0.0
    started: bool = False
    sink: FrameSink | None = None
    closer: Callable[[int, str], None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, update: TileUpdate, now_s: float | None = None) -> bool:
        """Write ``update`` to the sink, or keep it pending merged into any pending one
        (latest value per tile wins).  ``now_s``: ``time.monotonic()`` if the caller has it.
        ``True`` when the frame was written at once."""
        if self.state != SubscriptionState.OPEN or (self.started and update.seq <= self.last_seq):
            return False
        sink = self.sink
        if sink is not None and self.pending is None and self.started:
            if sink.write_wire(update.wire_frame()):
                self.last_seq = update.seq
                self.last_sent_s = time.monotonic() if now_s is None else now_s
                return True
        if self.pending is None:
            self.pending = update
        else:
            tiles = {**self.pending.tiles, **update.tiles}
            notices = update.notices if update.notices is not None else self.pending.notices
            self.pending = TileUpdate(update.epoch, update.seq, tiles, update.as_of, notices=notices)
            self.merged_updates += 1
        if sink is not None:
            if self.started:
                sink.blocked()
        else:
            self._ready.set()
        return False

    def restart(self, code: int, reason: str) -> None:
        """Close the subscription and ask its screen (``closer``, set by the endpoint) to close
        with ``code``: the screen reconnects and starts over from a fresh snapshot."""
        closer = self.closer
        self.close()
        if closer is not None:
            closer(code, reason)

    def start(self, last_seq: int, sink: FrameSink | None = None) -> None:
        """The screen has everything up to ``last_seq``: from now on deliver to ``sink``
        (or through ``get`` without one); a pending update newer than ``last_seq`` goes out."""
        self.last_seq = last_seq
        self.sink = sink
        self.started = True
        self.last_sent_s = time.monotonic()
        if self.pending is not None and self.pending.seq <= last_seq:
            self.pending = None
            self._ready.clear()
        if sink is not None:
            self.flush()

    def flush(self) -> bool:
        """Write the pending update to the sink if it takes it now; ``True`` when nothing is left pending."""
        update = self.pending
        if update is None or self.sink is None or self.state != SubscriptionState.OPEN:
            return update is None
        if not self.sink.write_wire(update.wire_frame()):
            self.sink.blocked()
            return False
        self.pending = None
        self.last_seq = update.seq
        self.last_sent_s = time.monotonic()
        self.sink.unblocked()
        return True

    def write_idle(self, wire: bytes, now_s: float) -> bool:
        """Write a frame that carries no tiles (a heartbeat) if nothing is pending; ``True`` if written."""
        if self.pending is not None or self.sink is None or self.state != SubscriptionState.OPEN:
            return False
        if self.sink.write_wire(wire):
            self.last_sent_s = now_s
            return True
        return False

    async def get(self, timeout_s: float | None = None) -> TileUpdate | None:
        """The pending update, waiting up to ``timeout_s``; ``None`` on timeout (subscriptions
        without a sink only).

        Raises:
            RuntimeError: when the subscription was closed.
        """
        if self.state != SubscriptionState.OPEN:
            raise RuntimeError("subscription is closed; subscribe again")
        if self.pending is None:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except TimeoutError:
                return None
        update, self.pending = self.pending, None
        self._ready.clear()
        if update is not None and update.seq > self.last_seq:
            self.last_seq = update.seq
        return update

    def close(self) -> None:
        """Drop the pending update and the sink, and refuse further deliveries."""
        self.state = SubscriptionState.CLOSED
        self.pending = None
        self.sink = None
        self._ready.set()


class Broker(Protocol):
    """Transport of tile updates between the hub and screens."""

    async def publish(self, channel: str, update: TileUpdate) -> None:
        """Deliver ``update`` to every subscriber of ``channel``; never blocks on a subscriber."""
        ...

    def subscribe(self, channel: str) -> Any:
        """Async context manager yielding a ``Subscription``; unsubscribes on exit."""
        ...

    def subscriptions(self, channel: str) -> list[Subscription]:
        """Local subscriptions of ``channel`` (a copy)."""
        ...

    def subscriber_count(self, channel: str) -> int:
        """Local subscribers of ``channel``."""
        ...

    def total_subscribers(self) -> int:
        """Local subscribers of every channel."""
        ...


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


def _deliver(subs: list[Subscription], update: TileUpdate) -> None:
    now_s = time.monotonic()
    written = 0
    for sub in subs:
        written += sub.deliver(update, now_s)
    obs.FRAMES_SENT.inc(written)
    if written < len(subs):
        obs.FRAMES_MERGED.inc(len(subs) - written)


class InMemoryBroker:
    """Single-process broker: a set of subscriptions per channel.

    ``publish`` writes to the first ``chunk`` subscribers at once and hands the rest to a
    fan-out task that yields to the loop every ``chunk`` screens, so the hub computes the
    next update (its queries run in the database thread) while this one is being written.
    One fan-out per channel at a time: the next ``publish`` on a channel waits for the
    previous one to finish, so every screen gets a channel's updates in ``seq`` order.
    """

    def __init__(self, chunk: int = 250) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._total = 0
        self._chunk = chunk
        self._fanouts: dict[str, asyncio.Task[None]] = {}

    async def publish(self, channel: str, update: TileUpdate) -> None:
        previous = self._fanouts.pop(channel, None)
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # neither cancels it nor inherits its outcome
        subs = self._subs.get(channel)
        if not subs:
            return
        update.wire_frame()  # encode once per dashboard, before fan-out
        targets = list(subs)
        _deliver(targets[: self._chunk], update)
        if len(targets) > self._chunk:
            task = asyncio.create_task(self._fan_out(targets, update), name=f"fan-out {channel} {update.seq}")
            task.add_done_callback(_log_failure)
            self._fanouts[channel] = task

    async def _fan_out(self, targets: list[Subscription], update: TileUpdate) -> None:
        for start in range(self._chunk, len(targets), self._chunk):
            await asyncio.sleep(0)
            _deliver(targets[start : start + self._chunk], update)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        sub = Subscription(channel)
        self._subs.setdefault(channel, set()).add(sub)
        self._total += 1
        try:
            yield sub
        finally:
            sub.close()
            subs = self._subs.get(channel)
            if subs is not None and sub in subs:
                subs.discard(sub)
                self._total -= 1
                if not subs:
                    del self._subs[channel]

    def subscriptions(self, channel: str) -> list[Subscription]:
        return list(self._subs.get(channel, ()))

    def subscriber_count(self, channel: str) -> int:
        return len(self._subs.get(channel, ()))

    def total_subscribers(self) -> int:
        return self._total
