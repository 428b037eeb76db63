"""Where things are: the repository, the real call log, the results directory."""

from __future__ import annotations

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PULSEBOARD = REPO / ".venv" / "bin" / "pulseboard"
# the real data sets live in the repository (data/README.md)
AUGUST = REPO / "data" / "anonymous-bank" / "august_1999.tsv.gz"
RESULTS_DIR = BENCH_DIR / "results"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_BENCH_DB = "bench"
PG_BENCH_URL = f"postgresql://postgres@127.0.0.1:5432/{PG_BENCH_DB}"
