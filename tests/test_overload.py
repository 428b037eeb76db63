"""Overload (issue 4, "Proof"; BAD_INPUTS 26): past capacity the server sheds load with
``429`` (per key) or ``503`` (global admission limit), each with ``Retry-After``, and nothing else.

The slow test runs a real ``pulseboard serve`` subprocess on SQLite:

1. **calibration**: ``CLIENTS`` closed-loop clients (one connection and one ingest key each) post
   ``BATCH_EVENTS``-event batches flat out for ``CALIBRATION_S`` against a first server with the
   default limits.  It only sets the per-key rate of step 2.
2. The server is restarted on the same store with the limits under test:
   ``PULSEBOARD_INGEST_QUEUE_MAX_EVENTS`` = ``QUEUE_BATCHES`` batches (the global admission
   limit: ``503 Ingest overloaded``) and ``PULSEBOARD_INGEST_RATE_PER_KEY_PER_S`` = the calibrated
   requests a second (burst the same).  **Capacity**: the same closed-loop load for ``MEASURE_S``;
   events acknowledged (202) a second after a ``WARMUP_S`` warm-up; its peak RSS is the baseline.
3. **overload**: ``OVERLOAD_FACTOR`` × capacity for ``OVERLOAD_S``: ``CLIENTS`` senders with
   their own keys plus ``(OVERLOAD_FACTOR - 1) × CLIENTS`` senders sharing one "flood" key, each
   sending on a fixed schedule (open loop, up to ``MAX_IN_FLIGHT`` requests in flight each) at
   the per-client rate of the capacity run, whatever the answers.  The flood key is offered about
   twice the per-key rate (429s); the total is three times what the writer commits (503s).
4. **recovery**: back to the ``CLIENTS`` closed-loop clients until a 1-s window acknowledges
   ≥ ``RECOVERY_RATIO`` × capacity (at most ``RECOVERY_LIMIT_S``).

Pass criteria: every answer is 202, 429 or 503 (no 5xx else, no reset, no timeout); every 429 and
503 carries a positive ``Retry-After``; server RSS stays under ``RSS_LIMIT_MB`` and does not keep
growing during the overload; every acknowledged event is stored exactly once and nothing of a
refused request is stored (read from the SQLite file); the throughput is back to
≥ ``RECOVERY_RATIO`` × capacity within ``RECOVERY_LIMIT_S`` after the overload ends.
Figures are printed and written to ``test-artifacts/overload.json``.

The fast tests pin BAD_INPUTS 26's global half on both stores (the per-key half is
``tests/test_auth.py::test_over_the_per_key_rate_is_429_with_retry_after``, also both stores).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sqlite3
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ARTIFACTS, PG_URL
from tests.crash_client import ServerProcess, create_key, free_port
from tests.helpers import PACKS_DIR, sample, wait_until
from tests.overload_client import BATCH_EVENTS, SOURCE, Answer, Load, closed_loop, ready, run_open_loop

CLIENTS = 8
QUEUE_BATCHES = 2 * CLIENTS  # global admission limit, in batches: normal load never reaches it
CALIBRATION_S = 3.0
MEASURE_S = 4.0
WARMUP_S = 1.0
OVERLOAD_FACTOR = 3
OVERLOAD_S = 10.0
LOAD_PROCESSES = OVERLOAD_FACTOR  # overload senders run in this many processes (CLIENTS senders each)
RECOVERY_RATIO = 0.7
RECOVERY_LIMIT_S = 30.0
RSS_LIMIT_MB = float(os.environ.get("PULSEBOARD_OVERLOAD_RSS_LIMIT_MB", "400"))
RSS_GROWTH_LIMIT_MB = 32.0  # last third of the overload vs its first third


@dataclass
class Figures:
    """What one run measured (printed, and written to test-artifacts/overload.json)."""

    calibration_events_per_s: float = 0.0
    capacity_events_per_s: float = 0.0
    capacity_requests_per_s: float = 0.0
    queue_max_events: int = 0
    rate_per_key_per_s: float = 0.0
    offered_requests_per_s: float = 0.0
    offered_ratio: float = 0.0
    overload_acked_events_per_s: float = 0.0
    statuses_overload: dict = field(default_factory=dict)
    statuses_overload_own_keys: dict = field(default_factory=dict)
    statuses_overload_flood_key: dict = field(default_factory=dict)
    statuses_all: dict = field(default_factory=dict)
    server_cpu_capacity_cores: float = 0.0
    server_cpu_overload_cores: float = 0.0
    rss_baseline_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_overload_early_mb: float = 0.0
    rss_overload_late_mb: float = 0.0
    recovery_s: float | None = None
    recovered_events_per_s: float = 0.0
    acked_events: int = 0
    stored_rows: int = 0
    lost: int = 0
    duplicated: int = 0
    stored_from_refused: int = 0
    no_answer: list = field(default_factory=list)


class RssSampler:
    """The server process's RSS and CPU time every ``interval_s``, as (monotonic s, MB, CPU s)."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.proc = psutil.Process(pid)
        self.interval_s = interval_s
        self.samples: list[tuple[float, float, float]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                cpu = self.proc.cpu_times()
                self.samples.append((time.monotonic(), self.proc.memory_info().rss / 2**20, cpu.user + cpu.system))
            except psutil.NoSuchProcess:
                return
            await asyncio.sleep(self.interval_s)

    def peak(self, start_s: float = 0.0, end_s: float = float("inf")) -> float:
        return max((mb for t, mb, _ in self.samples if start_s <= t < end_s), default=0.0)

    def cpu_cores(self, start_s: float, end_s: float) -> float:
        """Mean CPU cores the server used between the two instants."""
        inside = [(t, cpu) for t, _, cpu in self.samples if start_s <= t < end_s]
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) if len(inside) > 1 else 0.0

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


