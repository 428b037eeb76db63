"""The Redis side of one process: leader-published tile updates, mirrored everywhere.

Redis keys (``P`` = ``PULSEBOARD_REDIS_PREFIX``):

* ``P:leader`` / ``P:fence``: the lease (``app.cluster.lease``).
* ``P:state:<slug>``: the dashboard's state after the leader's last computation (JSON: ``epoch``,
  ``seq``, ``at_us`` (view clock), ``wall_ms`` (when computed), ``tiles``, ``trends``,
  ``notices``): snapshots for screens on any process, and where a new leader continues (same
  epoch, next ``seq``: screens see no gap across a failover).
* ``P:stream:<slug>``: the last ``PULSEBOARD_CLUSTER_STREAM_MAX_UPDATES`` update frames (a capped
  stream) for resume (``?epoch=&since=``) on whichever process a screen reconnects to.
* pub/sub ``P:tiles``: one message per computation: a JSON header line (``slug``, ``epoch``,
  ``seq``, ``at_us``, ``wall_ms``, ``src``) and, when tiles changed, the update frame: the
  JSON encoded once by the leader, sent as is by every process to its screens.
* pub/sub ``P:wake``: a follower asks the leader to compute a dashboard now (first screen).
* ``P:watched``: sorted set ``slug -> expiry (ms)``: dashboards watched on some process.

State, stream entry and message are written by one Lua script that first checks that the caller
still holds the lease token (fencing): a deposed leader cannot publish.

Every process subscribes to ``P:tiles``; a follower applies each message to its mirror of the
channel and fans it out to its own screens through ``InMemoryBroker``.  A ``seq`` gap (a lost
message, a subscription lost and made again) is filled from the stream; a gap the stream no
longer covers, or a new epoch, closes the process's screens of that dashboard with 1012 so they
reconnect and get a fresh snapshot: never a silent gap.  A lost subscription is made again
(with back-off, ``pulseboard_redis_resubscribes_total``).  While no computation reached a
follower for a dashboard for ``lease_s + 2 s``, its screens get no heartbeats, so walls show
STALE instead of "live" over frozen numbers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app import observability as obs
from app.cluster.lease import RedisLease
from app.ws.broker import InMemoryBroker, TileUpdate

if TYPE_CHECKING:
    from app.ws.hub import Channel, TileHub

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
CLOSE_RESYNC = 1012  # "service restart": the wall reconnects at once and gets a fresh snapshot

_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], '*', 'epoch', ARGV[5], 'seq', ARGV[6], 'frame', ARGV[3])
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
"""


class NoLeader(Exception):
    """No leader has computed a dashboard for a screen that asks for it (Redis down, or no leader yet)."""


