"""``/metrics``: Prometheus metrics of Pulseboard through ``prometheus_client``.

With several worker processes (``pulseboard serve --workers N``) ``prometheus_client``'s
multiprocess mode is used: ``PROMETHEUS_MULTIPROC_DIR`` names a directory every worker writes its
samples to (``serve`` makes one when it is not set) and a scrape of any worker merges them all
(counters and histograms summed; gauges per ``multiprocess_mode``).  It must be set before this
module is imported.  Without it, the process's default registry.

Names follow the Prometheus naming conventions (base units: seconds; ``_total`` counters).
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "pulseboard_http_requests_total", "HTTP requests answered, by route group and status", ["route", "status"]
)
INGEST_EVENTS = Counter("pulseboard_ingest_events_total", "events by outcome of their group commit", ["outcome"])
GROUP_COMMIT_EVENTS = Histogram(
    "pulseboard_group_commit_events",
    "events per group commit",
    buckets=(1, 10, 100, 500, 1000, 5000, 10_000, 20_000, float("inf")),
)
GROUP_COMMIT_SECONDS = Histogram(
    "pulseboard_group_commit_seconds",
    "time a group commit took",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, float("inf")),
)
QUEUE_EVENTS = Gauge(
    "pulseboard_ingest_queue_events", "events waiting for the group commit", multiprocess_mode="livesum"
)
SCREENS = Gauge(
    "pulseboard_screens_connected", "screens connected, by dashboard", ["dashboard"], multiprocess_mode="livesum"
)
FRAMES_SENT = Counter("pulseboard_frames_sent_total", "update frames written to screens")
FRAMES_MERGED = Counter(
    "pulseboard_frames_merged_total", "updates merged into a pending one (slow screens: a frame not sent)"
)
FANOUT_SECONDS = Histogram(
    "pulseboard_fanout_seconds",
    "from a tile update's computation (leader) to its last local screen write, per process",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, float("inf")),
)
TILE_COMPUTATIONS = Counter(
    "pulseboard_tile_computations_total", "dashboard tile computations (the leader's only)", ["dashboard"]
)
LEADER = Gauge("pulseboard_leader", "1 on the process holding the leader lease", multiprocess_mode="livemax")
LAST_CUT = Gauge(
    "pulseboard_last_cut_timestamp_seconds",
    "Unix time of the last successful snapshot cut, by grain",
    ["grain"],
    multiprocess_mode="max",
)
STORE_ERRORS = Counter("pulseboard_store_errors_total", "failed store operations", ["where"])
REDIS_ERRORS = Counter("pulseboard_redis_errors_total", "failed Redis operations", ["where"])
RESUBSCRIBES = Counter("pulseboard_redis_resubscribes_total", "Redis pub/sub subscriptions made again after a loss")
DERIVED_LAG = Gauge(
    "pulseboard_derived_lag_seconds",
    "age of the newest tile computation of watched dashboards (leader)",
    multiprocess_mode="livemax",
)


def multiprocess() -> bool:
    """Whether samples go to ``PROMETHEUS_MULTIPROC_DIR`` (several workers)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def render() -> tuple[bytes, str]:
    """The scrape: ``(body, content type)`` in the Prometheus text format, every worker merged."""
    if multiprocess():
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def cut_succeeded(grain: str) -> None:
    """A cut of ``grain`` was stored (``pulseboard_last_cut_timestamp_seconds``)."""
    LAST_CUT.labels(grain).set(time.time())


def worker_exited(pid: int) -> None:
    """Drop the live gauges of a worker that exited (multiprocess mode)."""
    if multiprocess():
        _mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
