"""Scale-out on real processes (issue 12): several ``pulseboard serve`` processes on one
PostgreSQL schema and the shared Redis (a key prefix unique per test module), one leader.

* an event posted to process A shows on a screen connected to process B, through Redis (B
  computes no tiles: its ``pulseboard_tile_computations_total`` stays 0); latency printed;
* 3 processes: each snapshot period is cut exactly once (one row per period and version) and
  only by the leader; tiles are computed by the leader only;
* ``kill -9`` of the leader while screens watch and events flow: a survivor leads within the
  lease bound, surviving screens update again with no seq gap, every acknowledged event is
  counted on them and stored once, no duplicate cut; then, with 2 processes, a new period is
  cut exactly once.

The Redis and PostgreSQL outage cases, which stop their store, run on private instances in
tests/test_scale_out_failures.py.  Figures go to RELIABILITY.md ("Scale-out failures").
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.cluster_helpers import Node, Screen, cluster_env, events, post, unique, yesterday
from tests.conftest import IN_CI, PG_URL, _drop_pg_schema, pg_available
from tests.helpers import wait_until

LEASE_S = 2.0
INTERVAL_S = 0.1
COMPOSE = Path(__file__).resolve().parent.parent / "compose.yaml"
SERVE_ARGS = ["--workers", "2"]  # what compose.yaml's instances run after `pulseboard serve`

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not IN_CI and not pg_available(), reason=f"no PostgreSQL at {PG_URL}"),
]


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2).ping())
    except redis.RedisError:
        return False


class Cluster:
    def __init__(self, schema: str, prefix: str, nodes: list[Node]) -> None:
        self.schema, self.prefix, self.nodes = schema, prefix, nodes

    def leader(self) -> Node | None:
        leaders = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None and n.leading()]
        assert len(leaders) <= 1, f"two leaders: {[n.name for n in leaders]}"
        return leaders[0] if leaders else None

    def followers(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None and not n.leading()]

    def snapshots(self) -> list[tuple[str, str, str, int]]:
        with psycopg.connect(PG_URL, connect_timeout=5) as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    f'SELECT dashboard, grain, period, version FROM "{self.schema}".snapshot ORDER BY 1, 2, 3, 4'
                )
            ]

    def stored(self, tag: str) -> dict[str, int]:
        with psycopg.connect(PG_URL, connect_timeout=5) as conn:
            return dict(
                conn.execute(
                    f'SELECT event_id, count(*) FROM "{self.schema}".event WHERE event_id LIKE %s GROUP BY event_id',
                    (tag + "%",),
                ).fetchall()
            )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not _redis_up():
        if IN_CI:
            pytest.fail("Redis is required in CI but does not answer at 127.0.0.1:6379")
        pytest.skip("no Redis at 127.0.0.1:6379")
    schema, prefix = unique("pb_scale_"), unique("pbtest-scale-")
    log_dir = Path(tempfile.mkdtemp(prefix="pb-scale-"))
    env = cluster_env(PG_URL, schema, "redis://127.0.0.1:6379/0", prefix, log_dir)
    nodes = [Node(env, log_dir, name) for name in ("a", "b", "c")]
    try:
        nodes[0].start().wait_ready()  # a migrates and leads; b and c join as followers
        for n in nodes[1:]:
            n.start()
        for n in nodes[1:]:
            n.wait_ready()
        yield Cluster(schema, prefix, nodes)
    finally:
        for n in nodes:
            n.stop()
        import redis

        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(r.scan_iter(match=prefix + ":*", count=1000))
        if keys:
            r.delete(*keys)
        _drop_pg_schema(schema)
        print(f"logs in {log_dir}")


async def _leader(cluster: Cluster) -> Node:
    return await wait_until(lambda: cluster.leader(), 3 * LEASE_S + 5, what="a leader")


async def test_event_on_a_reaches_screen_on_b(cluster: Cluster) -> None:
    """A and B are both followers: A tells the leader about its commit (Redis), the leader computes,
    B's screen gets the update through Redis; neither A nor B reads tiles from the database."""
    leader = await _leader(cluster)
    a, b = cluster.followers()
    screen = Screen(b).start()
    try:
        await asyncio.wait_for(screen.connected.wait(), 15)
        before = screen.count_today or 0
        async with httpx.AsyncClient() as client:
            for n in range(3):
                t0 = time.monotonic()
                assert await post(client, a.url, events(5, unique(f"ab{n}-"))) == 202
                await wait_until(lambda n=n: screen.count_today == before + 5 * (n + 1), 10, interval_s=0.005)
                print(f"event accepted on {a.name} -> tile on {b.name}: {(time.monotonic() - t0) * 1000:.0f} ms")
        assert screen.gaps() == []
        for follower in (a, b):  # no DB re-read on the followers
            assert follower.metric("pulseboard_tile_computations_total", 'dashboard="generic-wall"') == 0
        assert b.metric("pulseboard_frames_sent_total") >= 3
        assert leader.metric("pulseboard_tile_computations_total", 'dashboard="generic-wall"') > 0
    finally:
        await screen.stop()


