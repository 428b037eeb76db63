"""Figure 2: single-event POSTs from 64 concurrent clients.

Pulseboard (``pulseboard serve``, SQLite and PostgreSQL) against a minimal
ASGI app (``bench.servers.minimal_asgi``) served by uvicorn with the same
options, answering 202 to the same POSTs.  64 keep-alive connections from 4
load-generator processes (16 each), one request in flight per connection, for
a fixed duration; each body is one real event with a fresh id.
"""

from __future__ import annotations

from bench import data, procs
from bench.context import RunContext
from bench.httpload import PostResult, PostSpec, post_worker
from bench.report import Figure, ratios
from bench.stats import percentile, summarize

PROCESSES = 4
CONNECTIONS_PER_PROCESS = 16


def post_singles(port: int, tag: str, duration_s: float) -> tuple[float, float, list[PostResult]]:
    """Post single events for ``duration_s`` from 64 connections; (accepted requests/s, p99 ms, results)."""
    events = data.tagged(data.august_wire(), tag)
    bodies = data.singles(events)
    specs = [
        PostSpec(
            port,
            bodies[i::PROCESSES],
            [1] * len(bodies[i::PROCESSES]),
            connections=CONNECTIONS_PER_PROCESS,
            duration_s=duration_s,
        )
        for i in range(PROCESSES)
    ]
    results = procs.run_workers([(post_worker, s) for s in specs], timeout_s=duration_s + 60)
    errors = [e for r in results for e in r.errors]
    if errors:
        raise RuntimeError(f"single-event posts failed: {errors[:3]}")
    t0 = min(r.started_s for r in results)
    t1 = max(r.ended_s for r in results)
    lats = sorted(x for r in results for x in r.latencies_ms)
    return sum(r.events for r in results) / (t1 - t0), percentile(lats, 0.99), results


def run(ctx: RunContext) -> list[Figure]:
    duration_s = 2.0 if ctx.quick else 4.0
    stores = ["sqlite"] + (["postgresql"] if ctx.pg_url else [])
    workdir = ctx.dir("ingest-single")
    base_port = procs.free_port()
    baseline_server = procs.bench_server(
        "minimal-asgi", "bench.servers.minimal_asgi", base_port, workdir, ready_path="/"
    )
    servers = {}
    for store in stores:
        port = procs.free_port()
        servers[store] = (
            port,
            procs.pulseboard_server(
                f"pulseboard-single-{store}",
                port,
                workdir,
                ctx.pulseboard_env(workdir / f"var-{store}", store, f"pb_single_{store[:2]}"),
            ),
        )
    base: list[float] = []
    product: dict[str, list[float]] = {s: [] for s in stores}
    p99: dict[str, list[float]] = {s: [] for s in stores}
    with baseline_server:
        for _, srv in servers.values():
            srv.start()
        try:
            post_singles(base_port, "warm", 0.5)
            for store, (port, _) in servers.items():
                post_singles(port, f"warm-{store}", 0.5)
            for r in range(ctx.repeats):
                base.append(post_singles(base_port, f"b{r}", duration_s)[0])
                for store, (port, _) in servers.items():
                    rate, tail, _ = post_singles(port, f"r{r}", duration_s)
                    product[store].append(rate)
                    p99[store].append(tail)
        finally:
            for _, srv in servers.values():
                srv.stop()
    figs = []
    for store in stores:
        label = "PostgreSQL" if store == "postgresql" else "SQLite"
        fig = Figure(
            key=f"ingest_single_{store}",
            title=f"single-event POSTs, 64 clients — {label}",
            unit="events/s",
            product=summarize(product[store]),
            baseline=summarize(base),
            baseline_unit="req/s",
            baseline_label="minimal ASGI app answering 202 (same uvicorn)",
            ratio=ratios(product[store], base),
            goal="≥ 0.5×",
        )
        fig.met = fig.ratio.median >= 0.5
        fig.notes.append(
            f"{duration_s:.0f} s per repeat, 4 processes × 16 keep-alive connections, one real event per "
            f"request; "
            f"Pulseboard request p99 {summarize(p99[store]).median:.0f} ms."
        )
        fig.extra = {"request_p99_ms": p99[store]}
        figs.append(fig)
    return figs
