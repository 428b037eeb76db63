"""The ASGI application: ``create_app(settings)`` and the lifespan that owns every resource.

The lifespan opens the parts of the ``Runtime`` one by one on an ``AsyncExitStack``, each
closer pushed as soon as its part exists, so a part that fails to start closes every part
opened before it (in reverse order), and shutdown closes them all in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select

from app import __version__, resources
from app import observability as obs
from app.api.docs import API_DESCRIPTION
from app.api.docs import router as docs_router
from app.api.jsonresp import FiniteJSONResponse
from app.api.limits import BodyLimits
from app.api.metrics_route import RequestCounter
from app.api.metrics_route import router as metrics_router
from app.api.problems import install_handlers
from app.api.routes import router as api_router
from app.api.security import SecurityHeaders
from app.api.vendor import router as vendor_router
from app.auth.keys import KeyStore
from app.auth.pairing import PairingStore
from app.auth.ratelimit import RateLimiter
from app.auth.redact import install_key_redaction
from app.auth.routes import router as auth_router
from app.clock import Clock, EventClock, SystemClock
from app.cluster.link import ClusterLink, redis_client
from app.config import Settings
from app.ingest.idempotency import IdempotencyKeys
from app.ingest.routes import router as ingest_router
from app.ingest.writer import GroupCommitWriter
from app.metrics.calendar import to_us
from app.metrics.pack import Pack, load_packs
from app.notify import config as notify_config
from app.notify.routes import router as notify_router
from app.notify.service import Notifier
from app.runtime import Runtime
from app.snapshots.breaches import BreachLog
from app.snapshots.routes import router as snapshot_router
from app.snapshots.service import SnapshotService
from app.store.db import connect_at_start, create_engine_for, create_writer_engine, migrate_async
from app.store.definitions import DefinitionReport, apply_definitions
from app.store.ready import ReadinessProbe
from app.store.schema import event
from app.store.writes import GroupResult
from app.ws.broker import InMemoryBroker
from app.ws.feeds import FeedTracker
from app.ws.hub import TileHub
from app.ws.routes import SocketRegistry, watch_revocations
from app.ws.routes import router as ws_router
from app.ws.screens import router as screens_router

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    """Build the Pulseboard app.  Nothing is connected until the lifespan starts.

    Args:
        settings: validated settings (default: from the environment).
        clock: the wall clock (default: system time; tests pass a ``ManualClock``).
    """
    settings = settings or Settings()
    wall_clock = clock or SystemClock()
    packs = load_packs(settings.packs_dir)
    notify = notify_config.load(settings.notify_file, packs, settings.webhook_url)  # NotifyConfigError: bad file

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_key_redaction()  # after uvicorn's logging setup: no key in any log line
        async with AsyncExitStack() as stack:
            runtime = await open_runtime(stack, settings, packs, wall_clock, notify)
            install_sighup(stack, runtime)
            if settings.auth_disabled:
                log.warning("PULSEBOARD_AUTH_DISABLED is set: every route is open to anyone who can reach it")
            app.state.runtime = runtime
            app.state.hub = runtime.hub
            app.state.broker = runtime.broker
            yield

    app = FastAPI(
        title="Pulseboard",
        version=__version__,
        lifespan=lifespan,
        description=API_DESCRIPTION,
        default_response_class=FiniteJSONResponse,
        # The interactive docs load an unpinned Swagger UI / ReDoc from a CDN, so their pages cannot
        # have this server's CSP: off unless PULSEBOARD_DOCS_ENABLED (issue 10, item 19).  The
        # OpenAPI JSON (/openapi.json) and /docs/contract are always served.
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    install_handlers(app)
    app.include_router(ingest_router)
    app.include_router(api_router)
    app.include_router(ws_router)
    app.include_router(screens_router)
    app.include_router(snapshot_router)
    app.include_router(vendor_router)
    app.include_router(auth_router)
    app.include_router(docs_router)
    app.include_router(notify_router)
    app.mount("/static", StaticFiles(directory=resources.frontend_dir()), name="static")
    # No response compression middleware: the one large file (the chart library) is served pre-compressed
    # by app/api/vendor.py; pages and JSON are small (BENCHMARKS.md: gzip was 6 % of single-event ingest).
    app.add_middleware(BodyLimits, settings=settings)  # inside SecurityHeaders: its 413/408 get the headers
    app.include_router(metrics_router)
    app.add_middleware(SecurityHeaders, frame_ancestors=settings.frame_ancestors, docs_enabled=settings.docs_enabled)
    app.add_middleware(RequestCounter)
    return app


async def open_runtime(
    stack: AsyncExitStack,
    settings: Settings,
    packs: Mapping[str, Pack],
    wall_clock: Clock,
    notify: notify_config.NotifyConfig | None = None,
) -> Runtime:
    """Open every long-lived part of one process and push its closer on ``stack`` at once.

    Order (closed in reverse): the store engine (its first connection retried,
    ``app.store.db.connect_at_start``), migrations, the view clock, the group-commit writer
    and its engine, the tile hub, the snapshot scheduler (when enabled), the readiness probe
    and the revocation watcher.  If a part fails to start, the parts opened before it are closed
    when ``stack`` unwinds.

    Returns:
        the ``Runtime``, built whole once every part has started.

    Raises:
        StoreUnavailable: the store could not be reached at start (the message names it).
        MigrationError: the schema could not be brought up to date.
    """
    engine = create_engine_for(settings)
    stack.push_async_callback(engine.dispose)
    await connect_at_start(engine, settings)
    await migrate_async(settings)

    view_clock: Clock = wall_clock
    if settings.clock == "event":
        event_clock = view_clock = EventClock()
        async with engine.connect() as conn:
            newest = (await conn.execute(select(func.max(event.c.ts_us)))).scalar()
        if newest is not None:
            event_clock.observe(int(newest))

    broker = InMemoryBroker()
    cluster: ClusterLink | None = None
    feeds = FeedTracker(to_us(wall_clock.now()), to_us(view_clock.now()))
    hub = TileHub(
        engine,
        packs,
        broker,
        view_clock,
        settings.zone,
        interval_s=settings.tile_interval_ms / 1000,
        replay_buffer=settings.ws_replay_buffer_updates,
        heartbeat_s=settings.heartbeat_interval_s,
        breaches=BreachLog(engine),
        late_after_s=settings.late_event_after_s,
        stale_after_s=settings.wall_data_age_after_s,
        freshness_interval_s=settings.freshness_interval_s,
        feeds=feeds,
        wall_clock=wall_clock,
    )

    def events_in(packs: set[str], max_ts_us: int | None) -> None:
        """Events were committed (here, or on a follower when this process leads)."""
        if isinstance(view_clock, EventClock) and max_ts_us is not None:
            view_clock.observe(max_ts_us)
        if packs:
            hub.mark_dirty(packs)

    async def on_commit(result: GroupResult) -> None:
        newest = max((o.max_ts_us for o in result.outcomes if o.max_ts_us is not None), default=None)
        events_in(result.packs_touched, newest)
        if cluster is not None:
            cluster.events_committed(result.packs_touched, newest)

    writer_engine = create_writer_engine(settings)
    stack.callback(writer_engine.dispose)  # the writer disposes of it too; a second dispose is a no-op
    writer = GroupCommitWriter(
        writer_engine,
        list(packs.values()),
        wall_clock,
        on_commit,
        settings.group_commit_max_events,
        settings.ingest_queue_max_events,
        max_wait_s=settings.store_wait_s,
        max_dim_values=settings.max_dim_values,
    )
    writer.start()
    stack.push_async_callback(writer.stop)  # drains what is queued
    notifier = Notifier(engine, packs, settings, notify or notify_config.NotifyConfig({}), wall_clock, view_clock)
    notifier.start()
    stack.push_async_callback(notifier.stop)

    def cut_changed(slug: str) -> None:
        hub.notices_changed(slug)
        notifier.cut_made(slug)  # subscribers get the new cut (app.notify)

    snapshots = SnapshotService(  # cuts follow the view clock: event time in event-time mode
        engine, packs, settings, view_clock, day_close=hub.day_close, on_change=cut_changed
    )
    hub.job_notices = snapshots.job_notices  # failed scheduled jobs show on the walls' notice strip
    if settings.rebuild_on_start:  # before any restatement pass: changed measures are rebuilt first
        await apply_definitions(writer_engine, settings, packs, snapshots, _now_us(snapshots, wall_clock))
    if settings.redis_url:
        cluster = ClusterLink(
            redis_client(settings.redis_url, settings.redis_timeout_s),
            settings.redis_prefix,
            settings.leader_lease_s,
            settings.cluster_stream_max_updates,
        )
        cluster.attach(hub, broker)
        cluster.on_events.append(events_in)
        hub.cluster = cluster
    hub.start()
    stack.push_async_callback(hub.stop)

    if settings.snapshots_enabled:
        if cluster is None:
            snapshots.start()
        else:  # only the leader cuts; a new leader catches up what a dead one left (cuts are idempotent)

            async def lead_cuts() -> None:
                snapshots.start()

            cluster.on_gain.append(lead_cuts)
            cluster.on_lose.append(snapshots.stop)
        stack.push_async_callback(snapshots.stop)  # a running job gets snapshot_stop_wait_s to finish
    if cluster is not None:
        cluster.start()
        stack.push_async_callback(cluster.stop)  # releases the lease first: another process leads at once
    sampler = asyncio.create_task(sample_gauges(hub, broker, writer), name="metrics-sampler")
    stack.push_async_callback(_cancel, sampler)

    ready_probe = ReadinessProbe(engine)
    stack.push_async_callback(ready_probe.aclose)
    keys = KeyStore(engine, wall_clock)
    sockets = SocketRegistry()
    watcher = asyncio.create_task(watch_revocations(sockets, keys, wall_clock), name="revocations")
    stack.push_async_callback(_cancel, watcher)

    return Runtime(
        settings=settings,
        engine=engine,
        packs=dict(packs),
        clock=wall_clock,
        view_clock=view_clock,
        writer=writer,
        hub=hub,
        broker=broker,
        snapshots=snapshots,
        idempotency=IdempotencyKeys(),
        keys=keys,
        pairings=PairingStore(engine, settings),
        sockets=sockets,
        rate_limiter=RateLimiter(settings.ingest_rate_per_key_per_s, settings.ingest_burst_per_key),
        ready_probe=ready_probe,
        public_limiter=RateLimiter(settings.public_rate_per_ip_per_s, settings.public_burst_per_ip),
        read_limiter=RateLimiter(settings.read_rate_per_key_per_s, settings.read_burst_per_key),
        notifier=notifier,
        cluster=cluster,
    )


def _now_us(snapshots: SnapshotService, wall_clock: Clock) -> int:
    """The snapshots' present (the view clock), or wall time before any event in event-time mode."""
    now = snapshots.now_us()
    return now if now is not None else to_us(wall_clock.now())


