"""Figure 1: HTTP ingest of 1,000-event batches, 8 concurrent clients, on PostgreSQL and SQLite.

Pulseboard: ``pulseboard serve`` as a subprocess; 8 load-generator processes,
one keep-alive connection each, post 1,000-event JSON batches of real
contact-centre events until the repeat's events are used up.  202 means
validated, deduplicated, durable, rollups updated.

Baseline, same run, same rows (the validated rows Pulseboard stores):
PostgreSQL: binary ``COPY`` (psycopg 3 ``cursor.copy``), 10k rows a
transaction, into a bare table with the same columns, ``UNIQUE (source,
event_id)`` and an index on ``ts_us``.  SQLite: ``executemany`` of the same
rows, 10k a transaction, into the same bare table, WAL + ``synchronous=FULL``.

Repeats alternate baseline and Pulseboard; each repeat uses fresh ids
(``#r<n>``), so both tables grow alike across repeats.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import psycopg

from bench import data, procs
from bench.context import RunContext
from bench.httpload import PostResult, PostSpec, post_worker
from bench.report import Figure, ratios
from bench.stats import summarize

CLIENTS = 8
BATCH_EVENTS = 1000
TXN_ROWS = 10_000
BARE_COLUMNS = ("source", "event_id", "type", "ts_us", "value", "dims", "body_hash", "received_us")
PG_BARE_DDL = """
CREATE TABLE bare_event (
    source varchar(64) NOT NULL, event_id varchar(128) NOT NULL, type varchar(128) NOT NULL,
    ts_us bigint NOT NULL, value double precision, dims text, body_hash bytea NOT NULL,
    received_us bigint NOT NULL, UNIQUE (source, event_id));
CREATE INDEX bare_event_ts ON bare_event (ts_us);
"""
SQLITE_BARE_DDL = """
CREATE TABLE bare_event (
    source varchar(64) NOT NULL, event_id varchar(128) NOT NULL, type varchar(128) NOT NULL,
    ts_us bigint NOT NULL, value double precision, dims text, body_hash blob NOT NULL,
    received_us bigint NOT NULL, UNIQUE (source, event_id));
