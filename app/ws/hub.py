"""Tile computation per dashboard: snapshot state, change detection, versioned updates.

Each dashboard is a channel with an ``epoch`` (random per process start) and a
``seq`` that grows by one per published update.  The hub recomputes a
dashboard when new events touched its pack (``mark_dirty``) or its time-driven
tiles may have moved (every ``time_refresh_s``), at most once per
``interval_s``, and only while someone watches it.  Tiles whose value, status
or target did not change are not sent.  The last ``replay_buffer`` updates are
kept so a screen reconnecting with ``?epoch=E&since=N`` gets what it missed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app import observability as obs
from app.clock import Clock, EventClock
from app.metrics.calendar import MINUTE_US, from_us, period_containing, to_us
from app.metrics.pack import Dashboard, Pack
from app.query.tiles import Freshness, dashboard_tiles, tile_trends
from app.snapshots.breaches import BreachLog
from app.snapshots.cut import notices as recent_notices
from app.ws.broker import Broker, TileUpdate
from app.ws.feeds import FeedTracker, feed_states
from app.ws.transport import text_frame

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
TREND_POINTS = 60
NOTICE_WINDOW_US = 3 * 86_400_000_000  # flag cuts of periods that ended in the last 3 days
DAY_CLOSE_KEPT = 62
ONE_DIM_FORMULAS = ("time_weighted", "peak")  # KPIs read for one rolled-up dimension at most
# "alarms": alarm_list tiles (app.query.alarms); "feed": feed silence (app.ws.feeds)
_COMPARED = ("value", "status", "target", "alarms", "feed")


@dataclass(eq=False)
class Channel:
    """Live state of one dashboard."""

    dashboard: Dashboard
    pack: Pack
    zone: ZoneInfo
    epoch: str
    seq: int = 0
    tiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: deque[TileUpdate] = field(default_factory=deque)
    trends: dict[str, deque[float | None]] = field(default_factory=dict)
    notices: list[dict[str, Any]] = field(default_factory=list)
    dirty: bool = True
    computed_at_us: int | None = None
    last_compute_wall: float = 0.0
    last_done_wall: float = float("-inf")  # loop time the last refresh (and its fan-out) ended
    dirty_notices: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    freshness: Freshness | None = None  # the tiles' freshness counts, cached (app.query.tiles.Freshness)

    def heartbeat_frame(self, seq: int) -> bytes:
        """The ``heartbeat`` frame for a screen that has everything up to ``seq``."""
        as_of = from_us(self.computed_at_us, self.zone).isoformat() if self.computed_at_us else None
        return _encoder.encode({"type": "heartbeat", "epoch": self.epoch, "seq": seq, "as_of": as_of})

    def snapshot_frame(self, extras: Mapping[str, Any] | None = None) -> bytes:
        """The ``snapshot`` frame (CONTRACT §4) with every tile and its trend, plus ``extras``
        (display settings such as ``stale_after_s``)."""
        tiles = {tid: {**tile, "trend": list(self.trends.get(tid, ()))} for tid, tile in self.tiles.items()}
        as_of = from_us(self.computed_at_us, self.zone).isoformat() if self.computed_at_us else None
        return _encoder.encode(
            {
                "type": "snapshot",
                "dashboard": self.dashboard.slug,
                "epoch": self.epoch,
                "seq": self.seq,
                "as_of": as_of,
                "tiles": tiles,
                "title": self.dashboard.title,
                "tz": str(self.zone),
                "notices": self.notices,
                **(extras or {}),
            }
        )

    def missed_since(self, since: int) -> list[TileUpdate] | None:
        """Updates after ``since`` from the replay buffer, or ``None`` if the gap is not covered."""
        if since == self.seq:
            return []
        if since > self.seq or not self.history or self.history[0].seq > since + 1:
            return None
        return [u for u in self.history if u.seq > since]


class ClusterPort(Protocol):
    """What the hub and the screen sockets need of a scaled-out deployment's link (implemented by
    ``app.cluster.link.ClusterLink``, which sits above this package): leadership, the watched
    dashboards of every process, the leader's published state, and the shared resume stream."""

    @property
    def leading(self) -> bool:
        """Whether this process holds the leader lease (computes tiles, runs the scheduler)."""
        ...

    def is_watched(self, slug: str) -> bool:
        """Whether a screen on another process watches dashboard ``slug``."""
        ...

    def fresh(self, slug: str) -> bool:
        """Whether a leader's computation of ``slug`` was heard lately (else walls go STALE)."""
        ...

    async def follow(self, ch: Channel, wait_s: float) -> Channel:
        """``ch`` brought up to the leader's latest state (waiting up to ``wait_s`` seconds)."""
        ...

    async def publish(self, ch: Channel, update: TileUpdate | None, trends: dict[str, list[float | None]]) -> bool:
        """Store and announce the leader's ``update`` of ``ch`` (``None``: the state only)."""
        ...

    async def missed(self, ch: Channel, epoch: str, since: int) -> list[TileUpdate] | None:
        """Updates of ``ch`` after ``since`` in ``epoch`` from any process; ``None``: not covered."""
        ...


