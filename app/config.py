"""One settings object, validated at start; nothing else reads the environment.

Every setting comes from an environment variable prefixed ``PULSEBOARD_``
(``DATABASE_URL`` is read without prefix).  Units are in the names.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Validated configuration of one Pulseboard process.

    Raises:
        pydantic.ValidationError: at start-up, naming the bad variable, when a
            value is malformed (unknown time zone, non-positive limit, ...).
    """

    model_config = SettingsConfigDict(env_prefix="PULSEBOARD_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "PULSEBOARD_DATABASE_URL"),
        description="postgresql://user:password@host:port/db; unset = embedded SQLite under data_dir",
    )
    db_schema: str | None = Field(
        default=None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema to use (search_path); unset = the server default (public)",
    )
    db_connect_timeout_s: int = Field(
        default=5,
        ge=2,
        le=3600,
        description="PostgreSQL: seconds a new connection may take (libpq connect_timeout, whole seconds, at least 2)",
    )
    db_statement_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="PostgreSQL: statement_timeout of every session; with db_connect_timeout_s also the longest an "
        "ingest request or a readiness check waits for the store before answering 503 + Retry-After",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=10_000,
        ge=0,
        le=3_600_000,
        description="SQLite: how long a writer waits for the file lock held by another process before 503",
    )
    db_start_attempts: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="PostgreSQL: connection attempts at start before giving up (a server still starting is "
        "waited for); SQLite tries once",
    )
    db_start_retry_wait_s: float = Field(
        default=1.0, gt=0, le=300, description="seconds between two connection attempts at start"
    )
    data_dir: Path = Path("./var")
    tz: str = "UTC"
    packs_dir: Path | None = Field(default=None, description="extra YAML KPI packs to load")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = None

    # Ingest limits
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_batch_events: int = Field(default=10_000, gt=0)
    max_future_skew_s: float = Field(default=300.0, ge=0)
    max_lateness_s: float | None = Field(
        default=None, gt=0, description="reject events older than this; unset = accept any age (backfill)"
    )
    max_string_chars: int = Field(default=1024, gt=0)
    min_event_time: datetime = Field(
        default=datetime(1970, 1, 1, tzinfo=UTC),
        description="earliest event `ts` accepted (RFC 3339 with offset; 422 before it): instants far outside "
        "the calendar the periods are computed in are refused at ingest (issue 10 item 2)",
    )
    max_event_time: datetime = Field(
        default=datetime(2100, 1, 1, tzinfo=UTC),
        description="first event `ts` no longer accepted (422 from it on); `max_future_skew_s` applies too",
    )
    max_abs_value: float = Field(
        default=1e15,
        gt=0,
        le=sys.float_info.max,
        description="largest |value| an event may carry (422 past it): sums of up to 1e285 such values stay "
        "finite in float64, so no sum can overflow to infinity or NaN (issue 10 item 1)",
    )
    max_dims: int = Field(default=20, gt=0)
    max_dim_values: int = Field(
        default=1000,
        gt=0,
        le=1_000_000,
        description="distinct values of each rolled-up dimension (per pack) that get rollup rows of their own; "
        "later new values roll up as `__other__` (raw events keep them): bounds the rollup storage "
        "(RELIABILITY.md, storage budget; issue 10 item 17)",
    )
    ingest_rate_per_key_per_s: float = Field(default=1000.0, gt=0, description="ingest requests a second per key")
    ingest_burst_per_key: float = Field(default=2000.0, ge=1, description="ingest requests a key may make at once")
    idempotency_ttl_s: float = Field(
        default=48 * 3600, ge=24 * 3600, description="how long Idempotency-Key answers are kept"
    )
    group_commit_max_events: int = Field(default=20_000, gt=0)
    ingest_queue_max_events: int = Field(default=200_000, gt=0)

    auth_disabled: bool = Field(
        default=False,
        description="serve every route without keys (a local development aid; logged loudly at start)",
    )
    allowed_origins: str | None = Field(
        default=None,
        description="comma-separated exact Origins allowed to open WebSockets; unset = the public URL, "
        "else the server's own host",
    )
    frame_ancestors: str = Field(
        default="'none'", description="CSP frame-ancestors (who may embed pages, e.g. a kiosk origin)"
    )
    ws_max_connections: int = Field(default=10_000, gt=0, description="open WebSockets per process")
    ws_max_connections_per_key: int = Field(default=100, gt=0, description="open WebSockets per key")
    ws_max_inbound_per_s: float = Field(default=5.0, gt=0, description="messages a screen may send per second")
    ws_max_inbound_bytes: int = Field(
        default=65_536, ge=1024, description="largest frame a screen may send; bigger ones close it with 1009"
    )
    # HTTP edge (issue 10, "Hardening round 2"): app.api.limits and app.edge
    control_max_body_bytes: int = Field(
        default=65_536,
        ge=1024,
        description="body limit of every route but POST /api/v1/events (which has max_body_bytes): 413 past it",
    )
    max_url_bytes: int = Field(
        default=8000, ge=256, le=8000, description="longest request target (path + query): 414 past it"
    )
    max_header_bytes: int = Field(
        default=16_384, ge=1024, le=1_048_576, description="request header bytes in all: 431 past it"
    )
    max_header_line_bytes: int = Field(
        default=8000, ge=256, le=8000, description="longest single header (name + value): 431 past it"
    )
    max_headers: int = Field(default=100, ge=8, le=120, description="most request headers: 431 past it")
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="time from a connection's first byte (or its open) to the end of "
        "a request's headers: 408 and closed past it (slow headers)",
    )
    body_grace_s: float = Field(
        default=10.0, gt=0, le=3600, description="seconds a body may take before the minimum rate applies"
    )
    min_body_bytes_per_s: int = Field(
        default=8192, ge=1, description="slowest body accepted after the grace: 408 and closed below it"
    )
    max_connections: int = Field(
        default=11_000,
        ge=10,
        description="open TCP connections and requests in flight per process (uvicorn limit_concurrency: 503 past "
        "it); the file-descriptor limit (ulimit -n) must be above it",
    )
    max_connections_per_ip: int = Field(
        default=256,
        ge=1,
        description="open TCP connections from one peer address (closed with 503 past it); peers in "
        "FORWARDED_ALLOW_IPS (the reverse proxy) are not capped",
    )
    keep_alive_timeout_s: int = Field(default=5, ge=1, le=600, description="idle keep-alive connection closed after")
    public_rate_per_ip_per_s: float = Field(
        default=1.0,
        gt=0,
        description="POST /api/v1/session, /api/v1/pairings, /api/v1/pairings/claim per client address (429)",
    )
    public_burst_per_ip: float = Field(default=30.0, ge=1, description="those requests a client may make at once")
    read_rate_per_key_per_s: float = Field(default=20.0, gt=0, description="requests a second per read key (429)")
    read_burst_per_key: float = Field(default=200.0, ge=1, description="requests a read key may make at once")
    ws_max_inbound_frames_per_s: float = Field(
        default=20.0, gt=0, description="frames of any kind (pings included) a screen may send a second: 1008 past it"
    )
    ws_max_inbound_bytes_per_s: int = Field(
        default=65_536, ge=1024, description="bytes a screen may send a second (pings included): 1008 past it"
    )
    pairing_max_pending_per_network: int = Field(
        default=50, gt=0, description="pairings waiting at once from one /24 (IPv4) or /64 (IPv6) network (429)"
    )
    raw_scan_max_events: int = Field(
        default=200_000,
        gt=0,
        description="raw events one HTTP read may scan (filters on dimensions that are not rolled up): 422 past it",
    )
    raw_scan_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="how long one HTTP read may scan raw events: 422 past it"
    )
    docs_enabled: bool = Field(default=False, description="serve /docs and /redoc (the OpenAPI JSON is always served)")
    shutdown_grace_s: float = Field(
        default=5.0, gt=0, description="on SIGTERM, how long requests in flight may take to finish"
    )

    # Live tiles
    tile_interval_ms: int = Field(default=500, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    stale_after_s: float = Field(default=15.0, gt=0, le=86_400)
    ws_send_timeout_s: float = Field(default=10.0, gt=0)
    ws_write_buffer_bytes: int = Field(
        default=65_536,
        ge=1024,
        description="bytes buffered per screen socket past which it takes no new "
        "frame (its updates merge, latest value wins)",
    )
    ws_replay_buffer_updates: int = Field(default=256, ge=0)
    max_dashboard_views: int = Field(
        default=64, ge=0, description="narrowed dashboard views (/wall/SLUG?KEY=VALUE) kept live per process"
    )
    ws_max_views_per_socket: int = Field(
        default=16, gt=0, description="dashboards one multiplexed socket (/ws/screens) may subscribe to at once"
    )
    ws_ping_interval_s: float = Field(default=10.0, gt=0)
    ws_ping_timeout_s: float = Field(default=10.0, gt=0)
    # Snapshots
    snapshots_enabled: bool = Field(default=True, description="run scheduled cuts and restatements")
    snapshot_daily_at: str = Field(
        default="00:05", pattern=r"^\d{2}:\d{2}$", description="local HH:MM of the daily cut"
    )
    snapshot_monthly_at: str = Field(
        default="00:15", pattern=r"^\d{2}:\d{2}$", description="local HH:MM of the monthly cut"
    )
    snapshot_monthly_day: int = Field(
        default=1, ge=1, le=31, description="day of month of the monthly cut (clamped to month end)"
    )
    snapshot_catchup_max_periods: int = Field(default=400, gt=0)
    snapshot_catchup_horizon_days: int = Field(
        default=400,
        gt=0,
        le=36_500,
        description="catch-up cuts periods ending in the last N days only: one very old event (or a "
        "snapshot far behind) never starts cutting decades of empty periods (issue 10 item 10)",
    )
    restate_interval_s: float = Field(default=60.0, gt=0)
    restate_min_interval_s: float = Field(
        default=300.0,
        ge=0,
        le=7 * 86_400,
        description="a period gets a restated version at most once per this many seconds (its late events "
        "are coalesced into the next one); 0 = restate at every pass (issue 10 item 18)",
    )
    snapshot_stop_wait_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="at shutdown, how long a running cut or restatement may take to finish before it is "
        "cancelled (its transaction rolls back; the next start catches up), and then to end once cancelled",
    )

    # The managers' loop (issue 14): drill-down pages, freshness of tiles
    drill_page_default_events: int = Field(
        default=100, gt=0, description="events per drill-down page when the request gives no limit"
    )
    drill_page_max_events: int = Field(
        default=5000, gt=0, description="most events one drill-down page may ask for (422 past it)"
    )
    late_event_after_s: float = Field(
        default=300.0,
        gt=0,
        description="an event is late when it reaches the store more than this after its own time "
        "(tiles give the share of late events in their window)",
    )
    freshness_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="how often a dashboard's freshness counts (late events, events in window) are re-read; "
        "the watermark and lag follow every computation",
    )
    wall_data_age_after_s: float = Field(
        default=300.0,
        gt=0,
        description="a wall tile shows its data age once its lag (now - newest event) passes this",
    )

    clock: Literal["wall", "event"] = Field(
        default="wall",
        description="'wall': windows end at real now; 'event': windows end at the newest event time seen (replays)",
    )

    # Wall-screen pairing (app.auth.pairing): codes of CODE_ALPHABET (32 symbols, 5 bits each)
    pairing_ttl_s: float = Field(
        default=600.0,
        ge=1,
        le=86_400,
        description="how long a screen's code waits for approval (and, once approved, for "
        "the screen to collect its key)",
    )
    pairing_max_pending: int = Field(
        default=1000, gt=0, description="pairings waiting at once, all clients (429 past it)"
    )
    pairing_max_pending_per_ip: int = Field(
        default=10, gt=0, description="pairings waiting at once from one client address (429 past it)"
    )
    pairing_code_length: int = Field(default=8, ge=6, le=16, description="characters of a pairing code")
    # The rollup engine (issue 11): rebuilds and definition changes.
    raw_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="days raw events are kept (unset: forever); rebuilds of periods before the horizon are refused",
    )
    rebuild_chunk_s: int = Field(
        default=3600,
        ge=3600,
        le=31 * 86_400,
        multiple_of=3600,
        description="seconds of events a rebuild recomputes per transaction (whole UTC hours; ingest of rollups "
        "waits for the chunk being committed)",
    )
    rebuild_on_start: bool = Field(
        default=True,
        description="at start (and on SIGHUP), rebuild the measures whose definition changed and restate snapshots",
    )

    # Notifications (app.notify): alert rules and subscriptions in a YAML file, channels here
    notify_file: Path | None = Field(
        default=None, description="YAML of contacts, alert rules and subscriptions (README: Alerts and distribution)"
    )
    notify_enabled: bool = Field(default=True, description="evaluate alert rules, distribute cuts, retry deliveries")
    alert_interval_s: float = Field(default=60.0, gt=0, le=3600, description="how often alert rules are evaluated")
    smtp_host: str | None = Field(default=None, description="SMTP server of the email channel; unset = no email")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = Field(default="pulseboard@localhost", min_length=3, description="From: of every email")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(default=False, description="upgrade the SMTP connection with STARTTLS")
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=300)
    webhook_url: str | None = Field(
        default=None, pattern=r"^https?://", description="default webhook of the owners (a contact may set its own)"
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of webhook signatures (Standard Webhooks; whsec_ = base64)"
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    notify_attempts: int = Field(default=3, ge=1, le=20, description="tries per delivery pass (tenacity)")
    notify_retry_wait_s: float = Field(default=1.0, gt=0, le=600, description="first wait between two tries")
    notify_retry_max_wait_s: float = Field(default=30.0, gt=0, le=3600, description="longest wait between tries")
    notify_retry_pass_s: float = Field(
        default=300.0, gt=0, le=86_400, description="how often failed deliveries get another pass"
    )
    notify_max_passes: int = Field(
        default=12, ge=1, le=1000, description="delivery passes before a message is given up (status dead)"
    )
    notify_lease_s: float = Field(
        default=120.0, gt=0, le=3600, description="a delivery being sent is not taken by another pass for this long"
    )
    distribution_catchup_max_periods: int = Field(
        default=31, ge=1, le=400, description="newest cut periods a subscription is sent after downtime"
    )
    pdf_renderer: Path | None = Field(
        default=Path("/usr/bin/chromium"),
        description="headless Chromium for the PDF attachment (--print-to-pdf); missing = no PDF, said in the email",
    )
    pdf_timeout_s: float = Field(default=60.0, gt=0, le=600)
    admin_log_rows: int = Field(default=200, ge=1, le=10_000, description="deliveries listed on /admin/notifications")

    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db: share tile updates between processes and elect one leader "
        "(app/cluster); unset = one process, in-memory broker",
    )
    redis_prefix: str = Field(
        default="pulseboard",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="prefix of every Redis key and channel (several deployments may share one Redis)",
    )
    leader_lease_s: float = Field(
        default=3.0, gt=0.2, le=600, description="leader lease; a dead leader is replaced within about this"
    )
    redis_timeout_s: float = Field(
        default=1.0, gt=0, le=60, description="one Redis command's timeout (connect and socket)"
    )
    cluster_stream_max_updates: int = Field(
        default=256, ge=1, le=100_000, description="recent updates kept per dashboard in Redis for resume"
    )
    workers: int = Field(default=1, ge=1, le=64, description="pulseboard serve: worker processes (uvicorn)")
    metrics_enabled: bool = Field(default=True, description="serve /metrics (Prometheus text format)")
    metrics_public: bool = Field(
        default=False,
        description="/metrics without a key (for a scraper on a private network); else a key with the "
        "'metrics' or 'admin' scope",
    )

    @field_validator("pairing_code_length")
    @classmethod
    def _unguessable_code(cls, value: int, info: ValidationInfo) -> int:
        """One guessed code may hit a waiting pairing with probability at most 1e-6."""
        pending = info.data.get("pairing_max_pending") or 1
        if pending / 32**value > 1e-6:
            raise ValueError(
                f"{value} characters leave {pending} waiting pairings guessable "
                f"(p = {pending / 32**value:.1e} > 1e-6 per guess): lengthen the code"
            )
        return value

    @field_validator("min_event_time", "max_event_time")
    @classmethod
    def _aware_bound(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a UTC offset, e.g. 1970-01-01T00:00:00Z")
        if not datetime(1900, 1, 1, tzinfo=UTC) <= value <= datetime(9000, 1, 1, tzinfo=UTC):
            raise ValueError("must lie between 1900 and 9000 (periods are computed in that calendar)")
        return value

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "Etc" is a directory
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    def origin_allowed(self, origin: str, host: str | None, scheme: str | None = None) -> bool:
        """Whether a browser ``Origin`` may open a WebSocket or send a cookie-authenticated change
        (exact match, scheme included, no wildcards).

        Allowed: the configured ``allowed_origins``; else the ``public_url``'s origin;
        else the request's own scheme (``scheme``: ``http``/``https``, ``ws``/``wss``) + ``://`` +
        its ``Host`` (both schemes when ``scheme`` is not given).
        """
        origin = origin.rstrip("/").lower()
        if self.allowed_origins:
            return origin in {o.strip().rstrip("/").lower() for o in self.allowed_origins.split(",") if o.strip()}
        if self.public_url:
            from urllib.parse import urlsplit

            parts = urlsplit(self.public_url)
            return origin == f"{parts.scheme}://{parts.netloc}".lower()
        if host is None:
            return False
        if scheme is not None:
            web = {"ws": "http", "wss": "https"}.get(scheme, scheme)
            return origin == f"{web}://{host}".lower()
        return origin in (f"http://{host}".lower(), f"https://{host}".lower())

    @property
    def store_wait_s(self) -> float:
        """The longest a request waits for the store before it is answered 503 (seconds): a new
        connection (``db_connect_timeout_s``) plus one statement (``db_statement_timeout_s``)."""
        return self.db_connect_timeout_s + self.db_statement_timeout_s

    @property
    def zone(self) -> ZoneInfo:
        """The business time zone as a ``ZoneInfo``."""
        return ZoneInfo(self.tz)

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL of the configured store.

        ``postgresql://`` URLs are mapped to the psycopg 3 async driver; with no
        ``DATABASE_URL`` the embedded SQLite file ``<data_dir>/pulseboard.db``.
        """
        url = self.database_url
        if not url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'pulseboard.db').resolve()}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url
