"""Scale-out failures on PRIVATE stores (issue 12, item 4): two ``pulseboard serve`` processes.

* Redis stopped (``kill -9`` of a private ``redis-server`` on a free port, no persistence) for
  ``REDIS_DOWN_S`` and started again empty: every ingest answer meanwhile is 202, ``/readyz``
  says 503 naming Redis, the walls get no frame after the leader steps down (they show STALE:
  no heartbeat over frozen numbers), and without a restart both processes subscribe again, a
  leader is elected, ``/readyz`` is 200, and the screens show every acknowledged event (a new
  epoch with a full snapshot, or seq continuity: never a silent gap).
* PostgreSQL restarted (a private cluster, ``pg_ctl stop -m immediate``) under the same two
  processes and the shared Redis: ingest answers 503 while it is down and 202 after, the leader
  keeps its lease, screens show every acknowledged event, each stored once.

The shared Redis and PostgreSQL are never stopped.  Figures printed and in RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.cluster_helpers import Node, Screen, cluster_env, events, post, unique
from tests.conftest import IN_CI
from tests.crash_client import free_port
from tests.helpers import wait_until
from tests.pgcluster import PrivatePostgres, private_pg_unusable

pytestmark = pytest.mark.slow

REDIS_DOWN_S = 10.0
PG_DOWN_S = 4.0
LEASE_S = 2.0


class PrivateRedis:
    """``redis-server`` on a free port in a temp dir, no persistence (a restart starts empty)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.base / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        import redis

        def up() -> bool:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())

        from tests.helpers import wait_until_sync

        wait_until_sync(up, 10, ignore=(redis.RedisError,), what="private redis")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="pb-scale-fail-"))
    yield path
    print(f"logs in {path}")


def _why_no_redis_server() -> str | None:
    return None if shutil.which("redis-server") else "no redis-server binary"


@pytest.mark.skipif(_why_no_redis_server() is not None and not IN_CI, reason="no redis-server binary")
async def test_redis_down_10s_and_back(workdir: Path) -> None:
    from tests.conftest import PG_URL, _drop_pg_schema, pg_available

    if not pg_available():
        if IN_CI:
            pytest.fail("PostgreSQL required in CI")
        pytest.skip("no PostgreSQL")
    redis_srv = PrivateRedis(workdir)
    redis_srv.start()
    schema = unique("pb_redis_down_")
    env = cluster_env(PG_URL, schema, redis_srv.url, "pbtest", workdir, PULSEBOARD_STALE_AFTER_S="3")
    a, b = Node(env, workdir, "a"), Node(env, workdir, "b")
    screens: list[Screen] = []
    try:
        a.start().wait_ready()
        b.start().wait_ready()
        await wait_until(lambda: a.leading() or b.leading(), 10, what="a leader")
        screens = [Screen(n).start() for n in (a, b)]
        for s in screens:
            await asyncio.wait_for(s.connected.wait(), 15)
        base = [s.count_today or 0 for s in screens]
        tag = unique("rd-")
        acked: list[str] = []
        statuses: list[int] = []
        async with httpx.AsyncClient() as client:
            for i in range(4):  # before the outage
                body = events(1, f"{tag}pre{i}")
                if await post(client, (a, b)[i % 2].url, body) == 202:
                    acked.append(body[0]["id"])
            await wait_until(lambda: all(s.count_today == b0 + 4 for s, b0 in zip(screens, base, strict=True)), 10)
            redis_srv.kill()
            down_at = time.monotonic()
            ready_503 = {a.name: False, b.name: False}
            i = 0
            while time.monotonic() - down_at < REDIS_DOWN_S:
                node = (a, b)[i % 2]
                body = events(1, f"{tag}down{i}")
                status = await post(client, node.url, body)
                statuses.append(status)
                if status == 202:
                    acked.append(body[0]["id"])
                code, reply = node.readyz()
                if code == 503 and "redis" in reply.get("reason", ""):
                    ready_503[node.name] = True
                i += 1
                await asyncio.sleep(0.2)
            quiet_from = down_at + 0.9 * LEASE_S + 2.0  # the leader stepped down; followers lost the subscription
            frames_while_down = [f for s in screens for f in s.frames if quiet_from < f.at_s]
            redis_srv.start()
            up_at = time.monotonic()
            await wait_until(lambda: a.readyz()[0] == 200 and b.readyz()[0] == 200, 30, what="readyz after Redis")
            ready_s = time.monotonic() - up_at
            await wait_until(lambda: a.leading() or b.leading(), 10, what="a leader after Redis")
            for s, b0 in zip(screens, base, strict=True):
                await wait_until(lambda s=s, b0=b0: s.count_today == b0 + len(acked), 30, what="all acked events")
            recovered_s = time.monotonic() - up_at
        print(
            f"redis down {REDIS_DOWN_S:.0f} s: {len(statuses)} ingest answers {sorted(set(statuses))}, "
            f"readyz 503 {ready_503}, frames to screens while down {len(frames_while_down)}, "
            f"readyz 200 {ready_s:.2f} s after restart, screens complete {recovered_s:.2f} s after, "
            f"closes {[s.closes for s in screens]}, resubscribes a={a.metric('pulseboard_redis_resubscribes_total')} "
            f"b={b.metric('pulseboard_redis_resubscribes_total')}"
        )
        assert statuses and set(statuses) == {202}
        assert ready_503 == {a.name: True, b.name: True}
        assert frames_while_down == []  # walls go STALE, not "live" over frozen numbers
        assert a.metric("pulseboard_redis_resubscribes_total") >= 1
        assert b.metric("pulseboard_redis_resubscribes_total") >= 1
        for s in screens:
            assert s.gaps() == []
        with psycopg.connect(PG_URL) as conn:
            stored = conn.execute(
                f'SELECT count(*), count(DISTINCT event_id) FROM "{schema}".event WHERE event_id LIKE %s', (tag + "%",)
            ).fetchone()
        assert stored == (len(acked), len(acked))
    finally:
        for s in screens:
            await s.stop()
        for n in (a, b):
            n.stop()
        if redis_srv.proc is not None and redis_srv.proc.poll() is None:
            redis_srv.kill()
        _drop_pg_schema(schema)