CREATE INDEX bare_event_ts ON bare_event (ts_us);
"""


def stored_rows(bodies: Sequence[bytes]) -> list[tuple]:
    """The rows Pulseboard stores for ``bodies`` (validated by the product's own parser)."""
    from app.ingest.parse import Limits, parse_events

    now_us = int(time.time() * 1e6)
    limits = Limits(now_us, 300.0, None, 1024, 20, 10_000)
    rows = []
    for body in bodies:
        for e in parse_events(body, "application/json", limits):
            rows.append((e.source, e.event_id, e.type, e.ts_us, e.value, e.dims_json, e.body_hash, now_us))
    return rows


def pg_copy_rows_per_s(url: str, schema: str, rows: list[tuple]) -> float:
    """Binary COPY of ``rows`` into ``schema.bare_event``, 10k a transaction; rows/s."""
    with psycopg.connect(url, options=f"-c search_path={schema} -c synchronous_commit=on") as conn:
        t0 = time.perf_counter()
        for i in range(0, len(rows), TXN_ROWS):
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY bare_event ({', '.join(BARE_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["varchar", "varchar", "varchar", "int8", "float8", "text", "bytea", "int8"])
                    for row in rows[i : i + TXN_ROWS]:
                        cp.write_row(row)
        return len(rows) / (time.perf_counter() - t0)


def pg_setup_bare(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f"SET search_path = {schema}")
        conn.execute(PG_BARE_DDL)


def sqlite_setup_bare(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(SQLITE_BARE_DDL)
    conn.close()


def sqlite_executemany_rows_per_s(path: Path, rows: list[tuple]) -> float:
    """``executemany`` of ``rows`` into ``bare_event``, 10k a transaction, WAL + synchronous=FULL; rows/s."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        sql = f"INSERT INTO bare_event ({', '.join(BARE_COLUMNS)}) VALUES ({', '.join('?' * len(BARE_COLUMNS))})"
        t0 = time.perf_counter()
        for i in range(0, len(rows), TXN_ROWS):
            conn.execute("BEGIN")
            conn.executemany(sql, rows[i : i + TXN_ROWS])
            conn.execute("COMMIT")
        return len(rows) / (time.perf_counter() - t0)
    finally:
        conn.close()


def post_batches(
    port: int, bodies: list[bytes], counts: list[int], timeout_s: float, server_pid: int | None = None
) -> tuple[float, list[PostResult], int]:
    """Post ``bodies`` from ``CLIENTS`` processes (one connection each); events/s accepted,
    the worker results, and the server's peak RSS in bytes during the posts."""
    specs = [PostSpec(port, bodies[i::CLIENTS], counts[i::CLIENTS]) for i in range(CLIENTS)]
    if server_pid is None:
        results = procs.run_workers([(post_worker, s) for s in specs], timeout_s)
        peak = 0
    else:
        with procs.RssSampler(server_pid) as rss:
            results = procs.run_workers([(post_worker, s) for s in specs], timeout_s)
        peak = rss.peak_bytes
    check(results, sum(counts))
    t0 = min(r.started_s for r in results)
    t1 = max(r.ended_s for r in results)
    return sum(r.events for r in results) / (t1 - t0), results, peak


def check(results: list[PostResult], expected_events: int) -> None:
    """Raise when a load generator failed or not every event was accepted."""
    errors = [e for r in results for e in r.errors]
    got = sum(r.events for r in results)
    if errors or got != expected_events:
        statuses = sum((r.statuses for r in results), Counter())
        raise RuntimeError(
            f"{got} of {expected_events} events accepted; statuses {dict(statuses)}; first errors {errors[:3]}"
        )


def _measure(ctx: RunContext, store: str, batches_per_repeat: int) -> Figure:
    events = data.august_wire()
    label = "PostgreSQL" if store == "postgresql" else "SQLite"
    schema = f"pb_ingest_{store[:2]}"
    workdir = ctx.dir(f"ingest-{store}")
    port = procs.free_port()
    server = procs.pulseboard_server(
        f"pulseboard-ingest-{store}", port, workdir, ctx.pulseboard_env(workdir / "var", store, schema)
    )
    if store == "postgresql":
        pg_setup_bare(ctx.pg_url, "pb_bare")
        baseline = lambda rows: pg_copy_rows_per_s(ctx.pg_url, "pb_bare", rows)  # noqa: E731
        base_label = "binary COPY, 10k rows/txn, bare table"
    else:
        bare = workdir / "bare.db"
        sqlite_setup_bare(bare)
        baseline = lambda rows: sqlite_executemany_rows_per_s(bare, rows)  # noqa: E731
        base_label = "executemany, 10k rows/txn, bare table, WAL+FULL"
    n_events = batches_per_repeat * BATCH_EVENTS
    product, base, peaks, lat_p50 = [], [], [], []
    with server:
        warm = data.tagged(events[: 4 * BATCH_EVENTS], "warm")  # compile caches, pools, page cache
        warm_bodies = data.batches(warm, BATCH_EVENTS)
        baseline(stored_rows(warm_bodies))
        post_batches(port, warm_bodies, [BATCH_EVENTS] * len(warm_bodies), timeout_s=120)
        for r in range(ctx.repeats):
            # A different month slice each repeat keeps the rows realistic and the ids fresh.
            start = (r * n_events) % max(1, len(events) - n_events)
            chunk = data.tagged(events[start : start + n_events], f"r{r}")
            bodies = data.batches(chunk, BATCH_EVENTS)
            counts = [min(BATCH_EVENTS, len(chunk) - i) for i in range(0, len(chunk), BATCH_EVENTS)]
            base.append(baseline(stored_rows(bodies)))
            rate, results, peak = post_batches(port, bodies, counts, timeout_s=240, server_pid=server.pid)
            product.append(rate)
            peaks.append(peak / 2**20)
            lats = sorted(x for res in results for x in res.latencies_ms)
            lat_p50.append(lats[len(lats) // 2])
    fig = Figure(
        key=f"ingest_{store}",
        title=f"ingest 1,000-event batches, 8 clients — {label}",
        unit="events/s",
        product=summarize(product),
        baseline=summarize(base),
        baseline_label=base_label,
        baseline_unit="rows/s",
        ratio=ratios(product, base),
        goal="≥ 0.6×",
    )
    fig.met = fig.ratio.median >= 0.6
    fig.notes.append(
        f"{n_events:,} real events per repeat (August 1999 slices, fresh ids), {ctx.repeats} repeats; "
        f"median batch latency {summarize(lat_p50).median:.0f} ms; server peak RSS "
        f"{summarize(peaks).median:.0f} MB without screens."
    )
    fig.extra = {"events_per_repeat": n_events, "batch_latency_p50_ms": lat_p50, "server_peak_rss_mb": peaks}
    return fig


def run(ctx: RunContext) -> list[Figure]:
    """Both stores (PostgreSQL only when it answers)."""
    figs = []
    if ctx.pg_url:
        figs.append(_measure(ctx, "postgresql", 8 if ctx.quick else 32))
    else:
        figs.append(
            Figure(
                "ingest_postgresql",
                "ingest 1,000-event batches, 8 clients — PostgreSQL",
                "events/s",
                goal="≥ 0.6×",
                notes=["not measured: no PostgreSQL server answered"],
            )
        )
    figs.append(_measure(ctx, "sqlite", 16 if ctx.quick else 48))
    return figs
