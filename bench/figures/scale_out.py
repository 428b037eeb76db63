"""Issue 12's speed table in the documented multi-process topology: ``pulseboard serve``
processes on PostgreSQL + Redis (``PULSEBOARD_REDIS_URL``), one leader, screens spread over the
processes.  Every figure is measured next to its in-run baseline.

* Fan-out: 2 processes (A leads, B follows), tile interval 1 ms, the driver posts 50-event
  batches flat out to A; delivered ``update`` frames/s summed over screens split half on A, half
  on B.  Baseline: ``websockets.broadcast()`` of the same captured frames from one bare process.
* Accepted → tile p99: 2 processes, tile interval 500 ms, 10k events/s to A, screens on both.
* Failover: 3 processes, screens on the two followers, events flowing; ``kill -9`` of the
  leader; per screen, the last update before the kill → the first update after.
* RSS per 1,000 idle screens: the follower's RSS with 1,000 screens connected and nothing
  changing, minus its RSS before they connected.
* Screens held at 1 update/s: the ramp of ``bench.figures.fanout`` over 2 processes.

Needs PostgreSQL (the bench's scratch database) and Redis at 127.0.0.1:6379 (a key prefix per run).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time

from bench import data, procs
from bench.context import RunContext
from bench.driver import DriverSpec, driver_worker
from bench.figures.fanout import (
    FANOUT_BATCH_EVENTS,
    LATENCY_BATCH_EVENTS,
    LATENCY_BATCH_INTERVAL_S,
    RAMP_BATCH_EVENTS,
    RAMP_P99_LIMIT_MS,
    RAMP_SCREENS_PER_PROCESS,
    SLUG,
    _driver_job,
    _screen_jobs,
    _split,
    delivery_ms,
    fanout_bare,
    latencies_ms,
)
from bench.report import Figure, ratios
from bench.servers.bare_ws import write_frames
from bench.stats import percentile, summarize

REDIS_URL = os.environ.get("PULSEBOARD_BENCH_REDIS", "redis://127.0.0.1:6379/0")
LEASE_S = 3.0


class Topology:
    """``n`` Pulseboard processes on one PostgreSQL schema and one Redis prefix; the first leads."""

    def __init__(self, ctx: RunContext, name: str, n: int, **extra: str) -> None:
        self.prefix = f"pbbench-{secrets.token_hex(4)}"
        schema = f"scale_{secrets.token_hex(4)}"
        self.servers: list[procs.Server] = []
        for i in range(n):
            workdir = ctx.dir(f"{name}-{i}")
            env = ctx.pulseboard_env(
                workdir / "var",
                "postgresql",
                schema,
                PULSEBOARD_REDIS_URL=REDIS_URL,
                PULSEBOARD_REDIS_PREFIX=self.prefix,
                PULSEBOARD_LEADER_LEASE_S=str(LEASE_S),
                **extra,
            )
            server = procs.pulseboard_server(f"{name}-{i}", procs.free_port(), workdir, env)
            server.ready_path = "/readyz"
            self.servers.append(server)

    def __enter__(self) -> Topology:
        self.servers[0].start()
        _wait(lambda: _leader(self.servers[0]), 20)
        for s in self.servers[1:]:
            s.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.servers:
            s.stop()
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=self.prefix + ":*", count=1000))
        if keys:
            r.delete(*keys)


def _leader(server: procs.Server) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=2) as resp:
            return bool(json.loads(resp.read()).get("leader"))
    except OSError:
        return False


def _wait(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the cluster")
        time.sleep(0.1)


def _split_jobs(topology: Topology, screens: int, duration_s: float, **kw) -> list:
    """Screen jobs with the screens split evenly over the processes."""
    jobs: list = []
    per = screens // len(topology.servers)
    for i, s in enumerate(topology.servers):
        n = per + (screens - per * len(topology.servers) if i == 0 else 0)
        jobs += _screen_jobs(f"ws://127.0.0.1:{s.port}/ws/dashboards/{SLUG}", n, duration_s, **kw)
    return jobs


def _fanout(ctx: RunContext, screens: int) -> Figure:
    duration_s = 3.0 if ctx.quick else 5.0
    product, base, notes = [], [], []
    frames_file = ctx.dir("scale-fanout") / "frames.bin"
    with Topology(ctx, "scale-fanout", 2, PULSEBOARD_CLOCK="event", PULSEBOARD_TILE_INTERVAL_MS="1") as top:
        leader = top.servers[0]
        for r in range(ctx.repeats):
            jobs = _split_jobs(top, screens, duration_s, keep_frames=200)
            jobs.append(_driver_job(leader.port, r, FANOUT_BATCH_EVENTS, None, duration_s, f"sfan{r}"))
            screen_results, driver = _split(procs.run_workers(jobs, timeout_s=duration_s + 180))
            rate = sum(s.updates for s in screen_results) / duration_s
            frames = [f for s in screen_results for f in s.frames]
            if r == 0:
                if not frames:
                    raise RuntimeError("no update frame captured")
                write_frames(frames_file, frames)
            product.append(rate)
            notes.append(sum(s.connected for s in screen_results))
            rate_b, _ = fanout_bare(ctx, frames_file, screens, duration_s)
            base.append(rate_b)
    fig = Figure(
        "scale_fanout",
        f"fan-out, 2 processes on PostgreSQL + Redis: delivered tile messages/s to {screens:,} screens",
        "msg/s",
        product=summarize(product),
        baseline=summarize(base),
        baseline_label="websockets.broadcast() of the same frames, one bare process",
        ratio=ratios(product, base),
        goal="≥ 0.9×",
    )
    fig.met = fig.ratio.median >= 0.9
    fig.notes.append(
        f"{duration_s:.0f} s per repeat; screens half on the leader, half on the follower ({min(notes):,} connected); "
        "the leader computes and publishes flat out (tile interval 1 ms), the follower fans out what Redis brings."
    )
    return fig


def _latency(ctx: RunContext, screens: int) -> Figure:
    duration_s = 5.0 if ctx.quick else 8.0
    p99s, p50s, details = [], [], []
    with Topology(ctx, "scale-latency", 2, PULSEBOARD_CLOCK="event", PULSEBOARD_TILE_INTERVAL_MS="500") as top:
        leader = top.servers[0]
        for r in range(ctx.repeats):
            jobs = _split_jobs(top, screens, duration_s, record_latency=True)
            jobs.append(
                _driver_job(leader.port, r, LATENCY_BATCH_EVENTS, LATENCY_BATCH_INTERVAL_S, duration_s, f"slat{r}")
            )
            screen_results, driver = _split(procs.run_workers(jobs, timeout_s=duration_s + 180))
            lats, missing = latencies_ms(screen_results, driver, 1.5)
            p99s.append(percentile(lats, 0.99))
            p50s.append(percentile(lats, 0.5))
            details.append({"missing": missing, "events_per_s": driver.events / (driver.ended_s - driver.started_s)})
    fig = Figure(
        "scale_latency",
        f"event accepted → tile received p99, {screens:,} screens over 2 processes, 10k events/s",
        "ms",
        product=summarize(p99s),
        baseline=summarize([500.0] * len(p99s)),
        baseline_label="tile interval",
        ratio=ratios(p99s, [500.0] * len(p99s)),
        goal="≤ interval + 100 ms",
    )
    fig.met = fig.product.median <= 600
    fig.notes.append(
        f"p50 {summarize(p50s).median:.0f} ms; driver achieved "
        f"{summarize([d['events_per_s'] for d in details]).median:,.0f} events/s; "
        f"{sum(d['missing'] for d in details)} (batch, screen) pairs never arrived."
    )
    return fig


async def _failover_once(top: Topology, screens_per_follower: int) -> dict:
    import httpx
    from websockets.asyncio.client import connect

    leader, followers = top.servers[0], top.servers[1:]
    last_update: dict[int, list[float]] = {}
    stop = asyncio.Event()

    async def screen(i: int, port: int) -> None:
        times = last_update.setdefault(i, [])
        async with connect(f"ws://127.0.0.1:{port}/ws/dashboards/{SLUG}", open_timeout=30) as ws:
            async for raw in ws:
                if '"type":"update"' in (raw if isinstance(raw, str) else raw.decode()):
                    times.append(time.monotonic())
                if stop.is_set():
                    return

    async def feed() -> None:
        bodies = data.live_batches(20, f"fo{secrets.token_hex(3)}", limit=2000)
        async with httpx.AsyncClient() as client:
            for body in bodies:
                if stop.is_set():
                    return
                now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
                target = followers[0]
                try:
                    await client.post(
                        f"http://127.0.0.1:{target.port}/api/v1/events",
                        content=body.replace(b"__TS__", now.encode()),
                        headers={"content-type": "application/json"},
                        timeout=10,
                    )
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    tasks = [
        asyncio.create_task(screen(i * 1000 + k, f.port))
        for i, f in enumerate(followers)
        for k in range(screens_per_follower)
    ]
    feeder = asyncio.create_task(feed())
    await asyncio.sleep(4)
    killed = time.monotonic()
    os.killpg(leader.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
    leader.proc.wait(10)  # type: ignore[union-attr]
    await asyncio.sleep(3 * LEASE_S + 3)
    stop.set()
    feeder.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(feeder, *tasks, return_exceptions=True)
    gaps = []
    for times in last_update.values():
        before = [t for t in times if t < killed]
        after = [t for t in times if t > killed]
        if before and after:
            gaps.append(after[0] - before[-1])
    return {"gaps_s": gaps, "screens": len(last_update), "recovered": len(gaps)}


def _failover(ctx: RunContext) -> Figure:
    values, recovered = [], []
    for r in range(ctx.repeats):
        with Topology(ctx, f"scale-failover-{r}", 3, PULSEBOARD_TILE_INTERVAL_MS="500") as top:
            result = asyncio.run(_failover_once(top, 20))
        values.append(max(result["gaps_s"]) if result["gaps_s"] else float("nan"))
        recovered.append(f"{result['recovered']}/{result['screens']}")
    fig = Figure(
        "scale_failover",
        "leader failover: last update before kill -9 → first update after, surviving screens (worst screen)",
        "s",
        product=summarize(values),
        baseline=summarize([LEASE_S] * len(values)),
        baseline_label="leader lease (PULSEBOARD_LEADER_LEASE_S)",
        ratio=ratios(values, [LEASE_S] * len(values)),
        goal="≤ 5 s",
    )
    fig.met = fig.product.high <= 5.0
    fig.notes.append(
        f"3 processes, 20 screens on each follower, live events to a follower every 100 ms; screens that "
        f"updated again: {', '.join(recovered)}; lease {LEASE_S:.0f} s, renewed every {LEASE_S / 3:.0f} s."
    )
    return fig


def _idle_rss(ctx: RunContext, screens: int) -> Figure:
    import psutil

    values = []
    with Topology(ctx, "scale-rss", 2, PULSEBOARD_TILE_INTERVAL_MS="500") as top:
        follower = top.servers[1]
        proc = psutil.Process(follower.pid)
        for _r in range(ctx.repeats):
            before = proc.memory_info().rss
            sampled: list[int] = []
            jobs = _screen_jobs(f"ws://127.0.0.1:{follower.port}/ws/dashboards/{SLUG}", screens, 3.0)

            def sample(into: list[int] = sampled) -> None:
                time.sleep(2.0)
                into.append(proc.memory_info().rss)

            procs.run_workers(jobs, timeout_s=180, on_go=sample)
            values.append((sampled[0] - before) / 1024 / (screens / 1000))
    fig = Figure(
        "scale_rss",
        f"server RSS per 1,000 idle screens (follower process, {screens:,} screens)",
        "KiB",
        product=summarize(values),
        baseline=summarize([11.6 * 1000 / 1.024] * len(values)),
        baseline_label="Centrifugo's published ~11.6 KB per idle connection × 1,000",
        ratio=ratios(values, [11.6 * 1000 / 1.024] * len(values)),
        goal="report",
    )
    fig.notes.append("RSS after the screens connected minus RSS before, on the same process; heartbeats only.")
    return fig


def _ramp(ctx: RunContext, steps: tuple[int, ...], duration_s: float) -> Figure:
    held = 0
    rows = []
    for screens in steps:
        with Topology(ctx, f"scale-ramp-{screens}", 2, PULSEBOARD_TILE_INTERVAL_MS="1000") as top:
            leader = top.servers[0]
            jobs = _split_jobs(top, screens, duration_s, record_latency=True, per_process=RAMP_SCREENS_PER_PROCESS)
            bodies = data.live_batches(RAMP_BATCH_EVENTS, f"sramp{screens}", limit=int(duration_s / 0.1) + 20)
            spec = DriverSpec(
                leader.port, bodies, [RAMP_BATCH_EVENTS] * len(bodies), [0] * len(bodies), 0.1, duration_s, live=True
            )
            jobs.append((driver_worker, spec))
            screen_results, _driver = _split(procs.run_workers(jobs, timeout_s=duration_s + 300))
        lats = delivery_ms(screen_results)
        p99 = percentile(lats, 0.99)
        per_screen = [n for s in screen_results for n in s.per_screen_updates]
        ups = sum(per_screen) / len(per_screen) / duration_s if per_screen else 0.0
        connected = sum(s.connected for s in screen_results)
        rows.append(f"{screens:,}: p99 {p99:.0f} ms, {ups:.2f} upd/s/screen, {connected:,} connected")
        if p99 <= RAMP_P99_LIMIT_MS and ups >= 0.8:
            held = screens
        else:
            break
    fig = Figure(
        "scale_ramp",
        "screens held at 1 update/s with p99 ≤ 250 ms, 2 processes on PostgreSQL + Redis",
        "screens",
        product=summarize([held]),
        goal="10,000",
    )
    fig.met = held >= 10_000
    fig.notes.append("Steps: " + "; ".join(rows) + ".")
    return fig


def run(ctx: RunContext) -> list[Figure]:
    if ctx.pg_url is None:
        return [Figure("scale_fanout", "scale-out figures", "—", notes=["not measured: no PostgreSQL"])]
    screens = 1000
    figs = [_fanout(ctx, screens), _latency(ctx, screens), _failover(ctx), _idle_rss(ctx, screens)]
    steps = (
        (2500, 5000)
        if ctx.quick
        else tuple(int(s) for s in os.environ.get("PULSEBOARD_BENCH_RAMP", "5000,10000").split(","))
    )
    figs.append(_ramp(ctx, steps, 10.0))
    return figs