def view_key(slug: str, params: Mapping[str, str]) -> str:
    """The key of a dashboard view: ``slug``, then for a narrowed one ``?`` and its parameters
    sorted by name as ``KEY=VALUE`` joined by ``&`` (not URL-encoded): ``noc?service=API&site=X``."""
    if not params:
        return slug
    return slug + "?" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))


class TileHub:
    """Computes and publishes live tiles for every dashboard of the loaded packs.

    Args:
        engine: store engine (reads).
        packs: loaded packs (their dashboards become channels).
        broker: where updates are published.
        clock: the view clock (wall or event time) windows end at.  With an ``EventClock`` a day
            closes when the event clock passes its end: its closing "today" tiles (kept for
            ``live_vs_snapshot``) are read at the day's last instant, since every event of it
            has been committed once the event clock is past it.
        default_zone: business time zone for dashboards without their own.
        interval_s: coalescing interval (at most one update per dashboard per interval).
        replay_buffer: updates kept per channel for resume.
        time_refresh_s: recompute at least this often while watched (sliding windows, gauges).
        heartbeat_s: a screen written nothing for this long gets a ``heartbeat`` frame
            (screens on the direct write path; checked every quarter of it).
        breaches: the breach log each computation's tile statuses go to (``app.snapshots.breaches``).
        late_after_s, stale_after_s, freshness_interval_s: the tiles' freshness
            (``app.query.freshness``): lateness, the wall's data-age threshold, how often the
            counts are re-read.
        feeds: last arrival per event source (feed silence, ``app.ws.feeds``); ``None``: no
            tile ever shows a silent feed.
        wall_clock: the clock feed silence is measured on (default ``clock``; in event-time
            mode the server passes wall time).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        packs: Mapping[str, Pack],
        broker: Broker,
        clock: Clock,
        default_zone: ZoneInfo,
        interval_s: float = 0.5,
        replay_buffer: int = 256,
        time_refresh_s: float = 1.0,
        heartbeat_s: float = 5.0,
        breaches: BreachLog | None = None,
        late_after_s: float = 300.0,
        stale_after_s: float = 300.0,
        freshness_interval_s: float = 5.0,
        feeds: FeedTracker | None = None,
        wall_clock: Clock | None = None,
    ) -> None:
        self._engine = engine
        self._breaches = breaches
        self.feeds = feeds
        self._wall_clock = wall_clock or clock
        self._broker = broker
        self._clock = clock
        self._event_time = isinstance(clock, EventClock)
        self._interval_s = interval_s
        self._time_refresh_s = time_refresh_s
        self._heartbeat_s = heartbeat_s
        self.epoch = secrets.token_hex(8)
        self.channels: dict[str, Channel] = {}
        for pack in packs.values():
            for dash in pack.dashboards.values():
                zone = ZoneInfo(dash.tz) if dash.tz else default_zone
                self.channels[dash.slug] = Channel(
                    dash,
                    pack,
                    zone,
                    self.epoch,
                    history=deque(maxlen=max(replay_buffer, 0) or None),
                    freshness=Freshness(late_after_s, stale_after_s, freshness_interval_s),
                )
        self._replay_buffer = replay_buffer
        # slug -> local day label -> the "today" tiles last shown that day (for reconciliation)
        self.day_close: dict[str, dict[str, dict[str, Any]]] = {}
        # The snapshot service's failed-job notices of a dashboard (set by the lifespan once it exists).
        self.job_notices: Callable[[str], list[dict[str, Any]]] = lambda _slug: []
        self.cluster: ClusterPort | None = None  # set by app.main with PULSEBOARD_REDIS_URL
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        """Start the refresh loop (inside a running loop)."""
        if self._task is not None:
            raise RuntimeError("TileHub.start() called twice")
        self._task = asyncio.create_task(self._run(), name="tile-hub")
        self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="tile-hub-heartbeats")

    async def stop(self) -> None:
        """Stop the refresh and heartbeat loops."""
        for task in (self._task, self._heartbeat_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._heartbeat_task = None
        if self._breaches is not None:
            await self._breaches.close()

    async def flush_breaches(self) -> None:
        """Wait until the breach log has written every transition seen so far."""
        if self._breaches is not None:
            await self._breaches.flush()

    def notices_changed(self, slug: str) -> None:
        """A snapshot of ``slug`` was cut or restated: re-read its notices at the next refresh."""
        ch = self.channels.get(slug)
        if ch is not None:
            ch.dirty_notices = True
            ch.dirty = True
            self._wake.set()

    def view_now(self) -> Any:
        """The view clock's now (an aware ``datetime``)."""
        return self._clock.now()

    @property
    def leading(self) -> bool:
        """Whether this process computes tiles: always alone; in a cluster, only the leader."""
        return self.cluster is None or self.cluster.leading

    def watched(self, slug: str) -> bool:
        """Whether a screen anywhere (this process, or another one of the cluster) watches ``slug``."""
        return self._broker.subscriber_count(slug) > 0 or (self.cluster is not None and self.cluster.is_watched(slug))

    def wake(self) -> None:
        """Re-plan the refresh loop now (leadership gained, a dashboard asked for)."""
        self._wake.set()

    def mark_slug_dirty(self, slug: str) -> None:
        """Recompute dashboard ``slug`` at the next tick (a follower's first screen asked for it)."""
        ch = self.channels.get(slug)
        if ch is not None:
            ch.dirty = True
            self._wake.set()

    def view(self, slug: str, params: Mapping[str, str], max_views: int) -> Channel:
        """The channel of dashboard ``slug`` narrowed by ``params`` (dimension -> value, each
        one of the dashboard's declared ``params``): every tile gets the filters added (a filter of
        the same dimension is replaced); a time-weighted or peak tile (read per one rolled-up
        dimension) already filtered by another dimension is left out of the view.  Its key
        (``channel.dashboard.slug``, also the broker channel) is ``view_key(slug, params)``;
        without params, the dashboard's own channel.
        Narrowed channels are made on first use, at most ``max_views`` of them (when full, the
        ones no screen watches are forgotten first).

        Raises:
            KeyError: unknown dashboard.
            ValueError: a parameter the dashboard does not declare, a value with ``&``, ``=`` or
                ``?`` or empty, or ``max_views`` narrowed views are watched already (the message
                says which).
        """
        base = self.channels[slug]
        if not params:
            return base
        dash = base.dashboard
        for key, value in params.items():
            if key not in dash.params:
                allowed = ", ".join(dash.params) or "none"
                raise ValueError(f"dashboard {slug!r} takes no parameter {key!r} (its parameters: {allowed})")
            if not value or any(c in value for c in "&=?") or len(value) > 256:
                raise ValueError(f"parameter {key!r}: a value of 1-256 characters without '&', '=' or '?'")
        key = view_key(slug, params)
        ch = self.channels.get(key)
        if ch is not None:
            return ch
        narrowed_keys = [k for k, c in self.channels.items() if c.dashboard.base is not None]
        if len(narrowed_keys) >= max_views:  # make room: forget the views no screen watches
            for k in narrowed_keys:
                if self._broker.subscriber_count(k) == 0:
                    del self.channels[k]
        if sum(1 for c in self.channels.values() if c.dashboard.base is not None) >= max_views:
            raise ValueError(
                f"{max_views} narrowed dashboard views are watched already (PULSEBOARD_MAX_DASHBOARD_VIEWS)"
            )
        extra = tuple(sorted(params.items()))
        tiles = []
        for t in dash.tiles:
            dims = tuple(sorted({**dict(t.dims), **dict(extra)}.items()))
            kpi = base.pack.kpis.get(t.kpi) if t.kind == "kpi" else None
            if len(dims) > 1 and kpi is not None and kpi.formula.kind in ONE_DIM_FORMULAS:
                continue  # read per one rolled-up dimension only: left out of a view narrowed by another
            tiles.append(replace(t, dims=dims))
        title = dash.title + " · " + " · ".join(f"{k} {v}" for k, v in extra)
        narrowed = replace(dash, slug=key, title=title, tiles=tuple(tiles), base=slug)
        ch = Channel(
            narrowed,
            base.pack,
            base.zone,
            self.epoch,
            history=deque(maxlen=max(self._replay_buffer, 0) or None),
            freshness=(  # its own cache: the narrowed tiles count other events
                None
                if base.freshness is None
                else Freshness(base.freshness.late_after_s, base.freshness.stale_after_s, base.freshness.interval_s)
            ),
        )
        self.channels[key] = ch
        return ch

    def add_feed_states(self, dashboard: Dashboard, tiles: dict[str, dict[str, Any]], zone: ZoneInfo) -> None:
        """Set each tile's ``feed`` (a silent feed or ``None``, ``app.ws.feeds``) when ``dashboard``
        declares feeds; leave tiles of dashboards without feeds as they are."""
        states = feed_states(dashboard, self.feeds, to_us(self._wall_clock.now()), zone)
        for tid, state in states.items():
            if tid in tiles:
                tiles[tid]["feed"] = state

    def mark_dirty(self, pack_names: set[str]) -> None:
        """New events touched ``pack_names``: their dashboards recompute at the next tick."""
        for ch in self.channels.values():
            if ch.pack.name in pack_names:
                ch.dirty = True
        self._wake.set()

    async def ensure_fresh(self, slug: str) -> Channel:
        """The channel of ``slug`` with tiles no older than the refresh loop would keep them.

        Recomputes when never computed, dirty, unwatched until now, or older than
        ``time_refresh_s``, so a first screen never gets a stale snapshot.  A follower of a
        cluster computes nothing: it takes the leader's latest state (``ClusterLink.follow``).

        Raises:
            KeyError: unknown dashboard.
            NoLeader: a follower found no state computed by any leader.
        """
        ch = self.channels[slug]
        if not self.leading:
            assert self.cluster is not None
            return await self.cluster.follow(ch, max(1.0, 3 * self._time_refresh_s))
        loop = asyncio.get_running_loop()
        if (
            ch.computed_at_us is None
            or ch.dirty
            or self._broker.subscriber_count(slug) == 0
            or loop.time() - ch.last_compute_wall >= self._time_refresh_s
        ):
            await self.refresh(ch)
        return ch

    async def refresh(self, ch: Channel) -> TileUpdate | None:
        """Recompute ``ch``; publish and return the update if any tile changed."""
        async with ch.lock:
            loop = asyncio.get_running_loop()
            ch.dirty = False
            ch.last_compute_wall = loop.time()
            now_us = to_us(self._clock.now())
            previous_us = ch.computed_at_us
            first = previous_us is None
            minute_moved = previous_us is None or now_us // MINUTE_US != previous_us // MINUTE_US
            # Taken (and reset) before the queries: a cut or restatement announced while they
            # run sets it again for the next refresh instead of being cleared by this one.
            read_notices, ch.dirty_notices = minute_moved or ch.dirty_notices, False
            obs.TILE_COMPUTATIONS.labels(ch.dashboard.slug).inc()
            async with self._engine.connect() as conn:
                tiles = await dashboard_tiles(conn, ch.pack, ch.dashboard, now_us, ch.zone, ch.freshness)
                self.add_feed_states(ch.dashboard, tiles, ch.zone)
                if first:  # sparklines from the stored minutes, not only from now on
                    seeded = await tile_trends(conn, ch.pack, ch.dashboard, now_us, ch.zone, TREND_POINTS)
                    for tid, values in seeded.items():
                        ch.trends[tid] = deque(values[:-1], maxlen=TREND_POINTS)
                notices = (
                    await recent_notices(conn, ch.dashboard.slug, now_us - NOTICE_WINDOW_US)
                    + self.job_notices(ch.dashboard.slug)
                    if read_notices
                    else ch.notices
                )
                day_ended = None if previous_us is None else period_containing("day", previous_us, ch.zone)
                if day_ended is not None and day_ended.end_us > now_us:
                    day_ended = None
                closing = ch.tiles
                if day_ended is not None and self._event_time:
                    closing = await dashboard_tiles(conn, ch.pack, ch.dashboard, day_ended.end_us - 1, ch.zone)
            notices_changed = notices != ch.notices
            ch.notices = notices
            if day_ended is not None:
                self._close_day(ch, day_ended.label, closing)
            ch.computed_at_us = now_us
            changed = {
                tid: t
                for tid, t in tiles.items()
                if first or any(t.get(k) != ch.tiles.get(tid, {}).get(k) for k in _COMPARED)
            }
            for tid, tile in tiles.items():
                trend = ch.trends.setdefault(tid, deque(maxlen=TREND_POINTS))
                if minute_moved or not trend:
                    trend.append(tile["value"])
                else:
                    trend[-1] = tile["value"]
            ch.tiles = tiles
            if self._breaches is not None:
                await self._breaches.observe(ch.dashboard.slug, tiles, now_us, ch.zone)
            if first or not (changed or notices_changed):
                if self.cluster is not None:  # followers learn the computation time (heartbeats, snapshots)
                    await self.cluster.publish(ch, None, self._trend_lists(ch))
                ch.last_done_wall = loop.time()
                return None
            ch.seq += 1
            update = TileUpdate(
                ch.epoch,
                ch.seq,
                changed,
                from_us(now_us, ch.zone).isoformat(),
                notices=notices if notices_changed else None,
            )
            if self._replay_buffer:
                ch.history.append(update)
            if self.cluster is not None:  # inside the lock: the stored state and seq go out in order
                await self.cluster.publish(ch, update, self._trend_lists(ch))
        if self.cluster is None:
            await self._broker.publish(ch.dashboard.slug, update)
        ch.last_done_wall = loop.time()
        return update

    @staticmethod
    def _trend_lists(ch: Channel) -> dict[str, list[float | None]]:
        return {tid: list(values) for tid, values in ch.trends.items()}

    def _close_day(self, ch: Channel, label: str, tiles: Mapping[str, Mapping[str, Any]]) -> None:
        """Keep ``tiles``' "today" tiles as the close of day ``label`` (the one that just ended)."""
        today = {t.id for t in ch.dashboard.tiles if t.window == "today" and not t.dims}
        days = self.day_close.setdefault(ch.dashboard.slug, {})
        days[label] = {tid: dict(tile) for tid, tile in tiles.items() if tid in today}
        for old in sorted(days)[:-DAY_CLOSE_KEPT]:
            del days[old]

    def _due_at(self, ch: Channel) -> float:
        """Loop time from which ``ch`` may be recomputed.

        Coalescing counts the interval from the start of the previous computation (so
        publishes are an interval apart, not interval + compute + fan-out), and never
        before the previous refresh and its fan-out ended; when nothing is dirty,
        ``time_refresh_s`` after the last computation.
        """
        not_before = max(ch.last_compute_wall + self._interval_s, ch.last_done_wall)
        if ch.dirty:
            return not_before
        return max(not_before, ch.last_compute_wall + self._time_refresh_s)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            next_due: float | None = None
            if not self.leading:  # a follower: the leader computes, Redis brings the updates
                try:
                    async with asyncio.timeout(min(self._time_refresh_s, 0.5)):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            for ch in list(self.channels.values()):  # a screen may add a narrowed view meanwhile
                if not self.watched(ch.dashboard.slug):
                    continue
                due_at = self._due_at(ch)
                if due_at <= loop.time():
                    try:
                        await self.refresh(ch)
                    except (SQLAlchemyError, OSError) as exc:
                        obs.STORE_ERRORS.labels("tiles").inc()
                        log.warning("tile refresh of %s failed: %s", ch.dashboard.slug, exc)
                        ch.last_done_wall = loop.time()
                        ch.dirty = ch.dirty_notices = True  # retried in full after the interval
                    due_at = self._due_at(ch)
                next_due = due_at if next_due is None else min(next_due, due_at)
            # Sleep until the next dashboard is due; new events only wake us to re-plan
            # (a dirty dashboard waits until an interval after its last publish).
            wait_s = self._time_refresh_s if next_due is None else max(0.0, next_due - loop.time())
            if wait_s > 0:
                try:
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _heartbeats(self) -> None:
        """Forever: write a ``heartbeat`` to every screen (direct path) idle for ``heartbeat_s``."""
        period_s = self._heartbeat_s / 4
        while True:
            await asyncio.sleep(period_s)
            now_s = time.monotonic()
            idle_since_s = now_s - self._heartbeat_s
            for slug, ch in list(self.channels.items()):
                if self.cluster is not None and not self.cluster.fresh(slug):
                    continue  # no leader computation heard lately: let the walls go STALE
                frames: dict[int, bytes] = {}
                for sub in self._broker.subscriptions(slug):
                    if sub.sink is None or sub.last_sent_s > idle_since_s or sub.pending is not None:
                        continue
                    wire = frames.get(sub.last_seq)
                    if wire is None:
                        wire = frames[sub.last_seq] = text_frame(ch.heartbeat_frame(sub.last_seq))
                    sub.write_idle(wire, now_s)
