"""``python -m bench.noc_replay``: the replay rate of the NOC data sets through the write path.

What is timed: the events of a whole NOC data set (``pcic``: the 69,676 events of the PCIC 2021
alarms, ``github``: the GitHub status incidents), encoded as the replay client posts them
(1,000-event JSON batches), each batch parsed and validated (``app.ingest.parse.parse_events``)
and stored by ``app.store.writes.write_group`` in its own transaction (raw events, rollups and
the alarm lifecycle fold of ``app.store.lifecycles``), in-process (no HTTP), into a fresh store:
SQLite in a scratch directory, or PostgreSQL in a scratch schema of the ``test`` database
(dropped at the end).  The figure is events per second of the whole replay.

``--compare REV`` measures the same replay with the product code of git revision ``REV``
(``git archive REV app migrations hatch_build.py pyproject.toml`` into a scratch directory, run in a subprocess whose
``PYTHONPATH`` puts it first) and with the working tree, alternating the two ``--repeats`` times
in one run on one machine, and prints each rate and the ratio working tree / ``REV`` per repeat:
the ratio is the figure that survives a shared, noisy machine.

Examples::

    .venv/bin/python -m bench.noc_replay --store sqlite --data pcic
    .venv/bin/python -m bench.noc_replay --store postgresql --data pcic --compare f794266 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("PULSEBOARD_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = 1000
SOURCES = {"pcic": "pcic2021", "github": "github-status"}


def _events(dataset: str) -> list[dict[str, Any]]:
    """The replay's events of ``dataset``, as the replay client posts them (``ts`` as ISO text)."""
    noc = ROOT / "data" / "noc-alarms"
    if dataset == "pcic":
        from app.replay.pcic import map_file

        events, _ = map_file(noc / "pcic2021-wireless-alarms.csv.gz", datetime(2021, 1, 1, tzinfo=UTC))
    else:
        from app.replay.github_status import map_paths

        events, _ = map_paths([noc])
    return [{**ev, "ts": ev["ts"].isoformat()} if isinstance(ev["ts"], datetime) else ev for ev in events]


def measure(store: str, dataset: str) -> dict[str, Any]:
    """Replay ``dataset`` into a fresh ``store`` through the write path; ``{"events", "seconds",
    "events_per_s"}``."""
    import msgspec

    from app.config import Settings
    from app.ingest.parse import Limits, parse_events
    from app.metrics.pack import load_packs
    from app.store.db import create_writer_engine, migrate
    from app.store.writes import write_group

    events = _events(dataset)
    bodies = [msgspec.json.encode(events[i : i + BATCH]) for i in range(0, len(events), BATCH)]
    schema = f"pb_bench_noc_{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="pb-bench-noc-") as tmp:
        kw: dict[str, Any] = {"data_dir": Path(tmp), "tz": "Europe/Paris", "snapshots_enabled": False}
        if store == "postgresql":
            kw.update(database_url=PG_URL, db_schema=schema)
        else:
            kw["database_url"] = None
        settings = Settings(**kw)
        migrate(settings)
        engine = create_writer_engine(settings)
        packs = list(load_packs(settings.packs_dir).values())
        limits = Limits(int(time.time() * 1e6), 300.0, None, 1024, 20, 10**9, SOURCES[dataset])
        try:
            with engine.connect() as conn:  # open the pool outside the timing
                conn.exec_driver_sql("SELECT 1")
            t0 = time.perf_counter()
            for body in bodies:
                batch = parse_events(body, "application/json", limits)
                with engine.begin() as conn:
                    write_group(conn, [batch], packs, int(time.time() * 1e6))
            seconds = time.perf_counter() - t0
            fingerprint = _fingerprint(engine)
        finally:
            if store == "postgresql":
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            engine.dispose()
    return {
        "events": len(events),
        "seconds": seconds,
        "events_per_s": len(events) / seconds,
        "fingerprint": fingerprint,
    }


FINGERPRINTED = (
    "rollup_minute",
    "rollup_hour",
    "rollup_sketch_bin",
    "rollup_hour_sketch_bin",
    "gauge_item",
    "alarm_state",
)


def _fingerprint(engine: Any) -> str:
    """SHA-256 of every row the write path derived (rollups, sketch bins, gauge items, alarm
    states; floats by ``repr``: exact), sorted: equal fingerprints = identical stored numbers."""
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for table in FINGERPRINTED:
            rows = sorted(tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table}").all())
            digest.update(f"{table}:{len(rows)}\n".encode())
            for row in rows:
                digest.update(repr(row).encode())
    return digest.hexdigest()[:16]


def _export(rev: str, into: Path) -> Path:
    """The product code (``app``, ``migrations``) of git revision ``rev`` under ``into``."""
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "archive",
            "--format=tar",
            rev,
            "app",
            "migrations",
            "hatch_build.py",
            "pyproject.toml",
        ],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _run_with(code_root: Path | None, store: str, dataset: str) -> dict[str, Any]:
    """``measure`` in a subprocess, with the product code at ``code_root`` (``None``: this tree)."""
    env = dict(os.environ)
    paths = [str(code_root)] if code_root is not None else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-m", "bench.noc_replay", "--store", store, "--data", dataset, "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(code_root or ROOT),
    )
    if done.returncode != 0:
        raise SystemExit(f"the replay with the code at {code_root or ROOT} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """The command (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.noc_replay", description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--data", choices=tuple(SOURCES), default="pcic")
    parser.add_argument("--compare", metavar="REV", help="also measure git revision REV, alternating, same run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by --compare)")
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(measure(args.store, args.data)))
        return
    with tempfile.TemporaryDirectory(prefix="pb-bench-rev-") as tmp:
        old_root = _export(args.compare, Path(tmp)) if args.compare else None
        ratios: list[float] = []
        for r in range(args.repeats):
            new = _run_with(None, args.store, args.data)
            line = (
                f"[{r + 1}/{args.repeats}] {args.store} {args.data}: {new['events']:,} events, this tree "
                f"{new['events_per_s']:,.0f} events/s ({new['seconds']:.1f} s) [{new['fingerprint']}]"
            )
            if old_root is not None:
                old = _run_with(old_root, args.store, args.data)
                ratios.append(new["events_per_s"] / old["events_per_s"])
                line += (
                    f"; {args.compare} {old['events_per_s']:,.0f} events/s ({old['seconds']:.1f} s) "
                    f"[{old['fingerprint']}]; ratio {ratios[-1]:.2f}x"
                )
            print(line, flush=True)
        if ratios:
            print(
                f"median ratio this tree / {args.compare}: {statistics.median(ratios):.2f}x "
                f"over {len(ratios)} repeat(s)"
            )


if __name__ == "__main__":
    main()