class ClusterLink:
    """One process's link to the cluster (Redis): lease, publish, mirror, watched dashboards.

    Args:
        redis: a ``redis.asyncio.Redis`` client (``decode_responses=False``).
        prefix: key prefix.
        lease_s: leader lease.
        stream_max: updates kept per dashboard stream.
        time_refresh_s: how often the leader recomputes a watched dashboard.

    ``attach(hub, broker)`` before ``start()``; the hub then asks ``leading`` before computing,
    calls ``publish`` after each computation and ``follow`` for a follower's first screen.
    """

    def __init__(self, redis: Redis, prefix: str, lease_s: float, stream_max: int, time_refresh_s: float = 1.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.src = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lease_s = lease_s
        self._stream_max = stream_max
        self._time_refresh_s = time_refresh_s
        self._tiles_channel = f"{prefix}:tiles"
        self._wake_channel = f"{prefix}:wake"
        self._watched_key = f"{prefix}:watched"
        self._publish = redis.register_script(_PUBLISH)
        self.lease = RedisLease(redis, prefix, lease_s, self._gained, self._lost)
        self.watched: set[str] = set()  # dashboards watched on some process (as last read)
        self.last_seen_s: dict[str, float] = {}  # slug -> monotonic time of the last computation heard
        self.subscribed = False
        self._diverged = False  # this leader's screens got updates Redis does not have
        self._hub: TileHub | None = None
        self._broker: InMemoryBroker | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._notices: set[asyncio.Task[None]] = set()
        self.on_events: list[Any] = []  # called with (packs, max_ts_us) on the leader for events committed elsewhere
        self.on_gain: list[Any] = []  # async callables run on becoming the leader
        self.on_lose: list[Any] = []  # async callables run on stepping down

    def attach(self, hub: TileHub, broker: InMemoryBroker) -> None:
        """The hub whose channels are mirrored and the local broker that fans out to screens."""
        self._hub = hub
        self._broker = broker

    @property
    def leading(self) -> bool:
        """Whether this process is the leader now."""
        return self.lease.leading

    def start(self) -> None:
        """Start the lease, subscription and watched-set loops (inside a running loop)."""
        for coro, name in (
            (self.lease.run(), "cluster-lease"),
            (self._listen(), "cluster-listen"),
            (self._watch(), "cluster-watched"),
        ):
            self._tasks.append(asyncio.create_task(coro, name=name))
        obs.LEADER.set(0)

    async def stop(self) -> None:
        """Release the lease (another process takes over at once) and stop the loops."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.lease.release()
        await self.redis.aclose()

    async def ping(self) -> str | None:
        """``None`` when Redis answers and the tile subscription is up; else the reason (``/readyz``)."""
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            return f"redis unavailable: {exc}"
        if not self.subscribed:
            return "redis subscription not established yet"
        return None

    # ------------------------------------------------------------------ leader side
    async def _gained(self) -> None:
        obs.LEADER.set(1)
        hub = self._hub
        if hub is not None:
            for ch in hub.channels.values():
                try:
                    state = await self._state(ch.dashboard.slug)
                except (RedisError, OSError):
                    state = None
                if state is not None and (state["epoch"] != ch.epoch or state["seq"] >= ch.seq):
                    _adopt(ch, state)  # continue the dead leader's epoch and seq: screens see no gap
                elif state is None and ch.computed_at_us is not None:
                    # Redis lost the state (restarted empty): what the screens hold cannot be checked
                    # against it, so start a new epoch; screens get a fresh snapshot
                    self._new_epoch(ch)
                ch.dirty = True
            hub.wake()
        for hook in self.on_gain:
            await hook()

    async def _lost(self) -> None:
        obs.LEADER.set(0)
        if self._diverged and self._hub is not None:
            # Updates this leader showed its own screens never reached Redis: the next leader's seq
            # would overlap them.  Forget the epoch; the screens start over from the leader's state.
            self._diverged = False
            for ch in self._hub.channels.values():
                if ch.computed_at_us is not None:
                    self._new_epoch(ch)
        for hook in self.on_lose:
            await hook()

    async def publish(self, ch: Channel, update: TileUpdate | None, trends: dict[str, list[float | None]]) -> bool:
        """After the leader computed ``ch``: store its state, append ``update`` to the stream and
        announce it, fenced by the lease token; then fan ``update`` out to this process's screens.

        Returns ``False`` when this process is no longer the leader (nothing was published in
        Redis; the local screens still got the update).  Redis errors are logged and counted;
        the local screens get the update regardless.
        """
        slug = ch.dashboard.slug
        token = self.lease.token
        wall_ms = int(time.time() * 1000)
        ok = False
        if token is not None:
            state = _encoder.encode(
                {
                    "epoch": ch.epoch,
                    "seq": ch.seq,
                    "at_us": ch.computed_at_us,
                    "wall_ms": wall_ms,
                    "tiles": ch.tiles,
                    "trends": trends,
                    "notices": ch.notices,
                }
            )
            frame = update.encode() if update is not None else b""
            header = _encoder.encode(
                {
                    "slug": slug,
                    "epoch": ch.epoch,
                    "seq": ch.seq,
                    "at_us": ch.computed_at_us,
                    "wall_ms": wall_ms,
                    "src": self.src,
                }
            )
            try:
                ok = bool(
                    await self._publish(
                        keys=[self.lease.key, f"{self.prefix}:state:{slug}", f"{self.prefix}:stream:{slug}"],
                        args=[
                            token,
                            state,
                            frame,
                            self._stream_max,
                            ch.epoch,
                            ch.seq,
                            self._tiles_channel,
                            header + b"\n" + frame,
                        ],
                    )
                )
            except (RedisError, OSError) as exc:
                obs.REDIS_ERRORS.labels("publish").inc()
                log.warning("could not publish %s seq %d to Redis: %s", slug, ch.seq, exc)
            if not ok and update is not None:
                self._diverged = True
            if not ok and self.lease.token == token:
                try:  # the token no longer matches: someone else leads
                    if await self.redis.get(self.lease.key) not in (None, token.encode()):
                        await self.lease.step()
                except (RedisError, OSError):
                    pass
        self.last_seen_s[slug] = time.monotonic()
        if update is not None and self._broker is not None:
            await self._broker.publish(slug, update)
            obs.FANOUT_SECONDS.observe(max(0.0, time.time() - wall_ms / 1000))
        return ok

    def events_committed(self, packs: set[str], max_ts_us: int | None) -> None:
        """This process committed events touching ``packs`` (newest event time ``max_ts_us``): a
        follower tells the leader at once (``P:wake``), so its tiles do not wait for the next
        time refresh and its event clock (event-time mode) follows events ingested anywhere."""
        if self.leading or not packs:
            return
        body = _encoder.encode({"packs": sorted(packs), "max_ts_us": max_ts_us})
        task = asyncio.get_running_loop().create_task(self._notify(body))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _notify(self, body: bytes) -> None:
        try:
            await self.redis.publish(self._wake_channel, body)
        except (RedisError, OSError) as exc:
            obs.REDIS_ERRORS.labels("notify").inc()
            log.debug("could not tell the leader about new events: %s", exc)

    def is_watched(self, slug: str) -> bool:
        """Whether some process of the cluster has a screen on ``slug`` (as last read)."""
        return slug in self.watched

    async def _watch(self) -> None:
        """Forever, every second: advertise this process's watched dashboards; read everyone's."""
        while True:
            try:
                await self._advertise()
                now_ms = int(time.time() * 1000)
                members = cast(list[bytes], await self.redis.zrangebyscore(self._watched_key, now_ms, "+inf"))
                self.watched = {m.decode() for m in members}
                if self.leading:
                    await self.redis.zremrangebyscore(self._watched_key, "-inf", now_ms)
            except (RedisError, OSError) as exc:
                obs.REDIS_ERRORS.labels("watched").inc()
                log.debug("watched-set round failed: %s", exc)
            await asyncio.sleep(min(1.0, self._lease_s / 3))

    async def _advertise(self, extra: str | None = None) -> None:
        if self._broker is None or self._hub is None:
            return
        expiry_ms = int(time.time() * 1000 + 3000 * max(1.0, self._lease_s))
        mine = {slug: expiry_ms for slug in self._hub.channels if self._broker.subscriber_count(slug) > 0}
        if extra is not None:
            mine[extra] = expiry_ms
        if mine:
            await self.redis.zadd(self._watched_key, dict(mine))

    # ------------------------------------------------------------------ follower side
    def fresh(self, slug: str) -> bool:
        """Whether a computation of ``slug`` was heard recently enough to call its screens live."""
        if self.leading:
            return True
        seen = self.last_seen_s.get(slug)
        return seen is not None and time.monotonic() - seen < self._lease_s + 2 * self._time_refresh_s

    async def follow(self, ch: Channel, wait_s: float) -> Channel:
        """A follower's channel for a new screen: the leader's latest state of it.

        Advertises the dashboard as watched and wakes the leader when its state is older than a
        refresh, then waits up to ``wait_s`` for a fresh state.

        Raises:
            NoLeader: no state at all (nothing computed it: Redis down or no leader yet).
        """
        slug = ch.dashboard.slug
        deadline = time.monotonic() + wait_s
        woken = False
        try:  # the leader keeps computing it while this process has a screen on it
            await self._advertise(slug)
        except (RedisError, OSError):
            pass
        while True:
            try:
                state = await self._state(slug)
            except (RedisError, OSError) as exc:
                obs.REDIS_ERRORS.labels("state").inc()
                if ch.computed_at_us is not None and self.fresh(slug):
                    return ch
                raise NoLeader(f"redis unavailable: {exc}") from exc
            fresh = state is not None and time.time() * 1000 - state["wall_ms"] <= 1000 * (self._time_refresh_s + 0.5)
            if state is not None and fresh:
                if state["epoch"] == ch.epoch and state["seq"] > ch.seq:
                    await self._catch_up(ch, state["seq"])
                if state["epoch"] != ch.epoch or state["seq"] == ch.seq:
                    _adopt(ch, state)
                return ch
            if not woken:
                woken = True
                try:
                    await self.redis.publish(self._wake_channel, slug)
                except (RedisError, OSError):
                    pass
            if time.monotonic() >= deadline:
                if state is None:
                    raise NoLeader("no leader has computed this dashboard yet; retry later")
                if state["epoch"] != ch.epoch or state["seq"] >= ch.seq:
                    _adopt(ch, state)
                return ch
            await asyncio.sleep(0.05)

    async def missed(self, ch: Channel, epoch: str, since: int) -> list[TileUpdate] | None:
        """Updates of ``ch`` after ``since`` in ``epoch``: from the local mirror, else the Redis stream;
        ``None`` when neither covers the gap (the screen gets a fresh snapshot)."""
        if epoch != ch.epoch:
            return None
        local = ch.missed_since(since)
        if local is not None:
            return local
        try:
            updates = await self._stream(ch.dashboard.slug, epoch, since)
        except (RedisError, OSError):
            return None
        if not updates or updates[0].seq != since + 1 or updates[-1].seq != ch.seq:
            return None
        return updates

    async def _state(self, slug: str) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{self.prefix}:state:{slug}")
        return None if raw is None else msgspec.json.decode(raw)

    async def _stream(self, slug: str, epoch: str, since: int) -> list[TileUpdate]:
        """Stream entries of ``slug`` in ``epoch`` with ``seq > since``, in order."""
        assert self._hub is not None
        ch = self._hub.channels[slug]
        out = []
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await self.redis.xrange(f"{self.prefix}:stream:{slug}"))
        for _id, fields in entries:
            if fields[b"epoch"].decode() != epoch or int(fields[b"seq"]) <= since:
                continue
            out.append(_update_of(ch, fields[b"frame"]))
        return out

    async def _listen(self) -> None:
        """Forever: subscribe to the tile and wake channels; on a lost subscription, subscribe again."""
        backoff_s = 0.1
        first = True
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self._tiles_channel, self._wake_channel)
                self.subscribed = True
                if not first:
                    obs.RESUBSCRIBES.inc()
                    log.info("Redis subscription made again")
                first = False
                backoff_s = 0.1
                await self._resync_all()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg["type"] != "message":
                        continue
                    await self._on_message(msg["channel"], msg["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.subscribed:
                    log.warning("Redis subscription lost (%s); subscribing again", exc)
                obs.REDIS_ERRORS.labels("subscribe").inc()
                self.subscribed = False
                self.last_seen_s.clear()  # screens go STALE instead of live over frozen numbers
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 2.0)

    async def _resync_all(self) -> None:
        """After (re)subscribing: close the gap each watched channel may have from the missed messages."""
        if self._hub is None or self.leading:
            return
        for slug, ch in self._hub.channels.items():
            if ch.computed_at_us is None:
                continue
            state = await self._state(slug)
            if state is None:
                continue
            if state["epoch"] != ch.epoch:
                self._restart_screens(ch, state)
            elif state["seq"] > ch.seq:
                await self._catch_up(ch, state["seq"])

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel.decode() == self._wake_channel:
            if self.leading and self._hub is not None:
                if data.startswith(b"{"):  # events committed on a follower
                    note = msgspec.json.decode(data)
                    for hook in self.on_events:
                        hook(set(note["packs"]), note["max_ts_us"])
                else:  # a follower's first screen on a dashboard
                    slug = data.decode()
                    self.watched.add(slug)
                    self._hub.mark_slug_dirty(slug)
            return
        head, _, frame = data.partition(b"\n")
        header = msgspec.json.decode(head)
        if header["src"] == self.src or self._hub is None or self.leading:
            return
        ch = self._hub.channels.get(header["slug"])
        if ch is None:
            return
        slug = ch.dashboard.slug
        self.last_seen_s[slug] = time.monotonic()
        if header["epoch"] != ch.epoch:
            if ch.computed_at_us is None:  # nothing shown from this channel yet: just follow
                ch.epoch = header["epoch"]
                ch.seq = header["seq"] if not frame else header["seq"] - 1
            else:
                state = await self._state(slug)
                if state is not None:
                    self._restart_screens(ch, state)
                return
        if header["seq"] > ch.seq + (1 if frame else 0):
            await self._catch_up(ch, header["seq"] - (1 if frame else 0))
        if header["at_us"] is not None and (ch.computed_at_us is None or header["at_us"] > ch.computed_at_us):
            ch.computed_at_us = header["at_us"]
        if frame and header["seq"] == ch.seq + 1:
            await self._apply(ch, _update_of(ch, frame), header["wall_ms"])

    async def _apply(self, ch: Channel, update: TileUpdate, wall_ms: int | None = None) -> None:
        """Mirror ``update`` into ``ch`` and fan it out to this process's screens."""
        for tid, tile in update.tiles.items():
            ch.tiles[tid] = tile
        if update.notices is not None:
            ch.notices = update.notices
        ch.seq = update.seq
        ch.history.append(update)
        if self._broker is not None:
            await self._broker.publish(ch.dashboard.slug, update)
        if wall_ms is not None:
            obs.FANOUT_SECONDS.observe(max(0.0, time.time() - wall_ms / 1000))

    async def _catch_up(self, ch: Channel, upto_seq: int) -> None:
        """Apply the stream's updates after ``ch.seq`` up to ``upto_seq``; if the stream does not
        cover them, restart the channel's screens from the stored state."""
        slug = ch.dashboard.slug
        try:
            updates = [u for u in await self._stream(slug, ch.epoch, ch.seq) if u.seq <= upto_seq]
        except (RedisError, OSError):
            updates = []
        if updates and updates[0].seq == ch.seq + 1 and updates[-1].seq == upto_seq:
            for update in updates:
                await self._apply(ch, update)
            return
        state = await self._state(slug)
        if state is not None:
            log.warning("%s: updates %d..%d no longer in the stream; screens restart", slug, ch.seq + 1, upto_seq)
            self._restart_screens(ch, state)

    def _new_epoch(self, ch: Channel) -> None:
        """Give ``ch`` a new epoch and close this process's screens of it with 1012."""
        ch.epoch = secrets.token_hex(8)
        ch.history.clear()
        if self._broker is not None:
            for sub in self._broker.subscriptions(ch.dashboard.slug):
                sub.restart(CLOSE_RESYNC, "dashboard state restarted; reconnect for a fresh snapshot")

    def _restart_screens(self, ch: Channel, state: dict[str, Any]) -> None:
        """Adopt ``state`` and close this process's screens of ``ch`` with 1012: they reconnect
        (``?epoch=`` no longer matches or the gap is not covered) and get a fresh snapshot."""
        _adopt(ch, state)
        if self._broker is None:
            return
        for sub in self._broker.subscriptions(ch.dashboard.slug):
            sub.restart(CLOSE_RESYNC, "dashboard state moved on; reconnect for a fresh snapshot")


def _update_of(ch: Channel, frame: bytes) -> TileUpdate:
    body = msgspec.json.decode(frame)
    return TileUpdate(
        body["epoch"], body["seq"], body["tiles"], body["as_of"], frame=frame, notices=body.get("notices")
    )


def _adopt(ch: Channel, state: dict[str, Any]) -> None:
    """Make ``ch`` the stored ``state`` (epoch, seq, tiles, trends, notices, computation time)."""
    from app.ws.hub import TREND_POINTS

    if state["epoch"] != ch.epoch:
        ch.history.clear()
    ch.epoch = state["epoch"]
    ch.seq = state["seq"]
    ch.tiles = state["tiles"]
    ch.trends = {tid: deque(values, maxlen=TREND_POINTS) for tid, values in state["trends"].items()}
    ch.notices = state["notices"]
    ch.computed_at_us = state["at_us"]


def redis_client(url: str, timeout_s: float) -> Redis:
    """A ``redis.asyncio`` client for ``url`` with bounded connect and command times."""
    return Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=5, retry_on_timeout=False
    )
