"""``pulseboard rollups rebuild`` (issue 11 item 2), on both stores, as real processes: the
rollups it leaves equal an independent roll-up of the stored raw events; it is idempotent; a run
killed with ``kill -9`` part-way (3 trials, ingest going on meanwhile) is resumed by the same
command and ends exact; periods before the raw-retention horizon are refused naming it."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from app.clock import ManualClock
from app.config import Settings
from app.metrics.calendar import minute_floor_us
from app.metrics.pack import load_packs
from app.metrics.rollup import EventRow, rollup
from app.store.db import _sync_url
from tests.conftest import keyed_client
from tests.helpers import PACKS_DIR, sample, wait_until

EXE = Path(sys.executable).parent / "pulseboard"
HOURS = 36
START = datetime(2024, 6, 1, tzinfo=UTC)
AFTER = datetime(2024, 7, 1, tzinfo=UTC)


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    for key, value in settings.model_dump(exclude_none=True).items():
        if key == "database_url":
            env["DATABASE_URL"] = value
        elif isinstance(value, (str, int, float, bool)) or hasattr(value, "__fspath__"):
            env[f"PULSEBOARD_{key.upper()}"] = str(value)
    return env


def _events(tag: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        minute = rng.randrange(HOURS * 60)
        ts = datetime.fromtimestamp(START.timestamp() + minute * 60 + rng.randrange(60), UTC)
        out.append(
            sample(
                ts.isoformat().replace("+00:00", "Z"),
                round(rng.uniform(0, 50), 3),
                id=f"{tag}-{i}",
                dims={"host": f"h{i % 3}"},
            )
        )
    return out


class _sql_engine:
    """A plain engine on the test's store, disposed of when its connection closes."""

    def __init__(self, settings: Settings) -> None:
        url = _sync_url(settings)
        args = {"options": f"-c search_path={settings.db_schema}"} if settings.db_schema else {}
        self.engine = create_engine(url, connect_args=args, poolclass=NullPool)

    def connect(self):
        return self.engine.connect()

    def begin(self):
        return self.engine.begin()


def _stored(settings: Settings) -> dict[tuple[str, str, int], tuple[int, float, float | None, float | None]]:
    """The generic pack's minute partials as stored."""
    with _sql_engine(settings).connect() as conn:
        rows = conn.execute(
            text(
                "SELECT measure, dim_key, bucket_us, count, sum, min, max FROM rollup_minute WHERE measure LIKE 'generic/%'"
            )
        ).all()
    return {(m, d, b): (c, round(s, 6), mn, mx) for m, d, b, c, s, mn, mx in rows}


def _stored_hours(settings: Settings) -> dict[tuple[str, str, int], tuple[int, float]]:
    with _sql_engine(settings).connect() as conn:
        rows = conn.execute(
            text("SELECT measure, dim_key, bucket_us, count, sum FROM rollup_hour WHERE measure LIKE 'generic/%'")
        ).all()
    return {(m, d, b): (c, round(s, 6)) for m, d, b, c, s in rows}


def _independent(settings: Settings):
    """The generic pack's minute and hour partials rolled up here from the raw events table."""
    with _sql_engine(settings).connect() as conn:
        rows = conn.execute(text("SELECT type, ts_us, value, dims FROM event")).all()
    pack = load_packs(PACKS_DIR)["generic"]
    events = [EventRow(t, ts, v, msgspec.json.decode(d) if d else None) for t, ts, v, d in rows]
    partials, _ = rollup(pack, events)
    minutes = {k: (p.count, round(p.sum, 6), p.min, p.max) for k, p in partials.items()}
    hours: dict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0, 0.0])
    for (m, d, b), p in partials.items():
        acc = hours[(m, d, b - b % 3_600_000_000)]
        acc[0] += p.count
        acc[1] += p.sum
    assert all(minute_floor_us(b) == b for _, _, b in minutes)
    return minutes, {k: (int(c), round(s, 6)) for k, (c, s) in hours.items()}


