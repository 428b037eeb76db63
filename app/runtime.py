"""Everything long-lived of one process, built and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.keys import KeyStore
from app.auth.pairing import PairingStore
from app.auth.ratelimit import RateLimiter
from app.clock import Clock, EventClock
from app.cluster.link import ClusterLink
from app.config import Settings
from app.ingest.idempotency import IdempotencyKeys
from app.ingest.writer import GroupCommitWriter
from app.metrics.pack import Dashboard, Kpi, Pack, resolve_kpi
from app.notify.service import Notifier
from app.snapshots.service import SnapshotService
from app.store.ready import ReadinessProbe
from app.ws.broker import Broker
from app.ws.hub import TileHub
from app.ws.routes import SocketRegistry


@dataclass(frozen=True, eq=False)
class Runtime:
    """Engine, packs, writer, hub, clocks and stores of one running Pulseboard.

    Built whole by the app's lifespan (``app.main.open_runtime``) once every part has started,
    and never reassigned (frozen); the lifespan closes the parts in reverse order.

    ``clock`` is wall time (validation, receipt times); ``view_clock`` is what
    live windows end at: the same clock, or an ``EventClock`` in event-time mode.
    ``idempotency`` holds the ``Idempotency-Key`` requests in flight, ``keys`` and
    ``pairings`` are the API key and screen pairing stores, ``sockets`` the open screen
    sockets by key (for revocation), ``rate_limiter`` the per-key ingest token buckets and
    ``ready_probe`` the ``/readyz`` store check shared by concurrent polls; ``public_limiter``
    the token buckets per client address of the unauthenticated POST routes and ``read_limiter``
    those per read key (``None``: unlimited); ``cluster`` the Redis
    link of a scaled-out deployment (``app.cluster``), ``None`` for one process.
    """

    settings: Settings
    engine: AsyncEngine
    packs: dict[str, Pack]
    clock: Clock
    view_clock: Clock
    writer: GroupCommitWriter
    hub: TileHub
    broker: Broker
    snapshots: SnapshotService
    idempotency: IdempotencyKeys
    keys: KeyStore
    pairings: PairingStore
    sockets: SocketRegistry
    rate_limiter: RateLimiter
    ready_probe: ReadinessProbe
    notifier: Notifier  # alerts, distribution and the delivery log (app.notify)
    cluster: ClusterLink | None = None  # with PULSEBOARD_REDIS_URL: Redis fan-out and the leader lease
    public_limiter: RateLimiter | None = None
    read_limiter: RateLimiter | None = None

    @property
    def zone(self) -> ZoneInfo:
        """Business time zone."""
        return self.settings.zone

    def find_kpi(self, name: str, pack_name: str | None = None) -> tuple[Pack, Kpi] | None:
        """The pack and KPI named ``name``: qualified (``pack/kpi``), or bare in pack
        ``pack_name``, or bare when one pack defines it (``app.metrics.pack.resolve_kpi``).

        Raises:
            AmbiguousName: a bare name several packs define, without ``pack_name``.
        """
        return resolve_kpi(self.packs, name, pack_name)

    def find_dashboard(self, slug: str) -> tuple[Pack, Dashboard] | None:
        """The pack and dashboard of ``slug``, or ``None``."""
        for pack in self.packs.values():
            if slug in pack.dashboards:
                return pack, pack.dashboards[slug]
        return None

    def dashboard_zone(self, dashboard: Dashboard) -> ZoneInfo:
        """A dashboard's own zone, else the business zone."""
        return ZoneInfo(dashboard.tz) if dashboard.tz else self.zone

    def observe_event_time(self, ts_us: int | None) -> None:
        """Advance the event-time clock (no-op in wall-clock mode)."""
        if ts_us is not None and isinstance(self.view_clock, EventClock):
            self.view_clock.observe(ts_us)