async def test_resume_on_a_process_that_never_saw_the_updates(cluster: Cluster) -> None:
    """A screen that was on B reconnects with ``?epoch=&since=`` to D, a process started after the
    updates it missed: D serves them from the Redis stream (updates, then a heartbeat), no snapshot."""
    from websockets.asyncio.client import connect

    await _leader(cluster)
    b = cluster.followers()[0]
    screen = Screen(b).start()
    d = Node(b.env, b.log_path.parent, "d")
    try:
        await asyncio.wait_for(screen.connected.wait(), 15)
        epoch, since = screen.epoch, screen.seq
        await screen.stop()
        leader = cluster.leader()
        assert leader is not None
        probe = Screen(leader).start()  # sees each update go out
        await asyncio.wait_for(probe.connected.wait(), 15)
        async with httpx.AsyncClient() as client:
            for n in range(3):  # one update each: wait for it before the next post
                seen = probe.seq
                assert await post(client, b.url, events(2, unique(f"rs{n}-"))) == 202
                await wait_until(lambda seen=seen: probe.seq is not None and probe.seq > seen, 15, what="an update")
        await probe.stop()
        await asyncio.to_thread(d.start().wait_ready)
        async with connect(f"{d.ws_url}/ws/dashboards/generic-wall?epoch={epoch}&since={since}") as ws:
            frames = []
            while not frames or frames[-1]["type"] != "heartbeat":
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        kinds = [f["type"] for f in frames]
        seqs = [f["seq"] for f in frames if f["type"] == "update"]
        assert "snapshot" not in kinds and kinds[-1] == "heartbeat"
        assert seqs == list(range(since + 1, since + 1 + len(seqs))) and len(seqs) >= 3
        assert {f["epoch"] for f in frames} == {epoch}
        assert d.metric("pulseboard_tile_computations_total", 'dashboard="generic-wall"') == 0
    finally:
        await screen.stop()
        d.stop()


async def test_three_processes_cut_once_compute_once(cluster: Cluster) -> None:
    leader = await _leader(cluster)
    screens = [Screen(n).start() for n in cluster.nodes]
    try:
        for s in screens:
            await asyncio.wait_for(s.connected.wait(), 15)
        async with httpx.AsyncClient() as client:
            for n in cluster.nodes:  # every process ingests: events of yesterday make its day due
                assert await post(client, n.url, events(4, unique(f"y-{n.name}-"), yesterday())) == 202
        day = yesterday().date().isoformat()
        await wait_until(lambda: ("generic-wall", "day", day, 1) in cluster.snapshots(), 30, what="yesterday cut")
        async with httpx.AsyncClient() as client:  # a late event: the leader restates the day once
            assert await post(client, cluster.nodes[1].url, events(1, unique("late-"), yesterday())) == 202
        await wait_until(lambda: ("generic-wall", "day", day, 2) in cluster.snapshots(), 30, what="restatement")
        rows = cluster.snapshots()
        assert len(rows) == len(set(rows))
        assert [r for r in rows if r[:3] == ("generic-wall", "day", day)] == [
            ("generic-wall", "day", day, 1),
            ("generic-wall", "day", day, 2),
        ]
        for n in cluster.nodes:  # only the leader ran cut passes and computed tiles
            cuts = n.metric("pulseboard_last_cut_timestamp_seconds", 'grain="day"')
            computations = n.metric("pulseboard_tile_computations_total", 'dashboard="generic-wall"')
            if n is leader:
                assert cuts > 0 and computations > 0
            else:
                assert cuts == 0 and computations == 0, n.name
        for s in screens:
            assert s.gaps() == []
    finally:
        for s in screens:
            await s.stop()


