"""Fan-out of tile updates to subscribers.

A ``Broker`` delivers ``TileUpdate``s published on a channel (one per
dashboard) to every ``Subscription`` of that channel.  ``InMemoryBroker`` is
the single-process backend; a Redis pub/sub backend plugs in behind the same
interface for several instances.

A subscription's outbox is bounded by construction: it holds at most one
pending update whose tiles are merged latest-value-wins (a tile appears once,
with its newest value), so a screen that stops reading costs at most one copy
of the dashboard, never a growing queue.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol

import msgspec

_encoder = msgspec.json.Encoder()


@dataclass(slots=True)
class TileUpdate:
    """One channel update: ``seq``-numbered changed tiles, with the frame encoded once.

    ``frame`` is the JSON text frame sent to screens; ``None`` after a merge
    (then it is encoded for that one screen at send time).
    """

    epoch: str
    seq: int
    tiles: dict[str, dict[str, Any]]
    as_of: str
    frame: bytes | None = None
    notices: list[dict[str, Any]] | None = None

    def encode(self) -> bytes:
        """The frame to send (CONTRACT §4 ``update``, plus ``notices`` when they changed); cached."""
        if self.frame is None:
            body: dict[str, Any] = {"type": "update", "epoch": self.epoch, "seq": self.seq, "as_of": self.as_of,
                                    "tiles": self.tiles}
            if self.notices is not None:
                body["notices"] = self.notices
            self.frame = _encoder.encode(body)
        return self.frame


class SubscriptionState:
    """States of a ``Subscription``."""

    OPEN = "open"
    CLOSED = "closed"


@dataclass(eq=False)
class Subscription:
    """A subscriber's bounded outbox (at most one merged pending update).

    ``get`` waits for the pending update (or ``timeout_s``) and takes it.
    """

    channel: str
    pending: TileUpdate | None = None
    merged_updates: int = 0
    state: str = SubscriptionState.OPEN
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, update: TileUpdate) -> None:
        """Queue ``update``, merging into any pending one (latest value per tile wins)."""
        if self.state != SubscriptionState.OPEN:
            return
        if self.pending is None:
            self.pending = update
        else:
            tiles = {**self.pending.tiles, **update.tiles}
            notices = update.notices if update.notices is not None else self.pending.notices
            self.pending = TileUpdate(update.epoch, update.seq, tiles, update.as_of, notices=notices)
            self.merged_updates += 1
        self._ready.set()

    async def get(self, timeout_s: float | None = None) -> TileUpdate | None:
        """The pending update, waiting up to ``timeout_s``; ``None`` on timeout.

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
        return update

    def close(self) -> None:
        """Drop the pending update and refuse further deliveries."""
        self.state = SubscriptionState.CLOSED
        self.pending = None
        self._ready.set()


class Broker(Protocol):
    """Transport of tile updates between the hub and screens."""

    async def publish(self, channel: str, update: TileUpdate) -> None:
        """Deliver ``update`` to every subscriber of ``channel``; never blocks on a subscriber."""
        ...

    def subscribe(self, channel: str) -> Any:
        """Async context manager yielding a ``Subscription``; unsubscribes on exit."""
        ...

    def subscriber_count(self, channel: str) -> int:
        """Local subscribers of ``channel``."""
        ...

    def total_subscribers(self) -> int:
        """Local subscribers of every channel."""
        ...


class InMemoryBroker:
    """Single-process broker: a set of subscriptions per channel."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    async def publish(self, channel: str, update: TileUpdate) -> None:
        update.encode()  # encode once per dashboard, before fan-out
        for sub in list(self._subs.get(channel, ())):
            sub.deliver(update)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        sub = Subscription(channel)
        self._subs.setdefault(channel, set()).add(sub)
        try:
            yield sub
        finally:
            sub.close()
            subs = self._subs.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[channel]

    def subscriber_count(self, channel: str) -> int:
        return len(self._subs.get(channel, ()))

    def total_subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())