@pytest.mark.skipif(private_pg_unusable() is not None and not IN_CI, reason=str(private_pg_unusable()))
async def test_postgres_restart_with_two_processes(workdir: Path) -> None:
    import redis

    try:
        redis.Redis(socket_timeout=2).ping()
    except redis.RedisError:
        if IN_CI:
            pytest.fail("Redis required in CI")
        pytest.skip("no Redis at 127.0.0.1:6379")
    pg = PrivatePostgres()
    pg.init()
    pg.start()
    prefix = unique("pbtest-pgr-")
    env = cluster_env(pg.url, None, "redis://127.0.0.1:6379/0", prefix, workdir)
    a, b = Node(env, workdir, "a"), Node(env, workdir, "b")
    screens: list[Screen] = []
    try:
        a.start().wait_ready()
        b.start().wait_ready()
        leader = await wait_until(lambda: a if a.leading() else (b if b.leading() else None), 10, what="leader")
        screens = [Screen(n).start() for n in (a, b)]
        for s in screens:
            await asyncio.wait_for(s.connected.wait(), 15)
        base = [s.count_today or 0 for s in screens]
        tag = unique("pg-")
        acked: list[str] = []
        statuses: list[int] = []
        async with httpx.AsyncClient() as client:
            for i in range(4):
                body = events(1, f"{tag}pre{i}")
                if await post(client, (a, b)[i % 2].url, body) == 202:
                    acked.append(body[0]["id"])
            pg.stop("immediate")
            down_at = time.monotonic()
            i = 0
            while time.monotonic() - down_at < PG_DOWN_S:
                body = events(1, f"{tag}down{i}")
                status = await post(client, (a, b)[i % 2].url, body)
                statuses.append(status)
                if status == 202:
                    acked.append(body[0]["id"])
                i += 1
                await asyncio.sleep(0.2)
            pg.start()
            up_at = time.monotonic()

            async def ingest_ok() -> bool:
                body = events(1, f"{tag}up{len(acked)}")
                if await post(client, (a, b)[len(acked) % 2].url, body) == 202:
                    acked.append(body[0]["id"])
                    return True
                return False

            await wait_until(ingest_ok, 30, what="ingest after PostgreSQL")
            await wait_until(ingest_ok, 30, what="ingest on the other process")
            resumed_s = time.monotonic() - up_at
            for s, b0 in zip(screens, base, strict=True):
                await wait_until(lambda s=s, b0=b0: s.count_today == b0 + len(acked), 30, what="all acked events")
            complete_s = time.monotonic() - up_at
        print(
            f"postgres down {PG_DOWN_S:.0f} s: ingest answers {sorted(set(statuses))} ({len(statuses)}), "
            f"ingest again {resumed_s:.2f} s after restart, screens complete {complete_s:.2f} s after, "
            f"leader kept: {leader.leading()}, closes {[s.closes for s in screens]}"
        )
        assert set(statuses) <= {202, 503} and 503 in statuses
        assert leader.leading()  # the lease lives in Redis: a database outage does not move it
        for s in screens:
            assert s.gaps() == []
        with psycopg.connect(pg.url) as conn:
            stored = conn.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM event WHERE event_id LIKE %s", (tag + "%",)
            ).fetchone()
        assert stored == (len(acked), len(acked))
        for n in (a, b):
            assert n.proc is not None and n.proc.poll() is None
    finally:
        for s in screens:
            await s.stop()
        for n in (a, b):
            n.stop()
        pg.destroy()
        r = redis.Redis()
        keys = list(r.scan_iter(match=prefix + ":*", count=1000))
        if keys:
            r.delete(*keys)
