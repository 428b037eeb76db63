"""The settings of one suite run, shared by every figure."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunContext:
    """What every figure needs: repeats, scale knobs, a scratch directory, PostgreSQL.

    Attributes:
        repeats: measured repeats per figure (median and spread are over these).
        screens: WebSocket screens for the fan-out, latency and RSS figures.
        tmp: scratch directory of this run (SQLite files, server logs).
        pg_url: URL of the scratch PostgreSQL database, or None when PostgreSQL is absent.
        quick: smaller volumes (a smoke run of the harness, not for BENCHMARKS.md).
    """

    repeats: int
    screens: int
    tmp: Path
    pg_url: str | None
    quick: bool = False
    started_s: float = field(default_factory=time.monotonic)
    cache: dict = field(default_factory=dict)  # artefacts shared by figures (the big store)

    def dir(self, name: str) -> Path:
        """A fresh sub-directory of the scratch directory."""
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pulseboard_env(self, data_dir: Path, store: str, schema: str, **extra: str) -> dict[str, str]:
        """Environment of a ``pulseboard serve`` under test on ``store`` (``sqlite`` | ``postgresql``)."""
        # Keys are off for the load generators (a key check is one SHA-256 and a cached lookup
        # per request, far below the figures' resolution); the product's tests cover access.
        env = {
            "PULSEBOARD_DATA_DIR": str(data_dir),
            "PULSEBOARD_TZ": "Asia/Jerusalem",
            "PULSEBOARD_SNAPSHOTS_ENABLED": "false",
            "DATABASE_URL": "",
            "PULSEBOARD_AUTH_DISABLED": "true",
            "PULSEBOARD_INGEST_RATE_PER_KEY_PER_S": "1000000",
            "PULSEBOARD_INGEST_BURST_PER_KEY": "1000000",
        }
        if store == "postgresql":
            assert self.pg_url is not None
            env.update(DATABASE_URL=self.pg_url, PULSEBOARD_DB_SCHEMA=schema)
        env.update(extra)
        return env

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_s