async def test_kill9_leader_while_screens_watch(cluster: Cluster) -> None:
    leader = await _leader(cluster)
    survivors = [n for n in cluster.nodes if n is not leader]
    screens = [Screen(n).start() for n in survivors]
    tag = unique("k9-")
    acked: list[str] = []
    sent = 0
    stop = asyncio.Event()

    async def ingest() -> None:
        nonlocal sent
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                for n in survivors:
                    body = events(1, f"{tag}{sent}")
                    sent += 1
                    if await post(client, n.url, body) == 202:
                        acked.append(body[0]["id"])
                await asyncio.sleep(0.05)

    try:
        day = yesterday().date().isoformat()
        if ("generic-wall", "day", day, 1) not in cluster.snapshots():  # run alone: cut yesterday first
            async with httpx.AsyncClient() as client:
                assert await post(client, survivors[0].url, events(1, unique("y0-"), yesterday())) == 202
        await wait_until(lambda: ("generic-wall", "day", day, 1) in cluster.snapshots(), 30, what="yesterday cut")
        for s in screens:
            await asyncio.wait_for(s.connected.wait(), 15)
        base = [s.count_today or 0 for s in screens]
        feeder = asyncio.create_task(ingest())
        await wait_until(lambda: len(acked) >= 20, 20)
        killed_at = time.monotonic()
        leader.kill9()
        new_leader = await wait_until(lambda: cluster.leader(), 3 * LEASE_S + 5, what="a new leader")
        elected_s = time.monotonic() - killed_at
        await wait_until(lambda: all(s.updates() and s.updates()[-1].at_s > killed_at for s in screens), 15)
        stop.set()
        await feeder
        for s, b in zip(screens, base, strict=True):
            await wait_until(lambda s=s, b=b: s.count_today == b + len(acked), 15, what="every acknowledged event")
        for s in screens:
            before = [f for f in s.updates() if f.at_s < killed_at]
            after = [f for f in s.updates() if f.at_s > killed_at]
            gap_ms = (after[0].at_s - before[-1].at_s) * 1000 if before else float("nan")
            print(f"failover on {s.node.name}: last update before kill -> first after = {gap_ms:.0f} ms")
            assert s.gaps() == []
        print(f"new leader {new_leader.name} {elected_s:.2f} s after kill -9 (lease {LEASE_S} s)")
        assert elected_s <= LEASE_S * 1.5 + 2
        stored = cluster.stored(tag)
        assert set(acked) <= set(stored) and set(stored.values()) == {1}
        rows = cluster.snapshots()
        assert len(rows) == len(set(rows))
        # 2 processes now: a late event of yesterday is restated exactly once, by the new leader
        versions = [r[3] for r in cluster.snapshots() if r[:3] == ("generic-wall", "day", day)]
        async with httpx.AsyncClient() as client:
            assert await post(client, survivors[0].url, events(1, unique("late2-"), yesterday())) == 202
        nxt = ("generic-wall", "day", day, max(versions) + 1)
        await wait_until(lambda: nxt in cluster.snapshots(), 30, what="restatement after failover")
        assert [r[3] for r in cluster.snapshots() if r[:3] == nxt[:3]] == [*versions, nxt[3]]
        assert new_leader.metric("pulseboard_last_cut_timestamp_seconds", 'grain="day"') > 0
        other = next(n for n in survivors if n is not new_leader)
        assert other.metric("pulseboard_last_cut_timestamp_seconds", 'grain="day"') == 0
        for n in survivors:
            assert n.tracebacks() == 0, n.log_tail()
    finally:
        stop.set()
        for s in screens:
            await s.stop()