def _corrupt(settings: Settings) -> None:
    """Derived state gone wrong: counts and sums off, rows missing, a row that should not exist."""
    with _sql_engine(settings).begin() as conn:
        conn.execute(text("UPDATE rollup_minute SET count = count + 7, sum = sum + 1 WHERE measure = 'generic/sample'"))
        conn.execute(text("UPDATE rollup_hour SET count = count * 2 WHERE measure = 'generic/sample'"))
        conn.execute(text("DELETE FROM rollup_minute WHERE dim_key = 'host=h1'"))
        conn.execute(
            text(
                "INSERT INTO rollup_minute (measure, dim_key, bucket_us, count, sum, min, max) "
                "VALUES ('generic/sample', 'host=zz', :b, 5, 5.0, 1.0, 1.0)"
            ),
            {"b": int(START.timestamp() * 1e6) + 5 * 3_600_000_000 + 30 * 60_000_000},
        )


def _job(settings: Settings) -> tuple[str, int, int] | None:
    with _sql_engine(settings).connect() as conn:
        row = conn.execute(
            text("SELECT status, cursor_us, since_us FROM rebuild_job ORDER BY started_us DESC LIMIT 1")
        ).first()
    return None if row is None else (row[0], int(row[1]), int(row[2]))


def _rebuild_args(*extra: str) -> list[str]:
    return [str(EXE), "rollups", "rebuild", "--pack", "generic", "--quiet", *extra]


async def _post(client, events: list[dict]) -> None:
    for i in range(0, len(events), 500):
        resp = await client.post("/api/v1/events", json=events[i : i + 500])
        assert resp.status_code == 202, resp.text


@pytest.fixture
async def srv(make_settings, start_server):
    return await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(AFTER))


async def test_rebuild_recomputes_from_raw_events_and_is_idempotent(srv) -> None:
    settings = srv.settings
    async with keyed_client(srv, timeout=60) as client:
        await _post(client, _events("a", 1500, seed=1))
    minutes, hours = _independent(settings)
    assert _stored(settings) == minutes  # ingest wrote what the pure roll-up gives
    _corrupt(settings)
    assert _stored(settings) != minutes
    runs = []
    for quiet in (False, True):
        args = _rebuild_args() if quiet else [a for a in _rebuild_args() if a != "--quiet"]
        done = await asyncio.to_thread(
            subprocess.run, args, env=_env(settings), capture_output=True, text=True, timeout=300
        )
        if not quiet:
            assert "rebuild: 100%" in done.stderr and "36/36" in done.stderr, done.stderr  # the progress bar
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout)
        assert _stored(settings) == minutes
        assert _stored_hours(settings) == hours
    assert "rebuilt 2 measure(s) over 2024-06-01T00:00:00+00:00 .. 2024-06-02T12:00:00+00:00" in runs[0]
    assert "events read: 1500" in runs[0] and "events read: 1500" in runs[1]
    assert "chunks: 36" in runs[0]