def server_env(data_dir: Path, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    env.update({"PULSEBOARD_DATA_DIR": str(data_dir), "PULSEBOARD_SNAPSHOTS_ENABLED": "false", "PYTHONUNBUFFERED": "1"})
    env.update({f"PULSEBOARD_{k.upper()}": str(v) for k, v in settings.items()})
    return env


async def make_ingest_keys(url: str, admin_key: str, names: list[str]) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as http:
        keys = {}
        for name in names:
            resp = await http.post("/api/v1/keys", json={"scope": "ingest", "source": SOURCE, "name": name})
            assert resp.status_code == 201, resp.text
            keys[name] = resp.json()["key"]
    return keys


def stored_batches(db_path: Path) -> tuple[Counter, int]:
    """Rows per batch of source ``SOURCE``, and the number of rows beyond one per (source, id)."""
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        ids = [r[0] for r in conn.execute("SELECT event_id FROM event WHERE source = ?", (SOURCE,))]
        distinct = conn.execute("SELECT count(DISTINCT event_id) FROM event WHERE source = ?", (SOURCE,)).fetchone()[0]
    finally:
        conn.close()
    return Counter(i.rsplit("-", 1)[0] for i in ids), len(ids) - distinct


async def normal_load(load: Load, keys: dict[str, str], phase: str, seconds: float) -> float:
    """``CLIENTS`` closed-loop clients for ``seconds``; events acknowledged a second after ``WARMUP_S``."""
    stop = asyncio.Event()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(closed_loop(load, f"c{i}", keys[f"c{i}"], phase, stop)) for i in range(CLIENTS)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return load.acked_events_between(t0 + WARMUP_S, t0 + seconds) / (seconds - WARMUP_S)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_three_times_capacity_sheds_with_retry_after_and_recovers(tmp_path):
    fig = Figures()
    load = Load(0)
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    base_env = server_env(data_dir)
    admin_key = create_key(base_env, "--scope", "admin")
    names = [f"c{i}" for i in range(CLIENTS)] + ["flood"]

    # 1. calibration, with the default limits: sets the per-key rate of the server under test
    server = ServerProcess(free_port(), base_env, tmp_path / "server.log")
    try:
        server.start()
        await server.wait_ready(60)
        keys = await make_ingest_keys(server.url, admin_key, names)
        load.port = server.port
        calibration = await normal_load(load, keys, "calibration", CALIBRATION_S)
    finally:
        server.stop()
    assert calibration > 0, server.log_tail()
    fig.calibration_events_per_s = calibration

    # 2. the server under test: global admission limit and per-key rate; its capacity
    fig.queue_max_events = QUEUE_BATCHES * BATCH_EVENTS
    fig.rate_per_key_per_s = round(max(calibration / BATCH_EVENTS, 2.0), 1)
    env = server_env(
        data_dir,
        ingest_queue_max_events=fig.queue_max_events,
        ingest_rate_per_key_per_s=fig.rate_per_key_per_s,
        ingest_burst_per_key=fig.rate_per_key_per_s,
    )
    server = ServerProcess(free_port(), env, tmp_path / "server.log")
    rss: RssSampler | None = None
    pool = ProcessPoolExecutor(LOAD_PROCESSES, mp_context=multiprocessing.get_context("spawn"))
    try:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, ready) for _ in range(LOAD_PROCESSES)))
        server.start()
        await server.wait_ready(60)
        rss = RssSampler(server.proc.pid)
        t_cap = time.monotonic()
        load.port = server.port
        fig.capacity_events_per_s = await normal_load(load, keys, "capacity", MEASURE_S)
        fig.server_cpu_capacity_cores = rss.cpu_cores(t_cap + WARMUP_S, t_cap + MEASURE_S)
        fig.capacity_requests_per_s = fig.capacity_events_per_s / BATCH_EVENTS
        fig.rss_baseline_mb = rss.peak()

        # 3. overload: OVERLOAD_FACTOR x capacity for OVERLOAD_S
        per_client_rps = fig.capacity_requests_per_s / CLIENTS
        t_over = time.monotonic() + 0.5
        t_over_end = t_over + OVERLOAD_S
        senders = [(f"c{i}", keys[f"c{i}"]) for i in range(CLIENTS)]
        senders += [(f"f{i}", keys["flood"]) for i in range((OVERLOAD_FACTOR - 1) * CLIENTS)]
        groups = [senders[i::LOAD_PROCESSES] for i in range(LOAD_PROCESSES)]
        loop = asyncio.get_running_loop()
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool, run_open_loop, server.port, g, "overload", per_client_rps, t_over, t_over_end
                    )
                    for g in groups
                )
            ),
            OVERLOAD_S + 60,
        )
        load.answers.extend(Answer(**a) for answers in results for a in answers)
        sent = [a for a in load.answers if a.phase == "overload"]
        fig.offered_requests_per_s = sum(1 for a in sent if a.sent_s < t_over_end) / OVERLOAD_S
        fig.offered_ratio = fig.offered_requests_per_s / fig.capacity_requests_per_s
        fig.overload_acked_events_per_s = load.acked_events_between(t_over, t_over_end) / OVERLOAD_S
        fig.server_cpu_overload_cores = rss.cpu_cores(t_over, t_over_end)
        third = OVERLOAD_S / 3
        fig.rss_overload_early_mb = rss.peak(t_over, t_over + third)
        fig.rss_overload_late_mb = rss.peak(t_over_end - third, t_over_end)

        # 4. recovery: normal load until a 1-s window is back to RECOVERY_RATIO x capacity
        stop = asyncio.Event()
        tasks = [asyncio.create_task(closed_loop(load, n, keys[n], "recovery", stop)) for n in names[:CLIENTS]]
        target = RECOVERY_RATIO * fig.capacity_events_per_s

        def recovered() -> bool:
            now = time.monotonic()
            window = load.acked_events_between(max(now - 1.0, t_over_end), now) / max(1e-9, min(1.0, now - t_over_end))
            if now - t_over_end >= 1.0 and window >= target:
                fig.recovery_s, fig.recovered_events_per_s = round(now - t_over_end, 2), window
                return True
            return False

        await wait_until(recovered, RECOVERY_LIMIT_S - (time.monotonic() - t_over_end), interval_s=0.25, fail=False)
        stop.set()
        await asyncio.gather(*tasks)
        fig.rss_peak_mb = rss.peak()
    finally:
        if rss is not None:
            await rss.stop()
        pool.shutdown(cancel_futures=True)
        server.stop()

    # 5. the store: every acknowledged event once, nothing of a refused request
    stored, fig.duplicated = stored_batches(data_dir / "pulseboard.db")
    acked = {a.batch for a in load.answers if a.status == 202}
    refused = {a.batch for a in load.answers if a.status in (429, 503)}
    fig.acked_events = sum(a.accepted for a in load.answers if a.status == 202)
    fig.stored_rows = sum(stored.values())
    fig.lost = sum(BATCH_EVENTS - stored[b] for b in acked)
    fig.stored_from_refused = sum(stored[b] for b in refused)
    fig.statuses_overload = dict(Counter(a.status for a in load.answers if a.phase == "overload"))
    fig.statuses_overload_own_keys = dict(
        Counter(a.status for a in load.answers if a.phase == "overload" and a.batch.split(".")[1].startswith("c"))
    )
    fig.statuses_overload_flood_key = dict(
        Counter(a.status for a in load.answers if a.phase == "overload" and a.batch.split(".")[1].startswith("f"))
    )
    fig.statuses_all = dict(Counter(a.status for a in load.answers))
    fig.no_answer = [f"{a.phase} {a.batch}: {a.error}" for a in load.answers if a.status is None][:10]

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "overload.json").write_text(json.dumps(asdict(fig), indent=2))
    print(
        f"\n[overload sqlite] capacity {fig.capacity_events_per_s:,.0f} events/s ({fig.capacity_requests_per_s:.1f} req/s "
        f"of {BATCH_EVENTS}; calibration run {fig.calibration_events_per_s:,.0f} events/s); limits: queue {fig.queue_max_events} events, "
        f"{fig.rate_per_key_per_s} req/s per key; offered {fig.offered_requests_per_s:.1f} req/s = {fig.offered_ratio:.2f}x "
        f"for {OVERLOAD_S:g} s, acked {fig.overload_acked_events_per_s:,.0f} events/s; statuses in overload "
        f"{fig.statuses_overload} (own keys {fig.statuses_overload_own_keys}, flood key "
        f"{fig.statuses_overload_flood_key}), all {fig.statuses_all}; server CPU {fig.server_cpu_capacity_cores:.2f} cores at capacity, "
        f"{fig.server_cpu_overload_cores:.2f} in overload; RSS baseline {fig.rss_baseline_mb:.0f} MB, overload early "
        f"{fig.rss_overload_early_mb:.0f} / late {fig.rss_overload_late_mb:.0f} MB, peak {fig.rss_peak_mb:.0f} MB; "
        f"recovery {fig.recovery_s} s ({fig.recovered_events_per_s:,.0f} events/s); acked {fig.acked_events:,} "
        f"stored {fig.stored_rows:,} lost {fig.lost} dup {fig.duplicated} stored-from-refused {fig.stored_from_refused}"
    )

    assert not fig.no_answer, f"requests without an HTTP answer: {fig.no_answer}\n{server.log_tail()}"
    assert set(fig.statuses_all) <= {202, 429, 503}, f"statuses {fig.statuses_all}\n{server.log_tail()}"
    shed = [a for a in load.answers if a.status in (429, 503)]
    assert all(a.retry_after is not None and float(a.retry_after) > 0 for a in shed), Counter(
        (a.status, a.retry_after) for a in shed
    )
    assert fig.offered_ratio >= 2.0, "the load generator did not reach twice the capacity: the test proves nothing"
    assert fig.statuses_overload.get(429, 0) > 0 and fig.statuses_overload.get(503, 0) > 0, (
        f"the overload did not reach both limits: {fig.statuses_overload}"
    )
    assert not any(a.status in (429, 503) for a in load.answers if a.phase in ("calibration", "capacity"))
    assert 429 not in fig.statuses_overload_own_keys, "one key's excess limited another key"
    assert fig.rss_peak_mb < RSS_LIMIT_MB
    assert fig.rss_overload_late_mb <= fig.rss_overload_early_mb + RSS_GROWTH_LIMIT_MB
    assert all(a.accepted == BATCH_EVENTS and a.duplicates == 0 for a in load.answers if a.status == 202)
    assert fig.lost == 0 and fig.duplicated == 0 and fig.stored_from_refused == 0
    assert fig.stored_rows == fig.acked_events
    assert fig.recovery_s is not None and fig.recovery_s <= RECOVERY_LIMIT_S, (
        f"throughput not back to {RECOVERY_RATIO:.0%} of capacity within {RECOVERY_LIMIT_S:g} s"
    )


