"""``python -m bench.profile SCENARIO``: where Pulseboard's time goes under one figure's load.

Starts the server under test, attaches ``py-spy record`` to it for the load,
and prints the hottest functions (inclusive and self share of samples).
Scenarios: ``ingest-sqlite``, ``ingest-pg``, ``single-sqlite``, ``fanout``, and
``tiles`` / ``cut`` (in-process: ``py-spy`` runs this module on itself).
``stages-sqlite`` / ``stages-pg`` time the steps of one group commit instead
(µs per event for parse, dedup, insert, rollup, upserts, commit), calling the
steps of ``app.store.writes.write_group`` one by one in-process.
Needs ``py-spy`` (bench-only dependency).  Not part of ``python -m bench``:
it is the tool behind the "levers" notes of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import data, pg, procs
from bench.context import RunContext
from bench.paths import VENV_PYTHON

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^:]*)(?::\d+)?\)$")


def py_spy() -> str:
    exe = shutil.which("py-spy") or str(VENV_PYTHON.parent / "py-spy")
    if not Path(exe).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return exe


def summarize_raw(path: Path, top: int = 30) -> str:
    """Inclusive and self shares per ``function (file)`` from a py-spy ``raw`` (collapsed) file."""
    inclusive, self_, total = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        names = []
        for frame in stack.split(";"):
            m = FRAME_RE.match(frame)
            names.append(f"{m['func']} ({m['file'].split('site-packages/')[-1]})" if m else frame)
        for name in set(names):
            inclusive[name] += n
        self_[names[-1]] += n
    out = [f"{total} samples", "", "inclusive:"]
    out += [f"  {v / total * 100:5.1f}%  {k}" for k, v in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {v / total * 100:5.1f}%  {k}" for k, v in self_.most_common(top)]
    return "\n".join(out)


def record(pid: int, out: Path, seconds: float) -> subprocess.Popen:
    """Start ``py-spy record`` on ``pid`` for ``seconds`` (idle threads excluded, native frames off)."""
    return subprocess.Popen(
        [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _server_scenario(ctx: RunContext, scenario: str, out: Path) -> None:
    from bench.figures import fanout, ingest_batch, ingest_single

    store = "postgresql" if scenario.endswith("-pg") else "sqlite"
    workdir = ctx.dir(scenario)
    if scenario == "fanout":
        server = fanout._pulseboard(ctx, "profile-fanout", 1)
    else:
        server = procs.pulseboard_server(
            f"profile-{scenario}", procs.free_port(), workdir, ctx.pulseboard_env(workdir / "var", store, "pb_profile")
        )
    with server:
        if scenario == "fanout":
            spies = []
            fanout.fanout_pulseboard(
                server, 0, ctx.screens, 6.0, on_go=lambda: spies.append(record(server.pid, out, 6))
            )
            spy = spies[0]
        elif scenario.startswith("single"):
            spy = record(server.pid, out, 5)
            ingest_single.post_singles(server.port, "prof", 5.0)
        else:
            chunk = data.tagged(data.august_wire()[:32_000], "prof")
            bodies = data.batches(chunk, 1000)
            spy = record(server.pid, out, 8)
            ingest_batch.post_batches(server.port, bodies, [1000] * len(bodies), timeout_s=240)
        spy.wait(60)


def _inproc(scenario: str) -> None:
    """Run the in-process workload (under py-spy, started by ``main``)."""
    from bench.figures import snapshot_cut, tile_refresh

    ctx = RunContext(repeats=3, screens=0, tmp=Path(tempfile.mkdtemp()), pg_url=None, quick=True)
    try:
        if scenario == "tiles":
            tile_refresh.run(ctx)
        else:
            snapshot_cut.run(ctx)
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)


async def _stages(
    store: str, pg_url: str | None, tmp: Path, group_events: int = 1000, total_events: int = 40_000
) -> str:
    """Per-event cost of each step of ``write_group`` over ``total_events`` real events in
    groups of ``group_events`` (mirrors ``write_group`` at the measured revision)."""
    import time

    import msgspec

    from app.config import Settings
    from app.ingest.parse import Limits, parse_events
    from app.metrics.pack import load_packs
    from app.metrics.rollup import EventRow, rollup
    from app.store.db import create_writer_engine, migrate_async
    from app.store.upserts import insert_events, upsert_gauge_changes, upsert_partials
    from app.store.writes import _existing_hashes

    kw = {"data_dir": tmp / "var", "tz": "Asia/Jerusalem", "snapshots_enabled": False, "database_url": None}
    if store == "postgresql":
        kw.update(database_url=pg_url, db_schema="pb_stages")
    settings = Settings(**kw)
    await migrate_async(settings)
    engine = create_writer_engine(settings)
    packs = list(load_packs(settings.packs_dir).values())
    wire = data.tagged(data.august_wire()[:total_events], "stages")
    limits = Limits(int(time.time() * 1e6), 300.0, None, 1024, 20, 10**9)
    cost: dict[str, float] = {}

    def add(step: str, t0: float) -> None:
        cost[step] = cost.get(step, 0.0) + time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = [
        e
        for i in range(0, len(wire), 1000)
        for e in parse_events(msgspec.json.encode(wire[i : i + 1000]), "application/json", limits)
    ]
    add("parse + validate (1,000-event bodies)", t0)

    class _Typed(msgspec.Struct):
        type: str
        ts: str
        id: str | None = None
        source: str = "default"
        value: float | None = None
        dims: dict[str, str | int | float | bool] | None = None

    decoder = msgspec.json.Decoder(list[_Typed])
    bodies = [msgspec.json.encode(wire[i : i + 1000]) for i in range(0, len(wire), 1000)]
    t0 = time.perf_counter()
    for body in bodies:
        decoder.decode(body)
    typed_us = (time.perf_counter() - t0) / len(wire) * 1e6
    partial_rows = gauge_rows = 0
    try:
        for i in range(0, len(rows), group_events):
            group = rows[i : i + group_events]
            t0 = time.perf_counter()
            with engine.begin() as conn:
                _existing_hashes(conn, [(e.source, e.event_id) for e in group])
                add("dedup SELECT", t0)
                t0 = time.perf_counter()
                insert_events(
                    conn, [(e.source, e.event_id, e.type, e.ts_us, e.value, e.dims_json, e.body_hash, 0) for e in group]
                )
                add("event INSERT", t0)
                t0 = time.perf_counter()
                partials, changes = {}, []
                event_rows = [EventRow(e.type, e.ts_us, e.value, e.dims) for e in group]
                for pack in packs:
                    rollup(pack, event_rows, partials, changes)
                add("rollup (Python)", t0)
                partial_rows += len(partials)
                gauge_rows += len(changes)
                t0 = time.perf_counter()
                upsert_partials(conn, partials)
                add("rollup upserts (minute, hour, sketch bins)", t0)
                t0 = time.perf_counter()
                upsert_gauge_changes(conn, changes)
                add("gauge_item upsert", t0)
                t0 = time.perf_counter()
            add("COMMIT", t0)
    finally:
        engine.dispose()
    n = len(rows)
    lines = [
        f"{store}: {n:,} events in groups of {group_events:,}; {partial_rows:,} partial rows, "
        f"{gauge_rows:,} gauge changes",
        "",
    ]
    lines += [f"  {step:40s} {secs / n * 1e6:7.1f} µs/event" for step, secs in cost.items()]
    lines.append(
        f"  {'total':40s} {sum(cost.values()) / n * 1e6:7.1f} µs/event "
        f"(≈ {n / sum(cost.values()):,.0f} events/s on one core)"
    )
    lines.append(f"  reference: msgspec typed decoding of the same bodies alone {typed_us:.2f} µs/event")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument(
        "scenario",
        choices=[
            "ingest-sqlite",
            "ingest-pg",
            "single-sqlite",
            "fanout",
            "tiles",
            "cut",
            "stages-sqlite",
            "stages-pg",
            "_inproc-tiles",
            "_inproc-cut",
        ],
    )
    parser.add_argument("--screens", type=int, default=1000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--raw", type=Path, default=None, help="also keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    if args.scenario.startswith("_inproc-"):
        _inproc(args.scenario.removeprefix("_inproc-"))
        return
    tmp = Path(tempfile.mkdtemp(prefix="pulseboard-profile-"))
    out = tmp / "profile.txt"
    try:
        if args.scenario.startswith("stages-"):
            store = "postgresql" if args.scenario == "stages-pg" else "sqlite"
            pg_url = pg.create_bench_db() if store == "postgresql" else None
            try:
                print(asyncio.run(_stages(store, pg_url, tmp)))
            finally:
                if pg_url:
                    pg.drop_bench_db()
            return
        if args.scenario in ("tiles", "cut"):
            subprocess.run(
                [
                    py_spy(),
                    "record",
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--",
                    str(VENV_PYTHON),
                    "-m",
                    "bench.profile",
                    f"_inproc-{args.scenario}",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            pg_url = pg.create_bench_db() if args.scenario.endswith("-pg") else None
            ctx = RunContext(repeats=1, screens=args.screens, tmp=tmp, pg_url=pg_url)
            try:
                _server_scenario(ctx, args.scenario, out)
            finally:
                if pg_url:
                    pg.drop_bench_db()
        print(summarize_raw(out, args.top))
        if args.raw:
            shutil.copyfile(out, args.raw)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