async def test_kill_9_during_rebuild_then_rerun_resumes_and_ends_exact(srv) -> None:
    settings = srv.settings
    async with keyed_client(srv, timeout=60) as client:
        await _post(client, _events("base", 1200, seed=2))
        for trial in range(3):
            _corrupt(settings)
            proc = await asyncio.to_thread(
                subprocess.Popen,
                _rebuild_args("--pause-s", "0.15"),
                env=_env(settings),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                # ingest goes on during the rebuild, into the hours being rebuilt
                await _post(client, _events(f"during-{trial}", 300, seed=10 + trial))
                stop_after = random.Random(trial).randrange(2, 20)

                async def progressed(stop_after: int = stop_after) -> bool:
                    job = _job(settings)
                    return job is not None and job[0] == "running" and job[1] - job[2] >= stop_after * 3_600_000_000

                await wait_until(progressed, 60, what=f"trial {trial}: {stop_after} chunks committed")
            finally:
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == -signal.SIGKILL
            status, cursor_us, since_us = _job(settings) or ("", 0, 0)
            assert status == "running" and since_us < cursor_us < since_us + HOURS * 3_600_000_000
            await _post(client, _events(f"after-{trial}", 100, seed=20 + trial))
            done = await asyncio.to_thread(
                subprocess.run, _rebuild_args(), env=_env(settings), capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stderr
            resumed_at = datetime.fromtimestamp(cursor_us / 1e6, UTC).isoformat()
            assert f"at {resumed_at}" in done.stdout and "resumed interrupted job" in done.stdout, done.stdout
            minutes, hours = _independent(settings)
            assert sum(c for c, *_ in minutes.values()) > 0
            assert _stored(settings) == minutes, f"trial {trial}"
            assert _stored_hours(settings) == hours, f"trial {trial}"


async def test_rebuild_before_the_retention_horizon_is_refused_naming_it(srv) -> None:
    async with keyed_client(srv, timeout=60) as client:
        await _post(client, _events("r", 50, seed=3))
    settings = srv.settings.model_copy(update={"raw_retention_days": 30.0})
    refused = await asyncio.to_thread(
        subprocess.run,
        _rebuild_args("--since", "2024-06-01T00:00:00Z"),
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "raw events are retained from " in refused.stderr
    assert "PULSEBOARD_RAW_RETENTION_DAYS=30" in refused.stderr and "2024-06-01T00:00:00+00:00" in refused.stderr
    unknown = await asyncio.to_thread(
        subprocess.run, _rebuild_args("--measure", "nope"), env=_env(srv.settings), capture_output=True, text=True
    )
    assert unknown.returncode != 0 and "unknown measure 'nope' in pack 'generic'" in unknown.stderr


async def test_rebuild_recomputes_paired_gauges_whole(srv) -> None:
    """Calls in queue (contact-centre gauge ``queue``): items folded from opens and closes of any
    time are recomputed from the raw events, all of them, in one transaction."""
    settings = srv.settings
    rng = random.Random(7)
    events = []
    for i in range(300):
        t0 = START.timestamp() + rng.randrange(HOURS * 3600)
        call = {"call": f"c{i}", "queue": rng.choice(["PS", "TT"]), "priority": "1"}
        ts = lambda s: datetime.fromtimestamp(s, UTC).isoformat().replace("+00:00", "Z")  # noqa: E731
        events.append({"type": "call.queued", "ts": ts(t0), "dims": call, "id": f"q{i}"})
        if i % 4:  # a quarter stay in queue
            kind = "call.answered" if i % 3 else "call.abandoned"
            events.append({"type": kind, "ts": ts(t0 + rng.randrange(1, 600)), "value": 5, "dims": call, "id": f"x{i}"})
    async with keyed_client(srv, timeout=60) as client:
        await _post(client, events)

    def items() -> dict[tuple[str, str, str], tuple[int | None, int | None]]:
        with _sql_engine(settings).connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT gauge, dim_key, item_key, opened_us, closed_us FROM gauge_item WHERE gauge = 'contact-centre/queue'"
                )
            ).all()
        return {(g, d, i): (o, c) for g, d, i, o, c in rows}

    with _sql_engine(settings).connect() as conn:
        rows = conn.execute(text("SELECT type, ts_us, value, dims FROM event")).all()
    pack = load_packs(PACKS_DIR)["contact-centre"]
    _, changes = rollup(pack, [EventRow(t, ts, v, msgspec.json.decode(d) if d else None) for t, ts, v, d in rows])
    want: dict[tuple[str, str, str], list[int | None]] = {}
    for ch in changes:
        slot = want.setdefault((ch.gauge_key, ch.dim_key, ch.item_key), [None, None])
        k = 0 if ch.kind == "open" else 1
        slot[k] = ch.ts_us if slot[k] is None else min(slot[k], ch.ts_us)
    expected = {k: (o, c) for k, (o, c) in want.items()}
    assert items() == expected and len(expected) == 300 * 3
    with _sql_engine(settings).begin() as conn:
        conn.execute(text("DELETE FROM gauge_item WHERE dim_key = 'queue=PS'"))
        conn.execute(text("UPDATE gauge_item SET closed_us = NULL WHERE dim_key = ''"))
    assert items() != expected
    done = await asyncio.to_thread(
        subprocess.run,
        [str(EXE), "rollups", "rebuild", "--pack", "contact-centre", "--quiet"],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "and 1 gauge(s) (900 items)" in done.stdout, done.stdout
    assert items() == expected