# BAD_INPUTS 26, global half: past PULSEBOARD_INGEST_QUEUE_MAX_EVENTS, 503 with Retry-After (both stores).


class StoreWriteLock:
    """Holds the store's event table against writers (SQLite ``BEGIN EXCLUSIVE``; PostgreSQL
    ``LOCK TABLE event IN EXCLUSIVE MODE``, reads still allowed), so admitted ingest requests
    wait in the writer's queue for as long as the test wants."""

    def __init__(self, settings, store_kind: str) -> None:
        if store_kind == "sqlite":
            self.conn = sqlite3.connect(
                settings.data_dir / "pulseboard.db", isolation_level=None, timeout=10, check_same_thread=False
            )
            self.conn.execute("BEGIN EXCLUSIVE")
        else:
            import psycopg

            self.conn = psycopg.connect(PG_URL, connect_timeout=5)
            self.conn.execute(f'LOCK TABLE "{settings.db_schema}".event IN EXCLUSIVE MODE')

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


async def test_over_the_global_admission_limit_is_503_with_retry_after(
    make_settings, start_server, client_for, store_kind
):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, ingest_queue_max_events=10))
    bodies = {name: [sample("2024-01-01T00:00:00Z", id=f"{name}{i}") for i in range(6)] for name in ("a", "b")}
    async with client_for(srv) as client:
        lock = await asyncio.to_thread(StoreWriteLock, srv.settings, store_kind)
        try:
            # Whichever of the two reaches the writer's queue second finds 6 of 10 places taken.
            posts = {
                asyncio.create_task(client.post("/api/v1/events", json=body)): name for name, body in bodies.items()
            }
            done, pending = await asyncio.wait(posts, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1 and len(pending) == 1, "both requests are held while the store is locked"
            refused = done.pop()
            answer = refused.result()
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "1"
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["status"] == 503 and answer.json()["title"] == "Ingest overloaded"
        finally:
            await asyncio.to_thread(lock.release)
        admitted = await asyncio.wait_for(pending.pop(), 15)
        assert admitted.status_code == 202 and admitted.json() == {"accepted": 6, "duplicates": 0}
        retried = await client.post("/api/v1/events", json=bodies[posts[refused]])
        assert retried.json() == {"accepted": 6, "duplicates": 0}  # nothing of the refused request was stored