async def reload_packs(runtime: Runtime) -> DefinitionReport:
    """Re-read the packs (SIGHUP) and apply them: the loaded packs' measures, gauges, KPIs and
    lifecycles are replaced in place (the writer, the tiles and the snapshots read the same
    ``Pack`` objects), then the measures whose definition changed are rebuilt and the snapshots
    they moved restated (``app.store.definitions``), with the scheduled restatement pass held
    off meanwhile.  Packs added or removed, and dashboards, take effect at the next start.

    Raises:
        PackError: a pack on disk is malformed (nothing is changed then).
    """
    fresh = load_packs(runtime.settings.packs_dir)
    for name, pack in runtime.packs.items():
        new = fresh.get(name)
        if new is None:
            continue
        pack.measures, pack.gauges, pack.kpis, pack.lifecycles = new.measures, new.gauges, new.kpis, new.lifecycles
        pack.dimensions, pack.title, pack.origin = new.dimensions, new.title, new.origin
    writer_engine = create_writer_engine(runtime.settings)
    try:
        async with runtime.snapshots.holding_restatements():
            return await apply_definitions(
                writer_engine,
                runtime.settings,
                runtime.packs,
                runtime.snapshots,
                _now_us(runtime.snapshots, runtime.clock),
            )
    finally:
        writer_engine.dispose()


