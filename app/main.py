"""The ASGI application: ``create_app(settings)`` and the lifespan that owns every resource.

The lifespan opens the parts of the ``Runtime`` one by one on an ``AsyncExitStack``, each
closer pushed as soon as its part exists, so a part that fails to start closes every part
opened before it (in reverse order), and shutdown closes them all in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select

from app import __version__, resources
from app.api.docs import API_DESCRIPTION
from app.api.docs import router as docs_router
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
from app.config import Settings
from app.ingest.idempotency import IdempotencyKeys
from app.ingest.routes import router as ingest_router
from app.ingest.writer import GroupCommitWriter
from app.metrics.calendar import to_us
from app.metrics.pack import Pack, load_packs
from app.runtime import Runtime
from app.snapshots.routes import router as snapshot_router
from app.snapshots.service import SnapshotService
from app.store.db import connect_at_start, create_engine_for, create_writer_engine, migrate_async
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_key_redaction()  # after uvicorn's logging setup: no key in any log line
        async with AsyncExitStack() as stack:
            runtime = await open_runtime(stack, settings, packs, wall_clock)
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
    app.mount("/static", StaticFiles(directory=resources.frontend_dir()), name="static")
    # No response compression middleware: the one large file (the chart library) is served pre-compressed
    # by app/api/vendor.py; pages and JSON are small (BENCHMARKS.md: gzip was 6 % of single-event ingest).
    app.add_middleware(SecurityHeaders, frame_ancestors=settings.frame_ancestors)
    return app


async def open_runtime(
    stack: AsyncExitStack, settings: Settings, packs: Mapping[str, Pack], wall_clock: Clock
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
        feeds=feeds,
        wall_clock=wall_clock,
    )

    async def on_commit(result: GroupResult) -> None:
        if isinstance(view_clock, EventClock):
            for outcome in result.outcomes:
                if outcome.max_ts_us is not None:
                    view_clock.observe(outcome.max_ts_us)
        if result.packs_touched:
            hub.mark_dirty(result.packs_touched)

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
    )
    writer.start()
    stack.push_async_callback(writer.stop)  # drains what is queued
    hub.start()
    stack.push_async_callback(hub.stop)

    snapshots = SnapshotService(  # cuts follow the view clock: event time in event-time mode
        engine, packs, settings, view_clock, day_close=hub.day_close, on_change=hub.notices_changed
    )
    if settings.snapshots_enabled:
        snapshots.start()
        stack.push_async_callback(snapshots.stop)  # a running job gets snapshot_stop_wait_s to finish

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
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn settings derived from ours (bind, WebSocket implementation, limits and pings)."""
    from app.ws.transport import direct_protocol

    return {
        "host": settings.host,
        "port": settings.port,
        "ws_max_size": settings.ws_max_inbound_bytes,
        "ws_ping_interval": settings.ws_ping_interval_s,
        "ws_ping_timeout": settings.ws_ping_timeout_s,
        "ws_per_message_deflate": False,
        "ws": direct_protocol(settings.ws_write_buffer_bytes),  # websockets sans-I/O + direct frame writes
        "log_level": "info",
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
    }
