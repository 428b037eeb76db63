"""Crash test (issue 4, "Proof"): kill -9 the server at a random moment of a 50,000-event
ingest by 8 concurrent clients that retry indeterminate batches with the same
``Idempotency-Key``; restart it on the same store.  Pass criteria, per trial:

* 0 acknowledged events lost, 0 stored twice (raw rows == distinct (source, id)),
  every batch finally acknowledged, so the store holds exactly the 50,000 posted events;
* the rollups equal a recomputation from raw events (the product's reconciliation,
  ``rollups_vs_raw``, for every local day covered) and the daily ``answered`` /
  ``abandoned`` / ``offered`` series equal counts from the posted events
  (Asia/Jerusalem days): nothing counted twice in any rollup;
* ``/readyz`` answers within 10 s of the restart.

The kill comes once a seeded random share (5-90 %) of the events is acknowledged, plus a random
0-150 ms.  Trials with an even seed kill right then ("random"); trials with an odd seed then
watch the store and kill at the first moment it holds more events than were acknowledged
("commit-window": a commit whose answers are not delivered), so the retries of those batches
must be answered from the Idempotency-Key store.

The server is a real ``python -m app.cli serve`` subprocess.  Each trial has a fresh store
(SQLite data dir, or its own PostgreSQL schema, dropped afterwards) and a seed that
decides the kill moment: reproduce one with ``PULSEBOARD_CRASH_SEED=<seed>
PULSEBOARD_CRASH_TRIALS=1``.  ``PULSEBOARD_CRASH_TRIALS`` (default 5 per store) sets the
number of trials; RELIABILITY.md records the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import ARTIFACTS, PG_URL, _drop_pg_schema
from tests.crash_client import (
    AUGUST,
    TZ,
    IngestLog,
    ServerProcess,
    create_key,
    free_port,
    kill_in_commit_window,
    make_batches,
    run_client,
    stored_keys,
)

TRIALS = int(os.environ.get("PULSEBOARD_CRASH_TRIALS", "5"))
BASE_SEED = int(os.environ.get("PULSEBOARD_CRASH_SEED") or secrets.randbelow(1_000_000))
EVENTS = 50_000
BATCH_EVENTS = 250
CLIENTS = 8
READY_LIMIT_S = 10.0
KILL_WINDOW = (0.05, 0.90)  # the kill comes once this share of the events is acknowledged ...
KILL_JITTER_S = (0.0, 0.15)  # ... plus a random delay, so it lands anywhere in a commit cycle
# Odd seeds aim the kill between a commit and its answers: the first time the store holds more
# events than were acknowledged after that moment (given up 2 rounds of batches before the end).
ZONE = ZoneInfo(TZ)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AUGUST.exists(), reason=f"no {AUGUST}"),
    pytest.mark.timeout(120 + 90 * TRIALS),
]


@dataclass
class TrialFigures:
    store: str
    trial: int
    seed: int
    kill_mode: str = ""  # "random" (odd seeds: "commit-window")
    kill_after_events: int = 0  # the drawn threshold
    kill_jitter_s: float = 0.0
    acked_at_kill: int = 0  # events acknowledged (202) when SIGKILL was sent
    batches_in_flight_at_kill: int = 0
    committed_unanswered_at_kill: int | None = None  # commit-window mode: events committed, not yet acknowledged
    kill_at_s: float = 0.0  # since the ingest started
    first_ready_s: float = 0.0
    restart_to_ready_s: float = 0.0  # restarted process spawned -> /readyz 200
    kill_to_ready_s: float = 0.0  # SIGKILL -> /readyz 200 (includes reaping the dead process)
    ingest_s: float = 0.0
    acked_events: int = 0
    stored_rows: int = 0
    stored_distinct: int = 0
    lost: int = 0  # acknowledged, not stored
    duplicated: int = 0  # rows beyond one per (source, id)
    missing: int = 0  # posted, not stored (every batch is finally acknowledged, so == lost)
    extra: int = 0  # stored, never posted
    accepted_sum: int = 0  # sum of "accepted" over the final answers
    duplicates_sum: int = 0  # sum of "duplicates": > 0 means a retry re-sent a committed batch without its key
    replayed_answers: int = 0  # answers served from the Idempotency-Key store (committed, answer lost)
    idempotency_keys: int = 0
    indeterminate: dict = field(default_factory=dict)
    days_reconciled: int = 0
    reconciliation_failures: list = field(default_factory=list)
    series_mismatches: list = field(default_factory=list)

    def line(self) -> str:
        window = (
            ""
            if self.committed_unanswered_at_kill is None
            else f", {self.committed_unanswered_at_kill:,} events committed but unanswered"
        )
        return (
            f"[crash {self.store} #{self.trial}] seed={self.seed} {self.kill_mode} kill after "
            f"{self.acked_at_kill:,}/{EVENTS:,} acked events (threshold {self.kill_after_events:,} + "
            f"{self.kill_jitter_s * 1000:.0f} ms, {self.batches_in_flight_at_kill} batches in flight{window}) "
            f"at {self.kill_at_s:.2f} s; "
            f"restart->ready {self.restart_to_ready_s:.2f} s (kill->ready {self.kill_to_ready_s:.2f} s); "
            f"ingest {self.ingest_s:.1f} s; stored {self.stored_rows:,} rows / {self.stored_distinct:,} distinct; "
            f"lost {self.lost} dup {self.duplicated} missing {self.missing} extra {self.extra}; "
            f"replayed {self.replayed_answers}; retries {dict(self.indeterminate)}; "
            f"days reconciled {self.days_reconciled}"
        )


@pytest.fixture(scope="module")
def batches():
    return make_batches(EVENTS, BATCH_EVENTS, "aug99")


def expected_counts(batches) -> dict[str, Counter]:
    """Per local day: answered, abandoned and offered, from the posted events."""
    answered, abandoned = Counter(), Counter()
    for b in batches:
        for kind, day in b.types:
            if kind == "call.answered":
                answered[day] += 1
            elif kind == "call.abandoned":
                abandoned[day] += 1
    return {"answered": answered, "abandoned": abandoned, "offered": answered + abandoned}


def server_env(data_dir: Path, schema: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    env.update(
        {
            "PULSEBOARD_DATA_DIR": str(data_dir),
            "PULSEBOARD_TZ": TZ,
            "PULSEBOARD_SNAPSHOTS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if schema is not None:
        env.update({"DATABASE_URL": PG_URL, "PULSEBOARD_DB_SCHEMA": schema})
    return env


async def run_trial(store: str, trial: int, seed: int, batches, workdir: Path) -> TrialFigures:
    fig = TrialFigures(store, trial, seed)
    rng = random.Random(seed)
    fig.kill_after_events = rng.randint(int(KILL_WINDOW[0] * EVENTS), int(KILL_WINDOW[1] * EVENTS))
    fig.kill_jitter_s = rng.uniform(*KILL_JITTER_S)
    fig.kill_mode = "commit-window" if seed % 2 else "random"
    data_dir = workdir / "var"
    data_dir.mkdir(parents=True)
    schema = f"pb_crash_{secrets.token_hex(6)}" if store == "postgresql" else None
    env = server_env(data_dir, schema)
    server = ServerProcess(free_port(), env, workdir / "server.log")
    tasks: list[asyncio.Task] = []
    try:
        ingest_key = create_key(env, "--scope", "ingest", "--source", "anonymous-bank")
        read_key = create_key(env, "--scope", "read")
        server.start()
        fig.first_ready_s = await server.wait_ready(60)

        log = IngestLog()
        deadline = time.monotonic() + 240
        tasks = [
            asyncio.create_task(run_client(c, server.url, batches[c::CLIENTS], log, deadline, api_key=ingest_key))
            for c in range(CLIENTS)
        ]
        while log.acked_events < fig.kill_after_events:
            if any(t.done() for t in tasks):
                break
            log.progress.clear()
            try:
                await asyncio.wait_for(log.progress.wait(), 1)
            except TimeoutError:
                pass
        for t in tasks:  # a client that failed before the kill: report its error
            if t.done() and t.exception() is not None:
                raise t.exception()
        await asyncio.sleep(fig.kill_jitter_s)
        if fig.kill_mode == "random":
            fig.kill_at_s, fig.acked_at_kill = log.now(), log.acked_events
            fig.batches_in_flight_at_kill = len(log.in_flight)
            server.kill9()
        else:  # aim at the moment between a commit and its answers (the Idempotency-Key replay path)
            caught, stored_at_kill, fig.acked_at_kill = await asyncio.to_thread(
                kill_in_commit_window,
                store,
                data_dir,
                PG_URL,
                schema,
                lambda: log.acked_events,
                server.proc.pid,
                5.0,
                EVENTS - 2 * CLIENTS * BATCH_EVENTS,
            )
            fig.kill_at_s, fig.batches_in_flight_at_kill = log.now(), len(log.in_flight)
            fig.committed_unanswered_at_kill = stored_at_kill - fig.acked_at_kill
            if not caught:
                fig.kill_mode = "commit-window (not caught)"
        await server.reap()
        server.start()
        fig.restart_to_ready_s = await server.wait_ready(60)
        fig.kill_to_ready_s = log.now() - fig.kill_at_s
        await asyncio.gather(*tasks)
        fig.ingest_s = log.now()
        fig.indeterminate = dict(log.indeterminate)

        assert fig.acked_at_kill < EVENTS, "the kill came after the ingest had finished; not a crash test"
        assert not log.refused, f"definite refusals (a retry must never be refused): {log.refused[:5]}"
        assert len(log.answers) == len(batches)

        # Raw events, read from the store itself.
        rows, fig.idempotency_keys = stored_keys(store, data_dir, PG_URL, schema)
        stored = Counter(rows)
        posted = {k for b in batches for k in b.keys}
        acked = {k for b in batches if log.answers[b.index].status == 202 for k in b.keys}
        fig.acked_events = len(acked)
        fig.stored_rows, fig.stored_distinct = len(rows), len(stored)
        fig.duplicated = fig.stored_rows - fig.stored_distinct
        fig.lost = len(acked - stored.keys())
        fig.missing = len(posted - stored.keys())
        fig.extra = len(stored.keys() - posted)
        fig.accepted_sum = sum(a.body["accepted"] for a in log.answers.values())
        fig.duplicates_sum = sum(a.body["duplicates"] for a in log.answers.values())
        fig.replayed_answers = sum(a.replayed for a in log.answers.values())

        # Rollups: the product's reconciliation for each day, and the daily series.
        days = sorted({day for b in batches for _, day in b.types})
        expected = expected_counts(batches)
        start = datetime.combine(days[0], datetime.min.time(), ZONE)
        end = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), ZONE)
        async with httpx.AsyncClient(
            base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {read_key}"}
        ) as http:
            for day in days:
                resp = await http.get(f"/api/v1/reconciliation/contact-centre/day/{day.isoformat()}")
                assert resp.status_code == 200, resp.text
                check = next(c for c in resp.json()["checks"] if c["name"] == "rollups_vs_raw")
                if check["ok"]:
                    fig.days_reconciled += 1
                else:
                    fig.reconciliation_failures.append(
                        {"day": day.isoformat(), "check": check, "mismatches": resp.json()["mismatches"]}
                    )
            for kpi, per_day in expected.items():
                resp = await http.get(
                    f"/api/v1/kpis/{kpi}/series",
                    params={"grain": "day", "start": start.isoformat(), "end": end.isoformat()},
                )
                assert resp.status_code == 200, resp.text
                got = {date.fromisoformat(p["start"][:10]): p["value"] or 0 for p in resp.json()["points"]}
                for day in days:
                    if got.get(day, 0) != per_day[day]:
                        fig.series_mismatches.append(
                            {"kpi": kpi, "day": day.isoformat(), "expected": per_day[day], "found": got.get(day)}
                        )
        return fig
    except BaseException:
        print(
            f"\n{fig.line()}\n[crash {store} #{trial}] seed={seed} FAILED; server log (202 lines left out):\n"
            f"{server.log_tail(40, skip='202 Accepted')}"
        )
        raise
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.stop()
        if schema is not None:
            _drop_pg_schema(schema)


def summary(store: str, figures: list[TrialFigures]) -> dict:
    ready = [f.restart_to_ready_s for f in figures]
    return {
        "store": store,
        "trials": len(figures),
        "base_seed": BASE_SEED,
        "events_per_trial": EVENTS,
        "clients": CLIENTS,
        "batch_events": BATCH_EVENTS,
        "lost": sum(f.lost for f in figures),
        "duplicated": sum(f.duplicated for f in figures),
        "rollup_mismatches": sum(len(f.reconciliation_failures) + len(f.series_mismatches) for f in figures),
        "restart_to_ready_s_max": max(ready),
        "restart_to_ready_s_median": statistics.median(ready),
        "kill_to_ready_s_max": max(f.kill_to_ready_s for f in figures),
        "acked_at_kill_min": min(f.acked_at_kill for f in figures),
        "acked_at_kill_max": max(f.acked_at_kill for f in figures),
        "replayed_answers": sum(f.replayed_answers for f in figures),
        "commit_window_kills": sum(f.kill_mode == "commit-window" for f in figures),
        "ingest_s_median": statistics.median(f.ingest_s for f in figures),
    }


async def test_kill9_during_ingest_loses_nothing_and_counts_nothing_twice(store_kind, batches, tmp_path):
    figures: list[TrialFigures] = []
    started = time.monotonic()
    for trial in range(TRIALS):
        seed = BASE_SEED + trial
        fig = await run_trial(store_kind, trial, seed, batches, tmp_path / f"trial-{trial}")
        print("\n" + fig.line())
        figures.append(fig)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"crash-{store_kind}.json").write_text(
            json.dumps(
                {
                    "summary": summary(store_kind, figures),
                    "wall_s": round(time.monotonic() - started, 1),
                    "trials": [asdict(f) for f in figures],
                },
                indent=1,
                default=str,
            )
        )
        repro = f"reproduce: PULSEBOARD_CRASH_SEED={seed} PULSEBOARD_CRASH_TRIALS=1 (store {store_kind})"
        assert fig.lost == 0, f"{fig.lost} acknowledged events lost; {repro}"
        assert fig.duplicated == 0, f"{fig.duplicated} events stored twice; {repro}"
        assert fig.missing == fig.extra == 0, (
            f"store != posted events: {fig.missing} missing, {fig.extra} extra; {repro}"
        )
        assert fig.stored_rows == EVENTS
        assert fig.accepted_sum == EVENTS and fig.duplicates_sum == 0, (
            f"answers: accepted {fig.accepted_sum}, duplicates {fig.duplicates_sum}; {repro}"
        )
        assert fig.idempotency_keys == len(batches)
        assert not fig.reconciliation_failures, f"rollups != raw events: {fig.reconciliation_failures[:3]}; {repro}"
        assert not fig.series_mismatches, f"series != posted events: {fig.series_mismatches[:5]}; {repro}"
        assert fig.restart_to_ready_s <= READY_LIMIT_S, f"ready after {fig.restart_to_ready_s:.2f} s; {repro}"
    s = summary(store_kind, figures)
    print(
        f"\n[crash {store_kind}] {s['trials']} trials, base seed {BASE_SEED}: lost {s['lost']}, "
        f"duplicated {s['duplicated']}, rollup mismatches {s['rollup_mismatches']}, restart->ready "
        f"max {s['restart_to_ready_s_max']:.2f} s median {s['restart_to_ready_s_median']:.2f} s, "
        f"replayed answers {s['replayed_answers']}, {time.monotonic() - started:.0f} s"
    )
