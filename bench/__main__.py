"""``python -m bench``: run the suite, print the table, write ``bench/results/latest.{json,md}``.

Usage::

    .venv/bin/python -m bench                 # everything, 3 repeats, 1,000 screens (~6 min on 2 cores)
    .venv/bin/python -m bench --write-benchmarks   # the same, and refresh BENCHMARKS.md's results block
    .venv/bin/python -m bench --only ingest_batch,tile_refresh
    .venv/bin/python -m bench --quick         # smaller volumes: a smoke run of the harness
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import machine, pg, procs
from bench.context import RunContext
from bench.paths import REPO, RESULTS_DIR
from bench.report import Figure, text_table, update_benchmarks, write_results

MODULES = ("ingest_batch", "ingest_single", "fanout", "snapshot_cut", "tile_refresh", "ingest_scale", "scale_out")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="measured repeats per figure (default 3)")
    p.add_argument("--screens", type=int, default=1000, help="WebSocket screens for fan-out/latency/RSS (default 1000)")
    p.add_argument("--only", default="", help=f"comma-separated modules among {', '.join(MODULES)}")
    p.add_argument("--quick", action="store_true", help="small volumes (harness smoke run; not for BENCHMARKS.md)")
    p.add_argument("--no-pg", action="store_true", help="skip PostgreSQL figures")
    p.add_argument("--keep-tmp", action="store_true", help="keep the scratch directory (server logs, SQLite files)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="where latest.json / latest.md go")
    p.add_argument(
        "--write-benchmarks",
        action="store_true",
        help="also replace the generated results block of BENCHMARKS.md with this run",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    modules = [m for m in args.only.split(",") if m] or list(MODULES)
    unknown = set(modules) - set(MODULES)
    if unknown:
        print(f"unknown module(s) {sorted(unknown)}; choose among {MODULES}", file=sys.stderr)
        return 2
    atexit.register(procs.stop_all_servers)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup (finally, atexit) on TERM
    pg_ok = not args.no_pg and pg.available()
    meta = machine.describe(pg.version() if pg_ok else None)
    meta["repeats, screens"] = f"{args.repeats}, {args.screens}" + (" (quick)" if args.quick else "")
    meta["command"] = " ".join([".venv/bin/python -m bench", *(sys.argv[1:] if argv is None else argv)])
    tmp = Path(tempfile.mkdtemp(prefix="pulseboard-bench-"))
    ctx = RunContext(
        repeats=args.repeats,
        screens=args.screens,
        tmp=tmp,
        pg_url=pg.create_bench_db() if pg_ok else None,
        quick=args.quick,
    )
    figures: list[Figure] = []
    try:
        for name in modules:
            t0 = time.monotonic()
            print(f"[{ctx.elapsed_s():6.1f} s] {name} ...", flush=True)
            module = importlib.import_module(f"bench.figures.{name}")
            try:
                got = module.run(ctx)
            except Exception as exc:  # one broken figure must not hide the others
                traceback.print_exc()
                got = [Figure(name, name, "", notes=[f"not measured: the harness failed: {exc!r}"])]
            figures.extend(got)
            print(f"[{ctx.elapsed_s():6.1f} s] {name} done in {time.monotonic() - t0:.1f} s", flush=True)
            for f in got:
                print(
                    "    "
                    + f.title
                    + ": "
                    + (f"{f.product.median:,.4g} {f.unit}" if f.product else "—")
                    + (f", ratio {f.ratio.median:.3g}" if f.ratio else ""),
                    flush=True,
                )
    finally:
        if ctx.pg_url:
            pg.drop_bench_db()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    meta["total_runtime_s"] = f"{ctx.elapsed_s():.0f}"
    print()
    print(text_table(figures))
    js, md = write_results(figures, meta, args.results)
    print(f"\nwrote {js} and {md} (total {ctx.elapsed_s():.0f} s)")
    if args.write_benchmarks:
        update_benchmarks(REPO / "BENCHMARKS.md", figures, meta)
        print(f"updated the results block of {REPO / 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
