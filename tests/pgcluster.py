"""A private, killable PostgreSQL cluster and the ingest machinery of the database outage tests
(tests/test_db_restart.py, tests/test_db_hang.py): the cluster, the records of ingest attempts and
``/readyz`` polls, the generic events with their expected rollups, and direct reads of the store.

The cluster is ``initdb``'d into a temp dir as user ``postgres`` on a free port, its unix socket in
that dir: the shared cluster on 5432 is never touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import httpx

from tests.crash_client import Batch, IngestLog, free_port

PG_BIN = Path(os.environ.get("PULSEBOARD_PG_BIN", "/usr/lib/postgresql/15/bin"))


def private_pg_unusable() -> str | None:
    """Why a private cluster cannot be made here, or ``None``."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {PG_BIN}"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "initdb as user postgres needs root and runuser"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no user postgres"
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: ``initdb`` into a temp dir as user ``postgres`` (trust
    auth), listening on 127.0.0.1:``port`` with its unix socket in the temp dir.

    ``start``/``stop`` block until ``pg_ctl -w`` returns; ``destroy`` stops it and removes the dir.
    """

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pb-dbrestart-", dir="/tmp"))
        user = pwd.getpwnam("postgres")
        os.chown(self.base, user.pw_uid, user.pw_gid)
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.port = free_port()
        assert self.port != 5432
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str, timeout_s: float = 60) -> None:
        cmd = ["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=self.base)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({done.returncode}): {done.stdout}{done.stderr}\n" + self.log_tail()
            )

    def init(self) -> None:
        self._pg(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=80"
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", opts, "start")

    def stop(self, mode: str) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def processes(self) -> list[int]:
        """Pids of the postmaster and all its children (backends, checkpointer, walwriter, ...)."""
        import psutil

        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        return [postmaster] + [c.pid for c in psutil.Process(postmaster).children(recursive=True)]

    def freeze(self) -> list[int]:
        """SIGSTOP the whole cluster: it hangs instead of refusing (the kernel still accepts
        connections into the listen backlog and acknowledges bytes; nobody answers). Returns the pids."""
        pids = self.processes()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:  # a backend that just exited
                pass
        return pids

    def thaw(self) -> None:
        """SIGCONT every process of the cluster."""
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self.thaw()  # a frozen cluster would not stop
                except (OSError, ValueError, ImportError):
                    pass
                self.stop("fast")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Attempt:
    """One ingest attempt as the client saw it (times in seconds since the trial's t0)."""

    batch: int
    sent_s: float
    answered_s: float
    status: int | None  # None: transport error
    retry_after: str | None
    error: str | None
    replayed: bool


@dataclass
class Ready:
    """One ``/readyz`` poll (times in seconds since the trial's t0; ``status`` None: transport error)."""

    sent_s: float
    answered_s: float
    status: int | None
    ready: bool | None
    retry_after: str | None


def make_events(total: int, rng: random.Random, source: str) -> list[dict]:
    """``total`` generic ``sample`` events with unique ids, integer values (exact sums) and a
    ``host`` dimension, stamped over the last 5 minutes (never before today's UTC midnight, so
    they all count in the wall's ``count_today``)."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = max(now - timedelta(minutes=5), datetime.combine(now.date(), dtime(), UTC))
    span_s = int((now - start).total_seconds())
    events = []
    for i in range(total):
        ts = start + timedelta(seconds=rng.randint(0, span_s))
        events.append(
            {
                "type": "sample",
                "source": source,
                "id": f"ev-{i:06d}",
                "ts": ts.isoformat().replace("+00:00", "Z"),
                "value": rng.randint(1, 9),
                "dims": {"host": f"h{i % 3}"},
            }
        )
    return events


def make_batches(events: list[dict], batch_size: int, run_id: str) -> list[Batch]:
    """``events`` in request bodies of ``batch_size``, each with its fixed Idempotency-Key
    ``{run_id}-{n:05d}``."""
    return [
        Batch(
            index=n,
            key=f"{run_id}-{n:05d}",
            body=json.dumps(events[i : i + batch_size], separators=(",", ":")).encode(),
            keys=tuple((e["source"], e["id"]) for e in events[i : i + batch_size]),
            types=(),
        )
        for n, i in enumerate(range(0, len(events), batch_size))
    ]


def expected_partials(events: list[dict]) -> dict[tuple[str, int], tuple[int, float]]:
    """(dim_key, UTC minute µs) -> (count, sum) of ``events`` (the pack rolls up ``host``)."""
    out: dict[tuple[str, int], list] = {}
    for e in events:
        ts_us = int(datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()) * 1_000_000
        bucket = ts_us - ts_us % 60_000_000
        for dim_key in ("", f"host={e['dims']['host']}"):
            slot = out.setdefault((dim_key, bucket), [0, 0.0])
            slot[0] += 1
            slot[1] += e["value"]
    return {k: (c, s) for k, (c, s) in out.items()}


async def poll_ready(url: str, log: IngestLog, out: list[Ready], stop: asyncio.Event) -> None:
    """``GET /readyz`` every 100 ms until ``stop``."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while not stop.is_set():
            sent = log.now()
            try:
                resp = await http.get("/readyz")
                body = resp.json()
                out.append(Ready(sent, log.now(), resp.status_code, body.get("ready"), resp.headers.get("retry-after")))
            except (httpx.TransportError, ValueError):
                out.append(Ready(sent, log.now(), None, None, None))
            await asyncio.sleep(0.1)


def stored_state(
    pg_url: str, source: str, measure: str = "generic/sample"
) -> tuple[Counter, dict[tuple[str, int], tuple[int, float]]]:
    """Raw rows per event id of ``source`` and the rollup partials of ``measure``, read directly."""
    import psycopg

    with psycopg.connect(pg_url, connect_timeout=5) as conn:
        rows = Counter(
            {
                r[0]: r[1]
                for r in conn.execute(
                    "SELECT event_id, count(*) FROM event WHERE source = %s GROUP BY event_id", (source,)
                )
            }
        )
        partials = {
            (r[0], int(r[1])): (int(r[2]), float(r[3]))
            for r in conn.execute(
                "SELECT dim_key, bucket_us, count, sum FROM rollup_minute WHERE measure = %s", (measure,)
            )
        }
    return rows, partials