def _on_sighup(runtime: Runtime, tasks: set[asyncio.Task[Any]]) -> None:
    async def run() -> None:
        try:
            report = await reload_packs(runtime)
            log.info("packs reloaded (SIGHUP): %s", "; ".join(report.lines()))
        except Exception:  # a bad pack or a store error must not kill the server: logged, packs unchanged
            log.exception("packs reload (SIGHUP) failed")

    task = asyncio.get_running_loop().create_task(run(), name="packs-reload")
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def install_sighup(stack: AsyncExitStack, runtime: Runtime) -> None:
    """Reload the packs on SIGHUP (``reload_packs``) while the server runs; where signals cannot
    be handled (not the main thread, not POSIX) nothing is installed."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()
    try:
        loop.add_signal_handler(signal.SIGHUP, _on_sighup, runtime, tasks)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return
    stack.callback(loop.remove_signal_handler, signal.SIGHUP)


async def sample_gauges(hub: TileHub, broker: InMemoryBroker, writer: GroupCommitWriter, period_s: float = 1.0) -> None:
    """Forever: set this process's gauges (queue depth, screens per dashboard, derived-state lag)."""
    while True:
        obs.QUEUE_EVENTS.set(writer.queued_events)
        for slug in hub.channels:
            obs.SCREENS.labels(slug).set(broker.subscriber_count(slug))
        if hub.leading:
            now_us = to_us(hub.view_now())
            lags = [
                (now_us - ch.computed_at_us) / 1e6
                for slug, ch in hub.channels.items()
                if ch.computed_at_us is not None and hub.watched(slug)
            ]
            obs.DERIVED_LAG.set(max(lags, default=0.0))
        await asyncio.sleep(period_s)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn settings derived from ours (bind, HTTP and WebSocket implementations, limits,
    timeouts and pings; see ``app.api.edge`` and README "Production")."""
    from app.api.edge import address_counter, configured_protocol
    from app.ws.transport import direct_protocol

    addresses = address_counter(settings)  # shared by the HTTP and WebSocket protocols
    return {
        "host": settings.host,
        "port": settings.port,
        "http": configured_protocol(settings, addresses),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "ws_max_size": settings.ws_max_inbound_bytes,
        "ws_ping_interval": settings.ws_ping_interval_s,
        "ws_ping_timeout": settings.ws_ping_timeout_s,
        "ws_per_message_deflate": False,
        "ws": direct_protocol(  # websockets sans-I/O + direct frame writes + inbound limits
            settings.ws_write_buffer_bytes,
            inbound_frames_per_s=settings.ws_max_inbound_frames_per_s,
            inbound_bytes_per_s=settings.ws_max_inbound_bytes_per_s,
            max_frame_bytes=settings.ws_max_inbound_bytes,
            addresses=addresses,
        ),
        "log_level": "info",
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
    }