async def test_serve_workers_two_processes_one_port() -> None:
    """``pulseboard serve --workers 2`` (what compose.yaml runs): two uvicorn workers on one port,
    one leader among them, /metrics merged over both (multiprocess mode)."""
    import psutil
    import redis

    if not _redis_up():
        if IN_CI:
            pytest.fail("Redis is required in CI but does not answer at 127.0.0.1:6379")
        pytest.skip("no Redis at 127.0.0.1:6379")
    schema, prefix = unique("pb_workers_"), unique("pbtest-workers-")
    log_dir = Path(tempfile.mkdtemp(prefix="pb-workers-"))
    env = cluster_env(PG_URL, schema, "redis://127.0.0.1:6379/0", prefix, log_dir)
    node = Node(env, log_dir, "w", *SERVE_ARGS)
    screen: Screen | None = None
    try:
        node.start().wait_ready()
        assert node.proc is not None
        workers = await wait_until(lambda: len(psutil.Process(node.proc.pid).children()) >= 2 or None, 30)
        assert workers
        await wait_until(lambda: node.metric("pulseboard_leader") == 1, 3 * LEASE_S + 5, what="one leader")
        screen = Screen(node).start()
        await asyncio.wait_for(screen.connected.wait(), 15)
        before = screen.count_today or 0
        async with httpx.AsyncClient() as client:
            for i in range(4):  # connections spread over the workers
                assert await post(client, node.url, events(2, unique(f"w{i}-"))) == 202
        await wait_until(lambda: screen.count_today == before + 8, 15, what="8 events on the wall")
        assert node.metric("pulseboard_tile_computations_total", 'dashboard="generic-wall"') > 0
        # The screens gauge is sampled once a second by each worker, summed over both (livesum).
        await wait_until(
            lambda: node.metric("pulseboard_screens_connected", 'dashboard="generic-wall"') == 1.0,
            5,
            what="one screen counted in /metrics",
        )
        assert screen.gaps() == []
        assert node.tracebacks() == 0, node.log_tail()
    finally:
        if screen is not None:
            await screen.stop()
        node.stop()
        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(r.scan_iter(match=prefix + ":*", count=1000))
        if keys:
            r.delete(*keys)
        _drop_pg_schema(schema)


def test_compose_commands_are_what_the_tests_run() -> None:
    """compose.yaml's instances run ``pulseboard serve`` with the arguments the workers test runs,
    on PostgreSQL and Redis, with settings that exist; nginx passes WebSockets and X-Forwarded-For."""
    import yaml

    from app.config import Settings

    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    instances = [s for s in services.values() if s.get("image") == "pulseboard:local"]
    assert len(instances) == 2
    fields = {name.upper() for name in Settings.model_fields}
    for svc in instances:
        assert svc["command"] == ["pulseboard", "serve", *SERVE_ARGS]
        env = svc["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and env["PULSEBOARD_REDIS_URL"].startswith("redis://")
        unknown = [k for k in env if k.startswith("PULSEBOARD_") and k.removeprefix("PULSEBOARD_") not in fields]
        assert unknown == []
        assert "readyz" in " ".join(svc["healthcheck"]["test"])
    Settings(
        **{
            k.removeprefix("PULSEBOARD_").lower(): v
            for k, v in instances[0]["environment"].items()
            if k.startswith("PULSEBOARD_")
        }
    )
    nginx = (COMPOSE.parent / "docs" / "deploy" / "nginx.conf").read_text()
    for line in ("proxy_set_header Upgrade $http_upgrade", "X-Forwarded-For $proxy_add_x_forwarded_for"):
        assert line in nginx
    for name in ("postgres", "redis", "lb"):
        assert "healthcheck" in services[name]
